"""The optimizer step shared by every trained model (RQ-VAE, recommender, SASRec).

torch runs AdamW and gradient clipping as a Python loop over the parameters on the CPU (its
multi-tensor paths default on only for GPUs). The models here have a few dozen small tensors, so
that loop was about 6 ms of a 75 ms recommender step on 2 cores: the fused AdamW kernel and the
multi-tensor norm take it to about 2 ms (bench/train_revisions.py). Same update rule; the float
rounding differs from the loop's, so a run is reproducible against itself, not against the loop.
"""
from __future__ import annotations

from typing import Iterable

import torch

FUSED_DEVICES = ("cpu", "cuda")  # where torch has the fused AdamW kernel


def adamw(groups: Iterable, lr: float, weight_decay: float = 0.0) -> torch.optim.AdamW:
    """AdamW over `groups` (parameters or param-group dicts), fused where the device has the kernel."""
    groups = list(groups)
    params = [p for g in groups for p in (g["params"] if isinstance(g, dict) else [g])]
    fused = bool(params) and all(p.device.type in FUSED_DEVICES for p in params)
    return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay, fused=fused or None)


def clip_grad_norm(params: Iterable[torch.nn.Parameter], max_norm: float) -> torch.Tensor:
    return torch.nn.utils.clip_grad_norm_(list(params), max_norm, foreach=True)
