"""Item vectors on disk: one Parquet file per modality, `item_idx`, `item_id`, `embedding`.

`embedding` is a fixed-size list of float32, so polars and pyarrow hand it over as one
contiguous (n, d) buffer: no Python loop per row on the way in or out.
"""
from __future__ import annotations

import os

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.artifacts import atomic_path
from pipeline.errors import PipelineError

KEYS = ("item_idx", "item_id")


def vectors_table(item_idx: np.ndarray, item_id: list[str] | pa.Array, matrix: np.ndarray) -> pa.Table:
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    if matrix.ndim != 2 or matrix.shape[0] != len(item_idx):
        raise ValueError(f"matrix shape {matrix.shape} does not match {len(item_idx)} items")
    flat = pa.array(matrix.reshape(-1), type=pa.float32())
    emb = pa.FixedSizeListArray.from_arrays(flat, matrix.shape[1])
    return pa.table({
        "item_idx": pa.array(np.asarray(item_idx, dtype=np.int32)),
        "item_id": pa.array(item_id, type=pa.string()),
        "embedding": emb,
    })


def write_vectors(dest: str | os.PathLike, item_idx, item_id, matrix: np.ndarray) -> None:
    table = vectors_table(item_idx, item_id, matrix)
    with atomic_path(dest) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def read_vectors(path: str | os.PathLike) -> tuple[pl.DataFrame, np.ndarray]:
    """(keys frame with item_idx and item_id, float32 matrix (n, d)) in file order."""
    if not os.path.isfile(path):
        raise PipelineError(f"{path}: embeddings file not found (run `mgr embed` first)")
    table = pq.read_table(path)
    missing = [c for c in (*KEYS, "embedding") if c not in table.column_names]
    if missing:
        raise PipelineError(f"{path}: not an embeddings file (missing column {missing[0]!r})")
    col = table.column("embedding").combine_chunks()
    if not pa.types.is_fixed_size_list(col.type):
        raise PipelineError(f"{path}: column 'embedding' must be a fixed-size list of float32")
    dim = col.type.list_size
    matrix = col.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(-1, dim)
    keys = pl.from_arrow(table.select(list(KEYS)))
    return keys, matrix
