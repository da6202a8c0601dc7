"""Deduplication, k-core and leave-one-out split, checked as properties on random data."""
from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from pipeline import interactions


def random_log(seed: int, n: int = 3000, users: int = 300, items: int = 200) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    return pl.DataFrame({
        "user_id": [f"U{u}" for u in rng.integers(0, users, n)],
        # skewed item popularity so that k-core has something to remove, in several rounds
        "item_id": [f"I{i}" for i in (rng.pareto(1.2, n) * 10).astype(int) % items],
        "rating": rng.integers(1, 6, n).astype(np.float32),
        "ts_ms": rng.integers(0, 50, n) * 1000,  # few distinct times: many ties
    }).with_row_index("line")


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("k", [2, 5])
def test_kcore_every_user_and_item_has_k_and_nothing_more_could_be_kept(seed, k):
    df, rounds = interactions.kcore(interactions.dedup(random_log(seed)), k)
    assert df.height > 0 and rounds >= 1
    assert df.group_by("user_id").len()["len"].min() >= k
    assert df.group_by("item_id").len()["len"].min() >= k
    # maximality: the k-core of the result is the result
    again, rounds_again = interactions.kcore(df, k)
    assert again.height == df.height and rounds_again == 1


def test_kcore_iterates_until_stable():
    # C has one item; removing C leaves Z with one user, removing B-Z leaves B with one item,
    # so B goes in the second round and only the D/E x P/Q block survives.
    rows = [("C", "Z"), ("B", "Z"), ("B", "Q"), ("D", "P"), ("D", "Q"), ("E", "P"), ("E", "Q")]
    df = pl.DataFrame({"user_id": [u for u, _ in rows], "item_id": [i for _, i in rows]})
    out, rounds = interactions.kcore(df, 2)
    assert sorted(zip(out["user_id"], out["item_id"])) == [("D", "P"), ("D", "Q"), ("E", "P"), ("E", "Q")]
    assert rounds == 3
    out3, _ = interactions.kcore(df, 3)
    assert out3.is_empty()


def test_dedup_keeps_earliest_then_first_line():
    df = pl.DataFrame({
        "user_id": ["U", "U", "U", "U"], "item_id": ["A", "A", "B", "B"],
        "rating": [1.0, 2.0, 3.0, 4.0], "ts_ms": [20, 10, 5, 5],
    }).with_row_index("line")
    out = interactions.dedup(df).sort("item_id")
    assert out["rating"].to_list() == [2.0, 3.0]


@pytest.mark.parametrize("seed", [0, 3])
def test_split_last_by_time_is_test_and_ties_keep_file_order(seed):
    df, _ = interactions.kcore(interactions.dedup(random_log(seed)), 3)
    out = interactions.order_and_split(df)
    for (user,), g in out.group_by(["user_id"]):
        g = g.sort("position")
        assert g["position"].to_list() == list(range(g.height))
        # chronological with stable tie-breaking on the file line
        keys = list(zip(g["ts_ms"], g["line"]))
        assert keys == sorted(keys)
        assert g["split"].to_list() == ["train"] * (g.height - 2) + ["valid", "test"]
        assert g["ts_ms"][-1] == g["ts_ms"].max()


def test_per_user_splits_round_trip():
    df = pl.DataFrame({
        "user_id": ["a"] * 4 + ["b"] * 3, "item_id": list("wxyzxyz"),
        "ts_ms": [4, 3, 2, 1, 1, 2, 3], "rating": [5.0] * 7,
    }).with_row_index("line")
    df = interactions.index_ids(interactions.index_ids(df, "user_id", "user_idx"), "item_id", "item_idx")
    splits = interactions.per_user_splits(interactions.order_and_split(df)).sort("user_idx")
    # items w,x,y,z -> 0,1,2,3; user a saw z,y,x,w in time order
    assert splits.to_dicts() == [
        {"user_idx": 0, "user_id": "a", "train": [3, 2], "valid": 1, "test": 0},
        {"user_idx": 1, "user_id": "b", "train": [1], "valid": 2, "test": 3},
    ]
