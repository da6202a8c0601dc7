"""Interaction clean-up: deduplication, iterative k-core, chronological order, leave-one-out split."""
from __future__ import annotations

import polars as pl


def dedup(df: pl.DataFrame) -> pl.DataFrame:
    """Keep each (user, item) pair once: its earliest interaction, ties broken by file line.

    Keeping the first keeps the moment the item entered the user's history; a later
    re-review is not a new next-item event.
    """
    return (
        df.sort(["user_id", "item_id", "ts_ms", "line"])
        .unique(subset=["user_id", "item_id"], keep="first", maintain_order=True)
    )


def kcore(df: pl.DataFrame, k: int) -> tuple[pl.DataFrame, int]:
    """Drop users and items with fewer than `k` interactions until none is left; returns rounds."""
    rounds = 0
    while True:
        rounds += 1
        before = df.height
        df = df.filter(pl.len().over("user_id") >= k)
        df = df.filter(pl.len().over("item_id") >= k)
        if df.height == before:
            return df, rounds


def order_and_split(df: pl.DataFrame) -> pl.DataFrame:
    """Sort each user's interactions by time (stable on file line) and mark the leave-one-out split.

    Last item = test, second to last = valid, the rest = train. `position` is the 0-based
    chronological index within the user.
    """
    df = df.sort(["user_id", "ts_ms", "line"])
    pos = pl.int_range(pl.len()).over("user_id")
    from_end = pl.len().over("user_id") - 1 - pos
    split = (
        pl.when(from_end == 0).then(pl.lit("test"))
        .when(from_end == 1).then(pl.lit("valid"))
        .otherwise(pl.lit("train"))
    )
    return df.with_columns(position=pos.cast(pl.Int32), split=split.cast(pl.Enum(["train", "valid", "test"])))


def index_ids(df: pl.DataFrame, column: str, index: str) -> pl.DataFrame:
    """Dense int32 ids in sorted order of the string id, so they are stable for a given data set."""
    ids = df.select(pl.col(column).unique().sort()).with_row_index(index)
    return df.join(ids.with_columns(pl.col(index).cast(pl.Int32)), on=column, how="left")


def per_user_splits(inter: pl.DataFrame) -> pl.DataFrame:
    """One row per user: training item ids in order, the validation and the test item."""
    return (
        inter.sort(["user_idx", "position"])
        .group_by("user_idx", maintain_order=True)
        .agg(
            pl.col("user_id").first(),
            pl.col("item_idx").filter(pl.col("split") == "train").alias("train"),
            pl.col("item_idx").filter(pl.col("split") == "valid").first().alias("valid"),
            pl.col("item_idx").filter(pl.col("split") == "test").first().alias("test"),
        )
    )
