"""Dropout with cheaper random numbers, for the T5 recommender's training on CPU.

Profiling a training step on 2 cores (torch profiler, lfpp) put 28% of its time in
`aten::bernoulli_`: torch's CPU dropout draws one 32-bit number per element from a single
generator, then scales in a second pass. Here one 64-bit draw gives four 16-bit lanes, each lane
keeps its element when it is above a threshold, and the element is multiplied by 0 or 1/(1-p). Same
distribution up to 2^-16 on the drop probability, same global seeded torch generator (so runs
stay reproducible and a checkpoint's RNG state still resumes them exactly). The op itself is about
2.5x faster, a training step 1.2x (bench/recommender_speed.py).

The recommender (pipeline/t5.py) drops its activations and attention weights with `dropout`.
"""
from __future__ import annotations

import torch


def keep_mask(shape: torch.Size, p: float, device: torch.device) -> torch.Tensor:
    """Bool tensor of `shape`, each element True with probability 1 - p (to 2^-16)."""
    n = shape.numel()
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=device).random_(-2**63, None)
    lanes = words.view(torch.int16)[:n].view(shape)  # uniform over the int16 range
    return lanes >= -32768 + round(p * 65536)


# On a GPU torch's own dropout is one fused kernel and SDPA fuses the attention's; the lanes and
# the written-out attention (pipeline/t5.py `attend`) are for the CPU, where they would only add
# kernel launches (a GPU step of this model is launch-bound: bench/on_gpu.py). Off: the CPU code
# everywhere (bench A/B only).
NATIVE_ON_GPU = True


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    if not training or p == 0.0:
        return x
    if x.is_cuda and NATIVE_ON_GPU:
        return torch.nn.functional.dropout(x, p, True)
    if p >= 1.0:
        return torch.zeros_like(x)
    # A float mask of 0 and 1/(1-p): one product forward and one backward, instead of a scaling,
    # a where and the where's backward (same values, but a dropped negative element is -0.0). With
    # the attention's scaling skipped too (T5 scales by 1), a training step was 1.04x
    # (bench/train_revisions.py).
    return x * torch.where(keep_mask(x.shape, p, x.device), 1.0 / (1.0 - p), 0.0).to(x.dtype)
