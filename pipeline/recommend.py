"""Top-K items for a history of ASINs or a known user, from a trained variant (`mgr recommend`).

It reads what the pipeline wrote (the variant's layout and item tokens, its model, the ingested
items and splits). It decodes with the same constrained beam search as evaluation, so every
recommendation is a real item, and a score is the model's log-probability of the item's ID.
A known user's input starts with their hashed user token, as in training. A bare history has
no user, so its input has no user token.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch

from pipeline import distributed
from pipeline.beam import ItemTrie
from pipeline.errors import PipelineError
from pipeline.evaluate import load_recommender
from pipeline.examples import read_items
from pipeline.layout import Layout
from pipeline.seq2seq import recommend
from pipeline.sequences import input_ids, read_splits, row_lookup


def _read(path: Path, what: str) -> pl.DataFrame:
    if not Path(path).is_file():
        raise PipelineError(f"{path}: {what} not found (run `dvc repro` first)")
    return pl.read_parquet(path)


@dataclass
class Recommender:
    model: torch.nn.Module
    layout: Layout
    tokens: np.ndarray        # (variant items, item_len) token tuples
    row_of_item: np.ndarray   # item_idx -> row of `tokens`, -1 if the variant has no ID for it
    trie: ItemTrie
    items: pl.DataFrame       # item_idx, item_id (ASIN), title

    @classmethod
    def load(cls, seq_dir: Path, model_path: Path, items_path: Path) -> "Recommender":
        layout_path = Path(seq_dir) / "layout.json"
        if not layout_path.is_file():
            raise PipelineError(f"{layout_path}: not found (run the sequences stage for this variant)")
        layout = Layout.load(layout_path)
        item_idx, tokens = read_items(Path(seq_dir))
        items = _read(items_path, "items").select("item_idx", "item_id", "title")
        row_of_item = row_lookup(item_idx, int(items["item_idx"].max()) + 1)
        model = load_recommender(model_path, distributed.device())
        return cls(model, layout, tokens, row_of_item, ItemTrie(tokens, item_idx), items)

    def item_indices(self, asins: list[str]) -> list[int]:
        """ASINs -> item indices; unknown ASINs or items without an ID in this variant are an error."""
        found = dict(zip(self.items["item_id"].to_list(), self.items["item_idx"].to_list()))
        unknown = [a for a in asins if a not in found]
        if unknown:
            raise PipelineError(f"unknown ASIN(s): {', '.join(unknown[:5])}"
                                f"{' ...' if len(unknown) > 5 else ''} (not among the {len(found)} ingested items)")
        idx = [found[a] for a in asins]
        missing = [a for a, i in zip(asins, idx) if self.row_of_item[i] < 0]
        if missing:
            raise PipelineError(f"item(s) without a semantic ID in this variant: {', '.join(missing[:5])}")
        return idx

    def recommend(self, history: list[int], k: int, beam: int, user_idx: int | None = None,
                  exclude_seen: bool = False, dtype: str = "float32") -> pl.DataFrame:
        """rank, item_id, title, score (log-probability) of the top-k items, best first; `dtype` is
        the network's decoding dtype (`recommender.train.decode_dtype`), as evaluation uses it."""
        if not history:
            raise PipelineError("empty history: give at least one item")
        hist = history[-self.layout.history:]
        rows = pl.DataFrame({"user_idx": [user_idx if user_idx is not None else 0],
                             "history": [hist]}, schema={"user_idx": pl.Int64, "history": pl.List(pl.Int64)})
        ids = input_ids(rows, self.layout, self.tokens, self.row_of_item, with_user=user_idx is not None)
        ids = torch.from_numpy(ids.values.to_numpy().astype(np.int64))[None, :]
        depth = k + (len(set(history)) if exclude_seen else 0)
        top, scores = recommend(self.model, self.trie, ids, max(beam, depth), depth, 1, dtype)
        found = pl.DataFrame({"item_idx": top[0].tolist(), "score": scores[0].tolist()}).filter(pl.col("item_idx") >= 0)
        if exclude_seen:
            found = found.filter(~pl.col("item_idx").is_in(list(history)))
        found = found.head(k).with_row_index("rank", offset=1)
        return found.join(self.items, on="item_idx", how="left", maintain_order="left").select(
            "rank", "item_id", "title", "score")


def user_history(splits_path: Path, user_id: str) -> tuple[int, list[int]]:
    """A known user's index and whole history (train, then the valid and test items), oldest first."""
    splits = read_splits(splits_path)
    row = splits.filter(pl.col("user_id") == user_id) if "user_id" in splits.columns else splits.clear()
    if row.is_empty():
        raise PipelineError(f"unknown user {user_id!r} (not among the {splits.height} users in {splits_path})")
    r = row.row(0, named=True)
    return int(r["user_idx"]), [*r["train"], r["valid"], r["test"]]
