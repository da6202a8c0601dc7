"""The faster dropout: right drop rate, unbiased, seeded (its attention path: tests/test_t5.py)."""
from __future__ import annotations

import pytest
import torch

from pipeline import dropout

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5])
def test_drop_rate_and_scale(p):
    torch.manual_seed(0)
    x = torch.ones(1000, 1000)
    y = dropout.dropout(x, p, True)
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - p) < 0.002  # 1e6 draws: sd of the rate is < 0.0005
    assert abs(y.mean().item() - 1.0) < 0.005  # kept elements are scaled by 1/(1-p)
    values = torch.unique(y).tolist()
    assert values[0] == 0.0 and values[1:] == [pytest.approx(1 / (1 - p))]


def test_no_op_outside_training_and_at_zero():
    x = torch.randn(7, 5)
    assert dropout.dropout(x, 0.5, False) is x
    assert dropout.dropout(x, 0.0, True) is x
    assert torch.equal(dropout.dropout(x, 1.0, True), torch.zeros_like(x))


def test_masks_follow_the_global_seed():
    torch.manual_seed(3)
    a = dropout.keep_mask(torch.Size([64, 33]), 0.2, torch.device("cpu"))
    torch.manual_seed(3)
    b = dropout.keep_mask(torch.Size([64, 33]), 0.2, torch.device("cpu"))
    c = dropout.keep_mask(torch.Size([64, 33]), 0.2, torch.device("cpu"))
    assert torch.equal(a, b) and not torch.equal(b, c)
