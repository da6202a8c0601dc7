"""The files `dvc plots show` draws: Recall@K curves and codebook usage per level."""
from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from pipeline.metrics import evaluate_top
from pipeline.recall_curve import recall_at_ks, write_recall_curve
from pipeline.summary import write_usage_csv


def test_recall_curve_by_hand(tmp_path):
    top = np.array([[3, 1, 2], [5, 6, 7], [9, 8, -1], [4, 0, 1]])
    target = np.array([1, 5, 0, 1])  # ranks 2, 1, miss, 3
    assert recall_at_ks(top, target).tolist() == [0.25, 0.5, 0.75]
    write_recall_curve(top, target, tmp_path / "c.csv")
    assert (tmp_path / "c.csv").read_text() == "k,recall\n1,0.250000\n2,0.500000\n3,0.750000\n"


def test_recall_curve_agrees_with_the_metrics():
    rng = np.random.default_rng(0)
    top = np.stack([rng.permutation(50)[:20] for _ in range(200)])
    target = rng.integers(0, 50, 200)
    curve, metrics = recall_at_ks(top, target), evaluate_top(top, target)
    assert curve[4] == pytest.approx(metrics["recall@5"]) and curve[9] == pytest.approx(metrics["recall@10"])
    assert (np.diff(curve) >= 0).all()


def test_usage_csv(tmp_path):
    ids = pl.DataFrame({"item_id": list("abcd"), "code_1": [0, 0, 1, 2], "code_2": [3, 3, 3, 3], "dedup": [0, 1, 0, 0]})
    write_usage_csv(ids, tmp_path / "u.csv")
    rows = pl.read_csv(tmp_path / "u.csv")
    assert rows["level"].to_list() == [1, 2] and rows["codes_used"].to_list() == [3, 1]
    assert rows["entropy_bits"].to_list() == [1.5, 0.0]
