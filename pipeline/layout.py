"""Token layouts: how a variant spells an item as tokens (method.md section 4).

Every variant is the same recipe with different settings: the items' codes of one or two
modalities, in order, optionally a modality-transition token between them, and a dedup token
when some items share the whole tuple. Each position owns its own token range, so code 5 at
text level 1 and code 5 at image level 2 are different tokens.

Token ids: 0 = pad (also T5's decoder start), 1 = reserved (eos), then the user buckets,
then the positions' ranges in item order. The layout is saved as `layout.json` next to the
sequences so training, decoding and inspection read one description.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from pipeline.errors import PipelineError
from pipeline.semantic_ids import code_levels, read_ids

PAD, EOS, FIRST_FREE = 0, 1, 2


@dataclass(frozen=True)
class Position:
    name: str      # e.g. text_1, image_3, to_image, dedup
    offset: int    # first token id of this position
    size: int      # number of token ids


@dataclass(frozen=True)
class Layout:
    modalities: list[str]
    positions: list[Position]
    user_offset: int
    user_buckets: int
    history: int
    vocab_size: int
    spans: dict[str, list[int]] = field(default_factory=dict)  # modality -> [start, stop) positions

    @property
    def item_len(self) -> int:
        return len(self.positions)

    @property
    def first_item_token(self) -> int:
        """Every token from here on is an item token (user tokens come before them)."""
        return self.positions[0].offset

    def save(self, path: str | os.PathLike) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Layout":
        raw = json.loads(Path(path).read_text())
        raw["positions"] = [Position(**p) for p in raw["positions"]]
        return cls(**raw)


def item_codes(ids_dir: Path, modalities: list[str]) -> tuple[pl.DataFrame, dict[str, int]]:
    """Items with the level codes of every modality (item_idx, item_id, <m>_1.., in item order).

    Only items that have an ID in every modality can be recommended; the stage reports the rest.
    """
    frame, levels = None, {}
    for m in modalities:
        ids = read_ids(ids_dir / f"{m}.parquet")
        codes = code_levels(ids)
        levels[m] = len(codes)
        ids = ids.select("item_idx", "item_id", *[pl.col(c).alias(f"{m}_{c[5:]}") for c in codes])
        frame = ids if frame is None else frame.join(ids.drop("item_id"), on="item_idx", how="inner")
    return frame.sort("item_idx"), levels


def build_layout(items: pl.DataFrame, modalities: list[str], levels: dict[str, int], transition: bool,
                 user_buckets: int, history: int) -> tuple[Layout, np.ndarray]:
    """The layout and every item's token tuple, (n_items, item_len) int32, in `items` order."""
    columns, names = [], []
    spans: dict[str, list[int]] = {}
    for i, m in enumerate(modalities):
        if i and transition:
            columns.append(np.zeros(items.height, dtype=np.int64))
            names.append(f"to_{m}")
        start = len(names)
        for level in range(1, levels[m] + 1):
            columns.append(items[f"{m}_{level}"].to_numpy().astype(np.int64))
            names.append(f"{m}_{level}")
        spans[m] = [start, len(names)]
    dedup = _dedup(np.stack(columns, axis=1))
    if dedup.max(initial=0) > 0:  # only when some items share the whole tuple
        columns.append(dedup)
        names.append("dedup")
    offset = FIRST_FREE + user_buckets
    positions, tokens = [], []
    for name, col in zip(names, columns):
        if col.min(initial=0) < 0:
            raise PipelineError(f"semantic IDs: negative code in {name}")
        size = int(col.max(initial=0)) + 1
        positions.append(Position(name, offset, size))
        tokens.append(col + offset)
        offset += size
    layout = Layout(list(modalities), positions, FIRST_FREE, user_buckets, history, offset, spans)
    return layout, np.stack(tokens, axis=1).astype(np.int32)


def _dedup(codes: np.ndarray) -> np.ndarray:
    """0 for the first item of each identical tuple, 1 for the second, ... (in item order)."""
    _, group = np.unique(codes, axis=0, return_inverse=True)
    group = group.reshape(-1)
    order = np.argsort(group, kind="stable")
    sorted_group = group[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_group)) + 1]
    run_start = np.repeat(starts, np.diff(np.r_[starts, len(group)]))
    dedup = np.empty(len(group), dtype=np.int64)
    dedup[order] = np.arange(len(group)) - run_start
    return dedup


def user_tokens(user_idx: np.ndarray, layout: Layout) -> np.ndarray | None:
    """TIGER's hashed user token (a multiplicative hash of the user index), or None if off."""
    if layout.user_buckets == 0:
        return None
    h = (np.asarray(user_idx, dtype=np.uint64) * np.uint64(2654435761)) % np.uint64(2**32)
    return (h % np.uint64(layout.user_buckets)).astype(np.int32) + layout.user_offset
