"""Ranking metrics against hand-computed values: ranks, Recall/NDCG@K, MRR, -1 padding, bad input."""
from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.metrics import evaluate_top, ranking_metrics, target_ranks

RANKS = [1, 3, 0, 7, 12]
EXPECTED = {
    "recall@5": 2 / 5,
    "recall@10": 3 / 5,
    "ndcg@5": (1 + 1 / math.log2(4)) / 5,
    "ndcg@10": (1 + 1 / math.log2(4) + 1 / math.log2(8)) / 5,
    "mrr": (1 + 1 / 3 + 1 / 7 + 1 / 12) / 5,
}


def top_with_ranks(ranks: list[int], depth: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """A top list per user whose target (user index + 1000) sits at the given 1-based rank (0: absent)."""
    top = np.arange(len(ranks) * depth).reshape(len(ranks), depth)  # distractors, never >= 1000
    target = np.arange(len(ranks)) + 1000
    for user, rank in enumerate(ranks):
        if rank:
            top[user, rank - 1] = target[user]
    return top, target


def test_target_ranks():
    top, target = top_with_ranks(RANKS)
    assert target_ranks(top, target).tolist() == RANKS


def test_ranking_metrics_by_hand():
    out = ranking_metrics(np.array(RANKS))
    assert out.keys() == EXPECTED.keys()
    for name, value in EXPECTED.items():
        assert out[name] == pytest.approx(value, abs=1e-12), name


def test_ranking_metrics_custom_ks_and_depth():
    out = ranking_metrics(np.array([2, 0]), ks=(1, 2), depth=20)
    assert out["recall@1"] == 0.0 and out["recall@2"] == 0.5
    assert out["ndcg@2"] == pytest.approx(0.5 / math.log2(3))
    assert out["mrr"] == 0.25 and out["mrr_depth"] == 20


def test_evaluate_top():
    top, target = top_with_ranks(RANKS)
    out = evaluate_top(top, target)
    assert out["mrr_depth"] == 12
    for name, value in EXPECTED.items():
        assert out[name] == pytest.approx(value, abs=1e-12), name


def test_padding_never_matches():
    # A constrained search that reached fewer items than the depth pads with -1.
    top = np.array([[4, -1, -1], [-1, -1, -1], [2, 7, -1]])
    target = np.array([5, 3, 7])
    assert target_ranks(top, target).tolist() == [0, 0, 2]
    assert evaluate_top(top, target)["recall@5"] == pytest.approx(1 / 3)


def test_first_occurrence_counts():
    assert target_ranks(np.array([[3, 1, 1]]), np.array([1])).tolist() == [2]


def test_empty_input_raises():
    with pytest.raises(ValueError, match="no users"):
        ranking_metrics(np.array([]))
    with pytest.raises(ValueError):
        evaluate_top(np.zeros((0, 5), dtype=np.int64), np.zeros(0, dtype=np.int64))


@pytest.mark.parametrize("top, target", [
    (np.zeros((3, 5)), np.zeros(2)),      # one target per user
    (np.zeros(5), np.zeros(5)),           # top must be 2-D
    (np.zeros((3, 5)), np.zeros((3, 1))),  # target must be 1-D
])
def test_shape_mismatch_raises(top, target):
    with pytest.raises(ValueError, match="top must be"):
        target_ranks(top, target)
