"""A variant's sequences (the sequences stage's Parquet files) read back as padded tensors.

Shared by training, evaluation and `mgr recommend`, apart from pipeline/train.py so that the
stages that only decode do not load (or depend on) the training loop.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch

from pipeline.layout import PAD


@dataclass
class Examples:
    input_ids: torch.Tensor  # (n, max_len) int64, right-padded with PAD
    labels: torch.Tensor     # (n, item_len) int64
    target: np.ndarray       # (n,) item index

    @property
    def lengths(self) -> torch.Tensor:
        return (self.input_ids != PAD).sum(1)


def pad_lists(lists: pl.Series) -> torch.Tensor:
    """A list column as one right-padded (n, longest) int64 tensor, without per-row Python."""
    lengths = lists.list.len().to_numpy().astype(np.int64)
    width = max(int(lengths.max(initial=0)), 1)
    values = lists.explode().drop_nulls().to_numpy().astype(np.int64)
    rows = np.repeat(np.arange(len(lengths)), lengths)
    cols = np.arange(len(values)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    out = np.full((len(lengths), width), PAD, dtype=np.int64)
    out[rows, cols] = values
    return torch.from_numpy(out)


def read_examples(path: Path) -> Examples:
    df = pl.read_parquet(path, columns=["input_ids", "labels", "target"])
    return Examples(pad_lists(df["input_ids"]), pad_lists(df["labels"]), df["target"].to_numpy())


def read_items(seq_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """(item indices, token matrix (n_items, item_len)) of a variant's items."""
    items = pl.read_parquet(seq_dir / "items.parquet")
    return items["item_idx"].to_numpy(), pad_lists(items["tokens"]).numpy()
