from __future__ import annotations

import pytest
import torch

from pipeline.layout import PAD
from pipeline.params import ModelParams
from pipeline.seq2seq import build_model, distance_from_end, encoder_inputs, model_from_config, step_function

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(encoder_layers=2, decoder_layers=2, d_model=32, heads=2, d_kv=16, d_ff=64, dropout=0.0)


def _inputs(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, 50, (5, 12), generator=g)
    ids[1, 7:] = PAD
    ids[3, 2:] = PAD
    return ids


def test_distance_from_end_counts_real_tokens_after_each_position():
    ids = torch.tensor([[5, 6, 7, PAD, PAD], [5, 6, 7, 8, 9], [PAD, PAD, 4, 5, PAD]])
    assert distance_from_end(ids).tolist() == [[2, 1, 0, 0, 0], [4, 3, 2, 1, 0], [1, 1, 1, 0, 0]]


@pytest.mark.parametrize("tie", [False, True])
@pytest.mark.parametrize("end_positions", [0, 16])
def test_step_function_matches_the_full_forward_pass(tie, end_positions):
    """The cached cross-attention and last-position output layer change nothing but the speed."""
    model = build_model(ModelParams(**TINY, tie_embeddings=tie, end_positions=end_positions), 50, seed=0).eval()
    ids, beam = _inputs(), 3
    prefix = torch.randint(2, 50, (ids.shape[0] * beam, 4), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        fast = step_function(model, ids, beam)(prefix, None)
        dec = torch.cat([torch.full((len(prefix), 1), PAD), prefix], dim=1)
        full = model(inputs_embeds=encoder_inputs(model, ids).repeat_interleave(beam, 0),
                     attention_mask=(ids != PAD).repeat_interleave(beam, 0), decoder_input_ids=dec).logits[:, -1]
    torch.testing.assert_close(fast, full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("tie", [False, True])
def test_cached_decoding_with_reordered_beams_matches_the_full_forward_pass(tie):
    """Step by step as the beam search calls it: one new token per row, rows re-drawn from parents
    (beams die and split), the first step shared by a query's beams. Every step's logits equal
    the plain forward pass over the whole reordered prefix."""
    model = build_model(ModelParams(**TINY, tie_embeddings=tie, end_positions=16), 50, seed=0).eval()
    ids, beam = _inputs(), 4
    rows = ids.shape[0] * beam
    g = torch.Generator().manual_seed(2)
    step = step_function(model, ids, beam)
    prefix, parent = torch.zeros((rows, 0), dtype=torch.long), None
    with torch.inference_mode():
        for depth in range(4):
            fast = step(prefix, parent)
            dec = torch.cat([torch.full((rows, 1), PAD), prefix], dim=1)
            full = model(inputs_embeds=encoder_inputs(model, ids).repeat_interleave(beam, 0),
                         attention_mask=(ids != PAD).repeat_interleave(beam, 0), decoder_input_ids=dec).logits[:, -1]
            torch.testing.assert_close(fast, full, atol=1e-5, rtol=1e-5)
            # Parents stay within a query, as in the search; some beams are copied, some dropped.
            local = torch.randint(0, beam, (ids.shape[0], beam), generator=g)
            parent = (local + torch.arange(ids.shape[0])[:, None] * beam).view(-1)
            prefix = torch.cat([prefix[parent], torch.randint(2, 50, (rows, 1), generator=g)], dim=1)


def test_end_positions_survive_a_save_and_load_and_are_used():
    model = build_model(ModelParams(**TINY, end_positions=16), 50, seed=0).eval()
    assert model.end_positions.num_embeddings == 16
    again = model_from_config(model.config.to_dict())
    again.load_state_dict(model.state_dict())  # strict: the table is part of the weights
    ids = _inputs()
    with torch.inference_mode():
        torch.testing.assert_close(encoder_inputs(again.eval(), ids), encoder_inputs(model, ids))
        plain = model.shared(ids)
        assert not torch.allclose(encoder_inputs(model, ids), plain)
    # The same tokens with more right padding get the same embeddings at the real positions.
    padded = torch.cat([ids, torch.full((ids.shape[0], 3), PAD)], dim=1)
    with torch.inference_mode():
        torch.testing.assert_close(encoder_inputs(model, padded)[:, :12], encoder_inputs(model, ids))


def test_plain_t5_has_no_position_table():
    model = build_model(ModelParams(**TINY, end_positions=0), 50, seed=0)
    assert not hasattr(model, "end_positions")
    ids = _inputs()
    torch.testing.assert_close(encoder_inputs(model, ids), model.shared(ids))
