"""The shared optimizer step: fused AdamW and multi-tensor clipping, the same update as torch's loops."""
from __future__ import annotations

import copy

import pytest
import torch

from pipeline.optim import adamw, clip_grad_norm

pytestmark = pytest.mark.usefixtures("one_thread")


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))


def _train(model: torch.nn.Module, opt: torch.optim.Optimizer, clip) -> list[float]:
    g = torch.Generator().manual_seed(1)
    norms = []
    for _ in range(20):
        x, y = torch.randn(32, 8, generator=g), torch.randint(0, 3, (32,), generator=g)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        norms.append(float(clip(model.parameters(), 0.5)))
        opt.step()
    return norms


def test_fused_adamw_and_clipping_follow_torchs_loops():
    ours, ref = _model(), _model()
    groups = lambda m: [{"params": [m[0].weight, m[2].weight], "weight_decay": 0.1},  # noqa: E731
                        {"params": [m[0].bias, m[2].bias], "weight_decay": 0.0}]
    opt = adamw(groups(ours), 3e-3)
    assert opt.defaults["fused"] is True  # CPU parameters: the fused kernel
    norms = _train(ours, opt, clip_grad_norm)
    ref_norms = _train(ref, torch.optim.AdamW(groups(ref), lr=3e-3, foreach=False),
                       lambda p, n: torch.nn.utils.clip_grad_norm_(p, n, foreach=False))
    torch.testing.assert_close(norms, ref_norms, rtol=1e-5, atol=1e-6)
    for a, b in zip(ours.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]


def test_fused_adamw_state_resumes_in_a_new_optimizer():
    a, b = _model(), _model()
    opt_a = adamw(a.parameters(), 1e-2)
    _train(a, opt_a, clip_grad_norm)
    b.load_state_dict(a.state_dict())
    opt_b = adamw(b.parameters(), 1e-2)
    opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))  # as a checkpoint file gives it
    assert _train(a, opt_a, clip_grad_norm) == _train(b, opt_b, clip_grad_norm)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)
