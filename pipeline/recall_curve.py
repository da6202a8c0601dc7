"""Recall@K for every K from 1 to the list depth: the curve `dvc plots show` draws per model.

Kept apart from pipeline/metrics.py, which every training stage depends on: a new plot must
not retrain the models.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.artifacts import atomic_path
from pipeline.metrics import target_ranks


def recall_at_ks(top: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(depth,) Recall@1 .. Recall@depth of a top list (one target per user)."""
    ranks = target_ranks(top, target)
    depth = np.asarray(top).shape[1]
    hits = np.bincount(ranks, minlength=depth + 1)[1:depth + 1]  # users whose target sits at rank k
    return np.cumsum(hits) / len(ranks)


def write_recall_curve(top: np.ndarray, target: np.ndarray, path: Path) -> None:
    """CSV `k,recall` (atomically)."""
    curve = recall_at_ks(top, target)
    with atomic_path(Path(path)) as tmp:
        tmp.write_text("k,recall\n" + "".join(f"{k},{r:.6f}\n" for k, r in enumerate(curve, start=1)))
