"""The faster dropout: right drop rate, unbiased, seeded, and the attention path equals SDPA's."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import T5Config, T5ForConditionalGeneration

from pipeline import dropout
from pipeline.layout import PAD
from pipeline.params import ModelParams
from pipeline.seq2seq import build_model, seq2seq_loss, t5_config

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


def test_install_replaces_every_dropout():
    model = build_model(ModelParams(encoder_layers=1, decoder_layers=1, d_model=16, heads=2, d_kv=8, d_ff=32,
                                    dropout=0.1), 30, seed=0)
    assert not any(type(m) is nn.Dropout for m in model.modules())
    assert sum(isinstance(m, dropout.Dropout) for m in model.modules()) > 0
    assert model.config._attn_implementation == dropout.ATTENTION


def test_training_attention_equals_sdpa_without_drops():
    """A drop rate too small to drop anything sends training through the written-out attention;
    its loss and gradients must equal transformers' SDPA path (padding, causal mask, biases)."""
    cfg = ModelParams(encoder_layers=2, decoder_layers=2, d_model=32, heads=2, d_kv=16, d_ff=64, dropout=1e-9)
    config = t5_config(cfg, 50).to_dict()
    torch.manual_seed(0)
    plain = T5ForConditionalGeneration(T5Config(**config)).train()
    fast = dropout.install(T5ForConditionalGeneration(T5Config(**config))).train()
    fast.load_state_dict(plain.state_dict())
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(2, 50, (6, 11), generator=g)
    ids[2, 5:] = PAD
    labels = torch.randint(2, 50, (6, 4), generator=g)
    losses = []
    for model in (plain, fast):
        loss = seq2seq_loss(model, ids, labels)
        loss.backward()
        losses.append(loss.detach())
    torch.testing.assert_close(losses[0], losses[1])
    for (name, a), b in zip(plain.named_parameters(), fast.parameters()):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-6, rtol=1e-5, msg=name)
