"""Item embeddings: one vector per item and modality, and their early fusion (MGR-EF).

`embed_items` encodes the items' text or image in chunks. Each finished chunk is written
atomically under `work_dir/<modality>-<fingerprint>/`, so a killed run resumes where it
stopped; the fingerprint covers the encoder params and the input, so a chunk is reused only
for exactly the input and settings that produced it. Items without usable input are
skipped and counted by kind. Reports carry no timings: same input, byte-identical output.

Under torchrun the chunk files are the shards: rank r of N encodes chunks r, r+N, ..., and
once every rank has written its own, rank 0 merges all of them into the same file a single
process writes.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time
from collections import deque
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import torch
from tqdm import tqdm

from pipeline import distributed
from pipeline.artifacts import atomic_path
from pipeline.errors import PipelineError, Problems
from pipeline.params import FusedEmbedParams
from pipeline.vectors import read_vectors, vectors_table, write_vectors

INPUT_COLUMN = {"text": "text", "image": "image_path"}
# Params that change how fast, never what: a rerun with another value still resumes.
NOT_IN_FINGERPRINT = {"workers"}


@dataclass
class Chunk:
    """What one chunk of items produced: the embedded items and the skipped ones, by kind."""

    item_idx: np.ndarray
    item_id: list[str]
    matrix: np.ndarray
    skipped: Problems = field(default_factory=Problems)


# --- embedding one modality ------------------------------------------------------------

def embed_items(modality: str, items: pl.DataFrame, cfg: Any, out: Path, work_dir: Path,
                progress: bool = True) -> dict[str, Any] | None:
    """Encode `items` (the ingested items frame) for `modality` (text | image) into `out`.
    Returns the report; under torchrun, only on rank 0 (the others return None, writing nothing
    but their chunks)."""
    if modality not in INPUT_COLUMN:
        raise ValueError(f"embed_items: modality must be text or image, got {modality!r}")
    rank, world = distributed.init()
    inputs = input_frame(modality, items, getattr(cfg, "fields", None))
    encoder = _load_encoder(modality, cfg)
    if rank == 0:
        print(f"embed {modality}: {cfg.encoder} {cfg.model}, weights {encoder.weights.label()}, "
              f"dim {encoder.dim} on {encoder.device} in {encoder.dtype}, {inputs.height} items, {world} process(es)", file=sys.stderr)

    # The resolved dtype, not "auto": chunks computed on another CPU are not this one's.
    resolved = cfg.model_copy(update={"dtype": encoder.dtype})
    chunk_dir = Path(work_dir) / f"{modality}-{fingerprint(modality, resolved, encoder.weights.describe(), inputs)}"
    paths = [chunk_dir / f"chunk-{i:05d}.parquet" for i in range(-(-inputs.height // cfg.chunk_size))]
    mine = [inputs.slice(i * cfg.chunk_size, cfg.chunk_size) for i in range(rank, len(paths), world)]
    run = _ChunkRunner(modality, encoder, cfg, progress and rank == 0, total=sum(c.height for c in mine))
    resumed = 0
    t0 = time.perf_counter()
    try:
        for path, chunk in zip(paths[rank::world], mine):
            if path.is_file():
                resumed += 1
                run.bar.update(chunk.height)
            else:
                write_chunk(path, run(chunk))
    finally:
        run.close()
    seconds = time.perf_counter() - t0
    counts = distributed.gather((run.items_done, resumed, seconds))  # returns once every shard is written
    if rank != 0:
        return None

    item_idx, item_id, matrix, skipped = _concat([read_chunk(p) for p in paths], encoder.dim)
    if len(item_idx) == 0 and inputs.height:
        raise PipelineError(f"embed.{modality}: no item has a usable {INPUT_COLUMN[modality]} ({skipped.kinds()})")
    write_vectors(out, item_idx, item_id, matrix)
    shutil.rmtree(chunk_dir, ignore_errors=True)

    computed, resumed = sum(c[0] for c in counts), sum(c[1] for c in counts)
    seconds = max(c[2] for c in counts)
    rate = f"{computed / seconds:.1f} items/s" if computed and seconds > 0 else "nothing computed"
    print(f"embed {modality}: {len(item_idx)} vectors -> {out} ({rate}; {resumed} chunk(s) resumed)",
          file=sys.stderr)
    skipped.echo(f"embed {modality}: skipped")
    return {
        "modality": modality, "encoder": cfg.encoder, "model": cfg.model,
        "weights": encoder.weights.describe(), "dim": encoder.dim, "dtype": encoder.dtype,
        "items_in": inputs.height, "items_out": len(item_idx),
        "skipped": {k: v for k, v in sorted(skipped.items()) if v},
        "normalize": cfg.normalize, "resumed_chunks": resumed,
    }


def input_frame(modality: str, items: pl.DataFrame, fields: list[str] | None = None) -> pl.DataFrame:
    """item_idx, item_id and the modality's input as `value`, in item_idx order. Text: the
    `fields` composed by `item_texts`, or the ingested `text` column when None."""
    columns = fields if modality == "text" and fields else [INPUT_COLUMN[modality]]
    missing = [c for c in ("item_idx", "item_id", *columns) if c not in items.columns]
    if missing:
        key = " (embed.text.fields)" if missing[0] in (fields or []) else ""
        raise PipelineError(f"items: column {missing[0]!r}{key} missing (is this data/ingested/items.parquet?)")
    value = item_texts(items, fields) if columns == fields else items[columns[0]].cast(pl.String)
    return (items.select(pl.col("item_idx").cast(pl.Int32), pl.col("item_id").cast(pl.String))
            .with_columns(value.alias("value")).sort("item_idx"))


LABELS = {"brand": "Brand: ", "categories": "Category: "}


def item_texts(items: pl.DataFrame, fields: list[str]) -> pl.Series:
    """One text per item from `fields` in order; empty fields are left out.

    Title and description read as they are, brand and categories with a label (the encoder
    should know a category path is not part of the name). A part follows the previous one
    after ". ", or a space when that one ends a sentence: [title, description] is exactly
    ingestion's `text` column.
    """
    columns = [items[f].to_list() for f in fields]
    texts = []
    for row in zip(*columns):
        parts = []
        for name, value in zip(fields, row):
            if name == "categories":
                value = "; ".join(v for v in (value or []) if v)
            if value and value.strip():
                parts.append(LABELS.get(name, "") + value.strip())
        text = ""
        for part in parts:
            text = part if not text else f"{text}{' ' if text[-1] in '.!?' else '. '}{part}"
        texts.append(text or None)
    return pl.Series(texts, dtype=pl.String)


def _load_encoder(modality: str, cfg: Any):
    # Imported here so that fusion (and the CLI's --help) need not load torch models.
    if modality == "text":
        from pipeline.text_encoder import load_text_encoder
        return load_text_encoder(cfg)
    from pipeline.image_encoder import ImageEncoder
    return ImageEncoder(cfg)


def fingerprint(modality: str, cfg: Any, weights: dict[str, Any], inputs: pl.DataFrame) -> str:
    h = hashlib.sha256()
    params = {k: v for k, v in cfg.model_dump().items() if k not in NOT_IN_FINGERPRINT}
    h.update(json.dumps({"modality": modality, "params": params, "weights": weights}, sort_keys=True).encode())
    for name in ("item_idx", "item_id", "value"):
        h.update(json.dumps(inputs[name].to_list()).encode())
    return h.hexdigest()[:16]


class _ChunkRunner:
    """Encodes chunks of one modality; holds the progress bar and, for images, the decode threads."""

    def __init__(self, modality: str, encoder: Any, cfg: Any, progress: bool, total: int):
        self.modality, self.encoder, self.cfg = modality, encoder, cfg
        self.bar = tqdm(total=total, desc=f"embed {modality}", unit="item", disable=not progress,
                        file=sys.stderr, dynamic_ncols=True)
        self.pool = ThreadPoolExecutor(max_workers=cfg.workers) if modality == "image" else None
        self.items_done = 0

    def __call__(self, chunk: pl.DataFrame) -> Chunk:
        if self.modality == "text":
            result = self._text(chunk)
        else:
            result = self._image(chunk)
        if self.cfg.normalize:
            result.matrix = l2_normalize(result.matrix)
        return result

    def close(self) -> None:
        self.bar.close()
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)

    def _text(self, chunk: pl.DataFrame) -> Chunk:
        skipped = Problems()
        rows = []
        for pos, text in enumerate(chunk["value"].to_list()):
            if text is None or not text.strip():
                skipped.add("text_empty")
            else:
                rows.append((pos, text))
        self.bar.update(sum(skipped.values()))
        # Similar lengths in a batch means little padding; the vectors go back to item order below.
        rows.sort(key=lambda r: len(r[1]))
        matrix = np.zeros((len(rows), self.encoder.dim), dtype=np.float32)
        for lo in range(0, len(rows), self.cfg.batch_size):
            batch = rows[lo:lo + self.cfg.batch_size]
            matrix[lo:lo + len(batch)] = self.encoder.encode([t for _, t in batch])
            self._advance(len(batch))
        positions = np.array([pos for pos, _ in rows], dtype=np.int64)
        order = np.argsort(positions, kind="stable")
        return _chunk_rows(chunk, positions[order].tolist(), matrix[order], skipped)

    def _image(self, chunk: pl.DataFrame) -> Chunk:
        skipped = Problems()
        todo = []
        for pos, path in enumerate(chunk["value"].to_list()):
            if path is None or not path.strip():
                skipped.add("image_no_path")
            else:
                todo.append((pos, path))
        self.bar.update(sum(skipped.values()))
        kept, vectors, batch = [], [], []
        for (pos, _), decoded in zip(todo, prefetch(self.pool, _try_load(self.encoder.load_image),
                                                    [p for _, p in todo], ahead=2 * self.cfg.batch_size)):
            if isinstance(decoded, str):
                skipped.add(decoded)
                self.bar.update(1)
                continue
            kept.append(pos)
            batch.append(decoded)
            if len(batch) == self.cfg.batch_size:
                vectors.append(self._encode_images(batch))
        if batch:
            vectors.append(self._encode_images(batch))
        matrix = np.concatenate(vectors) if vectors else np.zeros((0, self.encoder.dim), np.float32)
        return _chunk_rows(chunk, kept, matrix, skipped)

    def _encode_images(self, batch: list[torch.Tensor]) -> np.ndarray:
        out = self.encoder.encode(torch.stack(batch))
        self._advance(len(batch))
        batch.clear()
        return out

    def _advance(self, n: int) -> None:
        self.items_done += n
        self.bar.update(n)


def _try_load(load: Callable[[str], torch.Tensor]) -> Callable[[str], torch.Tensor | str]:
    from pipeline.image_encoder import BadImage

    def run(path: str) -> torch.Tensor | str:
        try:
            return load(path)
        except BadImage as bad:
            return bad.kind
    return run


def prefetch(pool: Executor, fn: Callable[[Any], Any], args: Iterable[Any], ahead: int) -> Iterator[Any]:
    """fn(arg) for each arg, in order, computed by `pool` at most `ahead` items in advance.

    The caller's work on one result (the model's forward pass, which releases the GIL)
    overlaps with the decoding of the next ones, and memory stays bounded by `ahead`.
    """
    pending: deque = deque()
    for arg in args:
        pending.append(pool.submit(fn, arg))
        if len(pending) >= ahead:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _chunk_rows(chunk: pl.DataFrame, positions: list[int], matrix: np.ndarray, skipped: Problems) -> Chunk:
    return Chunk(chunk["item_idx"].gather(positions).to_numpy().astype(np.int32),
                 chunk["item_id"].gather(positions).to_list(),
                 np.ascontiguousarray(matrix, dtype=np.float32), skipped)


def l2_normalize(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return (matrix / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)


# --- chunk files -----------------------------------------------------------------------

def write_chunk(path: Path, chunk: Chunk) -> None:
    table = vectors_table(chunk.item_idx, chunk.item_id, chunk.matrix)
    # The skipped counts ride along in the file's metadata, so a resumed run reports them too.
    table = table.replace_schema_metadata({"skipped": json.dumps(dict(sorted(chunk.skipped.items())))})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_chunk(path: Path) -> Chunk:
    keys, matrix = read_vectors(path)
    meta = pq.read_schema(path).metadata or {}
    skipped = Problems(json.loads(meta.get(b"skipped", b"{}")))
    return Chunk(keys["item_idx"].to_numpy().astype(np.int32), keys["item_id"].to_list(), matrix, skipped)


def _concat(chunks: list[Chunk], dim: int) -> tuple[np.ndarray, list[str], np.ndarray, Problems]:
    skipped = Problems()
    for c in chunks:
        skipped.update(c.skipped)
    if not chunks:
        return np.zeros(0, np.int32), [], np.zeros((0, dim), np.float32), skipped
    item_idx = np.concatenate([c.item_idx for c in chunks])
    item_id = [i for c in chunks for i in c.item_id]
    matrix = np.concatenate([c.matrix for c in chunks])
    order = np.argsort(item_idx, kind="stable")
    return item_idx[order], [item_id[i] for i in order], matrix[order], skipped


# --- early fusion ----------------------------------------------------------------------

def fuse(text_path: Path, image_path: Path, cfg: FusedEmbedParams, out: Path) -> dict[str, Any]:
    """One vector per item with both modalities: weighted, L2-normalised halves, concatenated or summed."""
    text_keys, text = read_vectors(text_path)
    image_keys, image = read_vectors(image_path)
    if cfg.combine == "sum" and text.shape[1] != image.shape[1]:
        raise PipelineError(
            f"embed.fused.combine: 'sum' needs equal dimensions, but text has {text.shape[1]} and image "
            f"{image.shape[1]}; use 'concat'"
        )
    t_idx, i_idx = text_keys["item_idx"].to_numpy(), image_keys["item_idx"].to_numpy()
    both = np.intersect1d(t_idx, i_idx)  # sorted, unique
    if len(both) == 0:
        raise PipelineError(f"{text_path}, {image_path}: no item has both a text and an image vector")
    t_rows = _rows_of(t_idx, both)
    i_rows = _rows_of(i_idx, both)
    t_part = cfg.text_weight * l2_normalize(text[t_rows])
    i_part = cfg.image_weight * l2_normalize(image[i_rows])
    matrix = np.concatenate([t_part, i_part], axis=1) if cfg.combine == "concat" else t_part + i_part
    item_id = text_keys["item_id"].gather(t_rows).to_list()
    write_vectors(out, both, item_id, matrix.astype(np.float32))
    return {
        "modality": "fused", "combine": cfg.combine, "dim": int(matrix.shape[1]), "items_out": int(len(both)),
        "dropped": {"no_text": int(len(np.setdiff1d(i_idx, both))), "no_image": int(len(np.setdiff1d(t_idx, both)))},
        "inputs": {
            "text": {"path": str(text_path), "items": int(len(t_idx)), "dim": int(text.shape[1]),
                     "weight": cfg.text_weight},
            "image": {"path": str(image_path), "items": int(len(i_idx)), "dim": int(image.shape[1]),
                      "weight": cfg.image_weight},
        },
    }


def _rows_of(item_idx: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Row numbers of `wanted` (sorted, all present) in a file's item_idx column."""
    order = np.argsort(item_idx, kind="stable")
    return order[np.searchsorted(item_idx[order], wanted)]
