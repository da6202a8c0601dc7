"""Ranking metrics for leave-one-out next-item prediction: one target per user.

Every model (generative or SASRec) hands in the same thing: per user, its ranked top list of
item indices. A target's rank is its 1-based position in that list, 0 when it is not in it.
With one relevant item, Recall@K is the hit rate and NDCG@K is 1/log2(rank + 1) when rank <= K.
MRR is over the ranked list a model returns (beam size for the generative models): a target
outside the list counts 0, so it is MRR@len(list); `mrr_depth` in the output says how deep.
"""
from __future__ import annotations

import numpy as np

KS: tuple[int, ...] = (5, 10)


def target_ranks(top: np.ndarray, target: np.ndarray) -> np.ndarray:
    """1-based rank of each row's target in `top` (n_users, depth); 0 where it is absent.

    `top` may hold -1 for slots a constrained search could not fill; they never match a target.
    """
    top = np.asarray(top)
    target = np.asarray(target)
    if top.ndim != 2 or target.shape != (top.shape[0],):
        raise ValueError(f"top must be (n, depth) and target (n,): got {top.shape} and {target.shape}")
    hit = top == target[:, None]
    return np.where(hit.any(axis=1), hit.argmax(axis=1) + 1, 0)


def ranking_metrics(ranks: np.ndarray, ks: tuple[int, ...] = KS, depth: int | None = None) -> dict[str, float]:
    """Recall@K, NDCG@K for each K, and MRR, averaged over users, from 1-based ranks (0 = miss)."""
    ranks = np.asarray(ranks, dtype=np.float64)
    if ranks.size == 0:
        raise ValueError("no users to evaluate")
    found = ranks > 0
    out: dict[str, float] = {}
    for k in ks:
        hit = found & (ranks <= k)
        out[f"recall@{k}"] = float(hit.mean())
        out[f"ndcg@{k}"] = float(np.where(hit, 1.0 / np.log2(np.where(found, ranks, 1.0) + 1.0), 0.0).mean())
    out["mrr"] = float(np.where(found, 1.0 / np.where(found, ranks, 1.0), 0.0).mean())
    if depth is not None:
        out["mrr_depth"] = int(depth)
    return out


def evaluate_top(top: np.ndarray, target: np.ndarray, ks: tuple[int, ...] = KS) -> dict[str, float]:
    """`ranking_metrics` of a top list: the one call every model's evaluation makes."""
    return ranking_metrics(target_ranks(top, target), ks, depth=np.asarray(top).shape[1])
