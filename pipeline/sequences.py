"""Training, validation and test sequences of one variant, as Parquet with list columns.

Every prefix of a user's training part predicts the item after it (TIGER's augmentation);
validation predicts the held-out `valid` item from the whole training part, test the `test`
item from training part + valid item (leave-one-out). Histories keep the last `history` items.

Rows carry both the item view (`history`, `target`: item indices, for reading and for SASRec
style models) and the token view (`input_ids`, `labels`) that the seq2seq model trains on.
The token view is built by gathering from the items' token matrix over the flattened
histories, so there is no per-row Python work at any size.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from pipeline.artifacts import atomic_dir, write_json
from pipeline.errors import PipelineError
from pipeline.layout import EOS, Layout, build_layout, item_codes, user_tokens

SPLIT_COLUMNS = {"user_idx", "train", "valid", "test"}


def read_splits(path: str | os.PathLike) -> pl.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: file not found (run the ingest stage)")
    df = pl.read_parquet(path)
    missing = SPLIT_COLUMNS - set(df.columns)
    if missing:
        raise PipelineError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
    return df


def train_prefixes(splits: pl.DataFrame, history: int) -> pl.DataFrame:
    """One row per (user, position j >= 1) of the training part: the `history` items before j -> item j."""
    return (
        splits.select("user_idx", "train")
        .with_columns(j=pl.int_ranges(1, pl.col("train").list.len()))
        .explode("j")
        .drop_nulls("j")
        .with_columns(
            history=pl.col("train").list.slice(pl.max_horizontal(pl.col("j") - history, 0),
                                               pl.min_horizontal(pl.col("j"), history)),
            target=pl.col("train").list.get(pl.col("j")),
        )
        .select("user_idx", "history", "target")
    )


def eval_rows(splits: pl.DataFrame, history: int, split: str) -> pl.DataFrame:
    """valid: training part -> valid item; test: training part + valid item -> test item."""
    seq = pl.col("train") if split == "valid" else pl.concat_list("train", "valid")
    return splits.select(
        "user_idx",
        history=seq.list.tail(history),
        target=pl.col(split),
    )


def input_ids(rows: pl.DataFrame, layout: Layout, tokens: np.ndarray, row_of_item: np.ndarray,
              with_user: bool = True) -> pa.ListArray:
    """Per row, [user token] + the `history` items' tokens + EOS (no user token if `with_user` is
    False or the layout has none)."""
    hist = rows["history"]
    lengths = hist.list.len().to_numpy().astype(np.int64)
    flat = row_of_item[_flat(hist)]
    per_item = tokens.shape[1]
    values = tokens[flat].reshape(-1)
    # The EOS marks the end of the history: the encoder has relative positions only, so without
    # it no token can tell that it belongs to the latest item.
    ends = np.cumsum(lengths * per_item)
    values = np.insert(values, ends, EOS)
    lengths_tok = lengths * per_item + 1
    users = user_tokens(rows["user_idx"].to_numpy(), layout) if with_user else None
    if users is not None:
        values = np.insert(values, np.r_[0, np.cumsum(lengths_tok)][:-1], users)
        lengths_tok = lengths_tok + 1
    offsets = np.r_[0, np.cumsum(lengths_tok)].astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values.astype(np.int32)))


def tokenize(rows: pl.DataFrame, layout: Layout, tokens: np.ndarray, row_of_item: np.ndarray) -> pl.DataFrame:
    """Add `input_ids` (see `input_ids`) and `labels` (the target's tokens)."""
    per_item = tokens.shape[1]
    labels = tokens[row_of_item[rows["target"].to_numpy().astype(np.int64)]]
    label_arr = pa.FixedSizeListArray.from_arrays(pa.array(labels.reshape(-1)), per_item)
    return rows.with_columns(
        input_ids=pl.from_arrow(input_ids(rows, layout, tokens, row_of_item)),
        labels=pl.from_arrow(label_arr).cast(pl.List(pl.Int32)),
    )


def build_sequences(splits_path: Path, ids_dir: Path, modalities: list[str], transition: bool,
                    history: int, user_buckets: int, out_dir: Path) -> dict[str, Any]:
    """Write items/train/valid/test Parquet and layout.json for one variant into `out_dir` (atomically)."""
    splits = read_splits(splits_path)
    items, levels = item_codes(ids_dir, modalities)
    layout, tokens = build_layout(items, modalities, levels, transition, user_buckets, history)
    n_rows = int(max(splits["train"].list.max().max() or 0, splits["valid"].max(), splits["test"].max())) + 1
    row_of_item = row_lookup(items["item_idx"].to_numpy(), n_rows)

    parts = {"train": train_prefixes(splits, history),
             "valid": eval_rows(splits, history, "valid"),
             "test": eval_rows(splits, history, "test")}
    report: dict[str, Any] = {"modalities": modalities, "transition": transition,
                              "item_len": layout.item_len, "vocab_size": layout.vocab_size,
                              "items": items.height, "dropped_rows_without_ids": {}}
    with atomic_dir(out_dir) as tmp:
        layout.save(tmp / "layout.json")
        item_tokens = items.select("item_idx", "item_id").with_columns(
            tokens=pl.Series(tokens.tolist(), dtype=pl.List(pl.Int32)))
        item_tokens.write_parquet(tmp / "items.parquet")
        for name, rows in parts.items():
            rows, dropped = _known_items(rows, row_of_item)
            report["dropped_rows_without_ids"][name] = dropped
            tokenize(rows, layout, tokens, row_of_item).write_parquet(tmp / f"{name}.parquet")
            report[name] = {"rows": rows.height,
                            "mean_history": round(float(rows["history"].list.len().mean() or 0.0), 3)}
        write_json(report, tmp / "report.json")
    return report


def row_lookup(item_idx: np.ndarray, size: int = 0) -> np.ndarray:
    """item index -> its row in `item_idx` (-1 for indices not there), at least `size` long."""
    lookup = np.full(max(size, int(item_idx.max(initial=-1)) + 1), -1, dtype=np.int64)
    lookup[item_idx] = np.arange(len(item_idx))
    return lookup


def _flat(lists: pl.Series) -> np.ndarray:
    """All values of a list column in row order (empty lists contribute nothing, unlike explode)."""
    arr = lists.to_arrow()
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    return arr.flatten().to_numpy(zero_copy_only=False).astype(np.int64)


def _known_items(rows: pl.DataFrame, row_of_item: np.ndarray) -> tuple[pl.DataFrame, int]:
    """Drop rows whose target or history has an item without an ID (counted, never silent)."""
    known = row_of_item >= 0
    ok = known[rows["target"].to_numpy().astype(np.int64)]
    lengths = rows["history"].list.len().to_numpy()
    bad = np.repeat(np.arange(rows.height), lengths)[~known[_flat(rows["history"])]]
    ok[bad] = False
    return rows.filter(pl.Series(ok)), int((~ok).sum())
