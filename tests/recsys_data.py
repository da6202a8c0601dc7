"""A tiny recommendation dataset for the sequence, training and evaluation tests.

`write_tiny_dataset(dir)` writes what the ingest and quantize stages would: `splits.parquet`
and `semantic_ids/{text,image}.parquet`. Users walk the items in a cycle (item i is followed
by item i+1), so a model that learns anything gets the next item right.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl


def semantic_ids(codes: np.ndarray, n_items: int) -> pl.DataFrame:
    frame = {"item_idx": np.arange(n_items, dtype=np.int32),
             "item_id": [f"I{i:04d}" for i in range(n_items)]}
    for level in range(codes.shape[1]):
        frame[f"code_{level + 1}"] = codes[:, level].astype(np.int32)
    frame["dedup"] = np.zeros(n_items, dtype=np.int32)
    return pl.DataFrame(frame)


def write_tiny_dataset(root: Path, n_items: int = 24, n_users: int = 40, length: int = 7, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    i = np.arange(n_items)
    text = np.stack([i % 4, (i // 4) % 6], axis=1)          # unique 2-level text IDs
    image = np.stack([i % 3, (i // 3) % 3, i % 2], axis=1)  # 18 tuples for 24 items: collisions
    ids = root / "semantic_ids"
    ids.mkdir(parents=True, exist_ok=True)
    semantic_ids(text, n_items).write_parquet(ids / "text.parquet")
    semantic_ids(image, n_items).write_parquet(ids / "image.parquet")
    start = rng.integers(0, n_items, size=n_users)
    seqs = (start[:, None] + np.arange(length)[None, :]) % n_items
    pl.DataFrame({
        "user_idx": np.arange(n_users, dtype=np.int32),
        "user_id": [f"U{u:03d}" for u in range(n_users)],
        "train": [s[:-2].astype(np.int32).tolist() for s in seqs],
        "valid": seqs[:, -2].astype(np.int32),
        "test": seqs[:, -1].astype(np.int32),
    }, schema_overrides={"train": pl.List(pl.Int32)}).write_parquet(root / "splits.parquet")
    return root
