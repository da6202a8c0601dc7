"""pipeline/t5.py against transformers' T5 (the reference implementation) given the same weights."""
from __future__ import annotations

import pytest
import torch

from pipeline.layout import PAD
from pipeline.t5 import T5, T5Config, relative_buckets, shift_right

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(vocab_size=50, d_model=32, d_kv=16, d_ff=64, heads=2, encoder_layers=2, decoder_layers=3, end_positions=16)


def _batch(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, 50, (6, 11), generator=g)
    ids[2, 5:] = PAD
    ids[4, 1:] = PAD
    return ids, torch.randint(2, 50, (6, 4), generator=g)


def _transformers_copy(model: T5):
    """transformers' T5ForConditionalGeneration holding `model`'s weights (q, k, v split apart)."""
    from transformers import T5Config as HFConfig, T5ForConditionalGeneration

    c = model.config
    hf = T5ForConditionalGeneration(HFConfig(
        vocab_size=c.vocab_size, d_model=c.d_model, d_kv=c.d_kv, d_ff=c.d_ff, num_layers=c.encoder_layers,
        num_decoder_layers=c.decoder_layers, num_heads=c.heads, dropout_rate=c.dropout, feed_forward_proj="relu",
        relative_attention_num_buckets=c.buckets, relative_attention_max_distance=c.max_distance,
        pad_token_id=PAD, decoder_start_token_id=PAD, tie_word_embeddings=False))  # False: no output scaling
    inner = c.heads * c.d_kv
    pairs = [(hf.shared, model.shared), (hf.lm_head, model.shared)]
    for theirs, ours in ((hf.encoder, model.encoder), (hf.decoder, model.decoder)):
        pairs += [(theirs.block[0].layer[0].SelfAttention.relative_attention_bias, ours.relative_bias),
                  (theirs.final_layer_norm, ours.norm)]
        for block, b in zip(theirs.block, ours.blocks):
            sa = block.layer[0].SelfAttention
            for j, proj in enumerate((sa.q, sa.k, sa.v)):
                pairs.append((proj, b.self_attn.qkv.weight[j * inner:(j + 1) * inner]))
            pairs += [(sa.o, b.self_attn.o), (block.layer[0].layer_norm, b.self_norm),
                      (block.layer[-1].layer_norm, b.ff_norm), (block.layer[-1].DenseReluDense.wi, b.ff.wi),
                      (block.layer[-1].DenseReluDense.wo, b.ff.wo)]
            if len(block.layer) == 3:
                ca = block.layer[1].EncDecAttention
                pairs += [(ca.q, b.cross_attn.q), (ca.k, b.cross_attn.kv.weight[:inner]),
                          (ca.v, b.cross_attn.kv.weight[inner:]), (ca.o, b.cross_attn.o),
                          (block.layer[1].layer_norm, b.cross_norm)]
    with torch.no_grad():
        for theirs, ours in pairs:
            theirs.weight.copy_(ours if isinstance(ours, torch.Tensor) else ours.weight)
    return hf


