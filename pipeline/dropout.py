"""Dropout with cheaper random numbers, for the T5 recommender's training on CPU.

Profiling a training step on 2 cores (torch profiler, lfpp) put 28% of its time in
`aten::bernoulli_`: torch's CPU dropout draws one 32-bit number per element from a single
generator, then scales in a second pass. Here one 64-bit draw gives four 16-bit lanes, each lane
keeps its element when it is above a threshold, and the element is multiplied by 0 or 1/(1-p). Same
distribution up to 2^-16 on the drop probability, same global seeded torch generator (so runs
stay reproducible and a checkpoint's RNG state still resumes them exactly). The op itself is about
2.5x faster, a training step 1.2x (bench/recommender_speed.py).

`install(model)` swaps every `nn.Dropout` of a transformers model for `Dropout` and routes the
attention through `attention`, which does the same for the attention weights in training and
is plain SDPA otherwise.
"""
from __future__ import annotations

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, eager_mask

ATTENTION = "mgr_dropout"


def keep_mask(shape: torch.Size, p: float, device: torch.device) -> torch.Tensor:
    """Bool tensor of `shape`, each element True with probability 1 - p (to 2^-16)."""
    n = shape.numel()
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=device).random_(-2**63, None)
    lanes = words.view(torch.int16)[:n].view(shape)  # uniform over the int16 range
    return lanes >= -32768 + round(p * 65536)


# On a GPU torch's own dropout is one fused kernel and SDPA fuses the attention's; the lanes and
# the eager attention below are for the CPU, where they would only add kernel launches (a GPU step
# of this model is launch-bound: bench/on_gpu.py). Off: the CPU code everywhere (bench A/B only).
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
    # the scaling skipped in `attention`, a training step is 1.04x (bench/train_revisions.py).
    return x * torch.where(keep_mask(x.shape, p, x.device), 1.0 / (1.0 - p), 0.0).to(x.dtype)


class Dropout(nn.Module):
    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
              attention_mask: torch.Tensor | None, scaling: float | None = None,
              position_bias: torch.Tensor | None = None, **kwargs):
    """T5's attention (scores + position bias + mask, softmax, dropout, weighted sum). With dropout
    in training on the CPU it is computed here, since SDPA's CPU dropout is the slow path; otherwise SDPA."""
    p = kwargs.pop("dropout", 0.0)  # transformers passes the rate as `dropout`, this module's function name
    if not module.training or p == 0.0 or (query.is_cuda and NATIVE_ON_GPU):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=p if module.training else 0.0,
                                      scaling=scaling, position_bias=position_bias, **kwargs)
    scores = torch.matmul(query, key.transpose(2, 3))
    scaling = query.size(-1) ** -0.5 if scaling is None else scaling
    if scaling != 1.0:  # T5's is 1: skip a pass over the scores, forward and backward
        scores = scores * scaling
    if position_bias is not None:
        scores = scores + position_bias
    if attention_mask is not None:  # additive (eager_mask, registered below): causality and padding
        scores = scores + attention_mask
    weights = dropout(torch.softmax(scores, dim=-1), p, True)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


AttentionInterface.register(ATTENTION, attention)
AttentionMaskInterface.register(ATTENTION, eager_mask)  # unregistered names get no mask at all


def install(model: nn.Module) -> nn.Module:
    """Use `Dropout` and `attention` throughout `model` (in place); returns it."""
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if isinstance(child, nn.Dropout):
                setattr(parent, name, Dropout(child.p))
    model.set_attn_implementation(ATTENTION)
    return model