def _reference_logits(hf, model: T5, ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return hf(inputs_embeds=model.embed(ids), attention_mask=ids != PAD, decoder_input_ids=shift_right(labels)).logits


def test_logits_equal_transformers_t5_with_the_same_weights():
    model = T5(T5Config(**TINY)).eval()
    hf = _transformers_copy(model).eval()
    ids, labels = _batch()
    with torch.no_grad():
        ours, theirs = model(ids, shift_right(labels)), _reference_logits(hf, model, ids, labels)
    assert ours.shape == (6, 4, 50)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_training_pass_and_gradients_equal_transformers_t5():
    """A drop rate too small to drop anything sends training through the written-out attention
    (scores + position bias + padding or causal mask); loss and gradients match the reference."""
    torch.manual_seed(0)
    model = T5(T5Config(**TINY, dropout=1e-9)).train()
    hf = _transformers_copy(model).train()
    ids, labels = _batch(2)
    ce = torch.nn.functional.cross_entropy
    ours = ce(model(ids, shift_right(labels)).flatten(0, 1), labels.flatten())
    theirs = ce(_reference_logits(hf, model, ids, labels).flatten(0, 1), labels.flatten())
    torch.testing.assert_close(ours, theirs)
    ours.backward()
    theirs.backward()
    torch.testing.assert_close(model.decoder.blocks[2].ff.wo.weight.grad, hf.decoder.block[2].layer[2].DenseReluDense.wo.weight.grad,
                               atol=1e-6, rtol=1e-5)
    inner = model.config.heads * model.config.d_kv
    torch.testing.assert_close(model.encoder.blocks[0].self_attn.qkv.weight.grad[inner:2 * inner],
                               hf.encoder.block[0].layer[0].SelfAttention.k.weight.grad, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(model.encoder.relative_bias.weight.grad,
                               hf.encoder.block[0].layer[0].SelfAttention.relative_attention_bias.weight.grad,
                               atol=1e-6, rtol=1e-5)


def test_bfloat16_training_writes_attention_out_as_close_as_sdpa(monkeypatch):
    """Training under bfloat16 autocast on the CPU attends by written-out products even without
    dropout (SDPA's CPU kernel is slower there). Against the float32 pass, its logits and gradients
    are as close as SDPA's bfloat16 ones (the eval-mode pass: at dropout 0 it differs only there)."""
    torch.manual_seed(0)
    model = T5(T5Config(**TINY, dropout=0.0))
    ids, labels = _batch(3)

    def logits_and_grad(train: bool, bfloat16: bool):
        model.train(train)
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bfloat16):
            logits = model(ids, shift_right(labels)).float()
        torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten()).backward()
        return logits.detach(), model.encoder.blocks[0].self_attn.qkv.weight.grad.clone()

    exact = logits_and_grad(False, False)
    sdpa = logits_and_grad(False, True)

    def no_sdpa(*args, **kwargs):
        raise AssertionError("SDPA called in bfloat16 training")
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", no_sdpa)
    written = logits_and_grad(True, True)
    for ours, theirs, ref in zip(written, sdpa, exact):
        assert (ours - ref).abs().max() <= 2 * (theirs - ref).abs().max()
        assert (ours - ref).abs().max() < 0.05 * ref.abs().max()


def test_relative_buckets_are_exact_near_and_logarithmic_far():
    rel = torch.tensor([-200, -128, -20, -8, -7, -1, 0, 1, 7, 8, 20, 200])
    causal = relative_buckets(rel, bidirectional=False, n=32, max_distance=128).tolist()
    assert causal[5:] == [1, 0, 0, 0, 0, 0, 0]  # the decoder only looks back: later keys share bucket 0
    assert causal[3:5] == [8, 7] and causal[0] == causal[1] == 31  # exact below 16, far ones share the last
    both = relative_buckets(rel, bidirectional=True, n=32, max_distance=128).tolist()
    assert both[4:9] == [7, 1, 0, 17, 23]  # keys after the query use the upper half of the buckets
    assert both[-1] == 31 and both[0] == 15


def test_output_layer_offset_and_untied_head_start_from_the_embedding_rows():
    tied = T5(T5Config(**TINY, output_offset=20)).eval()
    untied = T5(T5Config(**TINY, output_offset=20, tie_embeddings=False)).eval()
    assert "lm_head.weight" not in dict(tied.named_parameters())
    torch.testing.assert_close(untied.lm_head.weight, untied.shared.weight[20:])
    hidden = torch.randn(3, 32)
    torch.testing.assert_close(tied.head(hidden), hidden @ tied.shared.weight[20:].T)


def test_saved_config_round_trips_and_an_old_config_is_refused():
    cfg = T5Config(**TINY)
    assert T5Config.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="not a pipeline.t5 model config.*num_heads"):
        T5Config.from_dict({**cfg.to_dict(), "num_heads": 2})


def test_initialisation_follows_the_seed_and_t5_scales():
    torch.manual_seed(0)
    a = T5(T5Config(**TINY))
    torch.manual_seed(0)
    b = T5(T5Config(**TINY))
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    big = T5(T5Config(**dict(TINY, d_model=256, d_kv=64, d_ff=1024, heads=4)))
    inner = 4 * 64
    qkv = big.encoder.blocks[0].self_attn.qkv.weight
    assert qkv[:inner].std().item() == pytest.approx((256 * 64) ** -0.5, rel=0.05)
    assert qkv[inner:].std().item() == pytest.approx(256 ** -0.5, rel=0.05)
    assert big.decoder.blocks[0].ff.wo.weight.std().item() == pytest.approx(1024 ** -0.5, rel=0.05)
    assert big.shared.weight.std().item() == pytest.approx(1.0, rel=0.05)
