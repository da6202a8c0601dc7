from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pipeline.beam import ItemTrie
from pipeline.layout import PAD
from pipeline.params import ModelParams
from pipeline.seq2seq import (build_model, decode_workers, decoding_copy, model_from_config, position_losses, recommend,
                              seq2seq_loss, step_function)
from pipeline.t5 import distance_from_end, shift_right

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
        full = model(ids.repeat_interleave(beam, 0), dec)[:, -1]
    torch.testing.assert_close(fast, full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("tie,offset", [(False, 0), (True, 0), (False, 20), (True, 20)])
def test_cached_decoding_with_reordered_beams_matches_the_full_forward_pass(tie, offset):
    """Step by step as the beam search calls it: one new token per row, rows re-drawn from parents
    (beams die and split), the first step shared by a query's beams. Every step's logits equal
    the plain forward pass over the whole reordered prefix."""
    model = build_model(ModelParams(**TINY, tie_embeddings=tie, end_positions=16), 50, seed=0, output_offset=offset)
    model.eval()
    ids, beam = _inputs(), 4
    rows = ids.shape[0] * beam
    g = torch.Generator().manual_seed(2)
    step = step_function(model, ids, beam)
    prefix, parent = torch.zeros((rows, 0), dtype=torch.long), None
    with torch.inference_mode():
        for depth in range(4):
            fast = step(prefix, parent)
            dec = torch.cat([torch.full((rows, 1), PAD), prefix], dim=1)
            full = model(ids.repeat_interleave(beam, 0), dec)[:, -1]
            torch.testing.assert_close(fast, full, atol=1e-5, rtol=1e-5)
            # Parents stay within a query, as in the search; some beams are copied, some dropped.
            local = torch.randint(0, beam, (ids.shape[0], beam), generator=g)
            parent = (local + torch.arange(ids.shape[0])[:, None] * beam).view(-1)
            prefix = torch.cat([prefix[parent], torch.randint(2, 50, (rows, 1), generator=g)], dim=1)


def test_several_new_tokens_give_the_logits_after_each():
    """The beam search feeds a transition token with the next step's token: one call, two new
    tokens, and the logits after each equal the full forward pass's at those positions."""
    model = build_model(ModelParams(**TINY, end_positions=16), 50, seed=0, output_offset=20).eval()
    ids, beam = _inputs(), 2
    rows = ids.shape[0] * beam
    g = torch.Generator().manual_seed(4)
    step = step_function(model, ids, beam)
    prefix = torch.randint(20, 50, (rows, 1), generator=g)
    parent = (torch.randint(0, beam, (ids.shape[0], beam), generator=g) + torch.arange(ids.shape[0])[:, None] * beam).view(-1)
    with torch.inference_mode():
        step(prefix[:, :0], None)
        prefix = torch.cat([prefix[parent], torch.randint(20, 50, (rows, 2), generator=g)], dim=1)
        fast = step(prefix, parent, 3)
        dec = torch.cat([torch.full((rows, 1), PAD), prefix], dim=1)
        full = model(ids.repeat_interleave(beam, 0), dec)[:, -3:]
    assert fast.shape == (rows, 3, 30)
    torch.testing.assert_close(fast, full, atol=1e-5, rtol=1e-5)


def test_end_positions_survive_a_save_and_load_and_are_used():
    model = build_model(ModelParams(**TINY, end_positions=16), 50, seed=0).eval()
    assert model.end_positions.num_embeddings == 16
    again = model_from_config(model.config.to_dict())
    again.load_state_dict(model.state_dict())  # strict: the table is part of the weights
    ids = _inputs()
    with torch.inference_mode():
        torch.testing.assert_close(again.eval().embed(ids), model.embed(ids))
        plain = model.shared(ids)
        assert not torch.allclose(model.embed(ids), plain)
    # The same tokens with more right padding get the same embeddings at the real positions.
    padded = torch.cat([ids, torch.full((ids.shape[0], 3), PAD)], dim=1)
    with torch.inference_mode():
        torch.testing.assert_close(model.embed(padded)[:, :12], model.embed(ids))


def test_plain_t5_has_no_position_table():
    model = build_model(ModelParams(**TINY, end_positions=0), 50, seed=0)
    assert not hasattr(model, "end_positions")
    ids = _inputs()
    torch.testing.assert_close(model.embed(ids), model.shared(ids))


@pytest.mark.parametrize("tie", [True, False])
def test_output_layer_covers_the_item_tokens_only(tie):
    """The head scores tokens >= offset only: tied, it is the embedding rows of those tokens (one
    weight, saved once); untied, its own weight starting as those rows. It survives a save/load,
    and the loss is the cross-entropy over those tokens alone."""
    params = ModelParams(**TINY, end_positions=16, tie_embeddings=tie)
    model = build_model(params, 50, seed=0, output_offset=20)
    names = [n for n, _ in model.named_parameters()]
    assert ("lm_head.weight" in names) == (not tie) and "shared.weight" in names
    ids = _inputs()
    hidden = torch.randn(3, 32)
    torch.testing.assert_close(model.head(hidden), hidden @ model.shared.weight[20:].T)
    again = model_from_config(model.config.to_dict())
    again.load_state_dict(model.state_dict())  # strict: the head's shape comes from the config
    labels = torch.randint(20, 50, (ids.shape[0], 3), generator=torch.Generator().manual_seed(3))
    model.eval()
    dec = torch.cat([torch.full((len(labels), 1), PAD), labels[:, :-1]], dim=1)
    with torch.no_grad():
        logits = model(ids, dec)
        assert logits.shape == (5, 3, 30)
        expected = F.cross_entropy(logits.flatten(0, 1), (labels - 20).flatten())
        torch.testing.assert_close(seq2seq_loss(model, ids, labels), expected)
        torch.testing.assert_close(seq2seq_loss(again.eval(), ids, labels), expected)
    loss = seq2seq_loss(model.train(), ids, labels)
    loss.backward()  # tied: the output layer's gradient reaches the embedding rows of item tokens only
    if tie:
        assert model.shared.weight.grad[20:].abs().sum() > 0


def test_first_code_weight_counts_the_first_label_token_that_many_times():
    """Weight 1 is the plain mean; weight w is the mean over positions with the first counted w
    times (its share of the gradient grows; the loss stays a mean per token)."""
    model = build_model(ModelParams(**TINY), 50, seed=0, output_offset=20).eval()
    ids = _inputs()
    labels = torch.randint(20, 50, (ids.shape[0], 4), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        logits = model(ids, torch.cat([torch.full((len(labels), 1), PAD), labels[:, :-1]], dim=1))
        ce = F.cross_entropy(logits.transpose(1, 2), labels - 20, reduction="none")  # (rows, positions)
        torch.testing.assert_close(position_losses(model, ids, labels), ce)
        torch.testing.assert_close(seq2seq_loss(model, ids, labels, 1.0), ce.mean())
        expected = (3 * ce[:, 0] + ce[:, 1:].sum(1)).mean() / 6
        torch.testing.assert_close(seq2seq_loss(model, ids, labels, 3.0), expected)


def test_recommend_decodes_longest_first_and_returns_rows_in_order():
    """Batches of similar length change nothing: each row's list is the one it gets decoded alone."""
    model = build_model(ModelParams(**TINY, end_positions=16), 50, seed=0, output_offset=20).eval()
    g = torch.Generator().manual_seed(4)
    codes = torch.stack([torch.randint(20, 30, (12,), generator=g), torch.randint(30, 40, (12,), generator=g),
                         torch.randint(40, 50, (12,), generator=g)], 1).unique(dim=0)
    trie = ItemTrie(codes)
    ids = torch.randint(2, 50, (7, 12), generator=g)
    for row, length in enumerate([3, 12, 5, 9, 1, 12, 7]):
        ids[row, length:] = PAD
    top, scores = recommend(model, trie, ids, beam=6, k=4, batch_size=3)
    for row in range(len(ids)):
        alone, alone_scores = recommend(model, trie, ids[row:row + 1], beam=6, k=4, batch_size=1)
        assert top[row].tolist() == alone[0].tolist()
        torch.testing.assert_close(scores[row], alone_scores[0], atol=1e-5, rtol=1e-5)


def test_recommend_on_worker_threads_gives_the_same_lists_and_restores_torch_threads():
    """decode_workers: batches decoded at once on threads, each op single-threaded, then torch's
    thread count is what it was, also when a batch fails."""
    model = build_model(ModelParams(**TINY, end_positions=16), 50, seed=0, output_offset=20).eval()
    g = torch.Generator().manual_seed(6)
    codes = torch.stack([torch.randint(20, 30, (30,), generator=g), torch.randint(30, 40, (30,), generator=g),
                         torch.randint(40, 50, (30,), generator=g)], 1).unique(dim=0)
    ids = torch.randint(2, 50, (9, 10), generator=g)
    torch.set_num_threads(2)  # (the module's fixture restores its own setting after the test)
    top, scores = recommend(model, ItemTrie(codes), ids, beam=6, k=4, batch_size=2, workers=1)
    top3, scores3 = recommend(model, ItemTrie(codes), ids, beam=6, k=4, batch_size=2, workers=3)
    assert top3.tolist() == top.tolist() and (top >= 0).all()
    torch.testing.assert_close(scores3, scores, atol=1e-5, rtol=1e-5)
    assert torch.get_num_threads() == 2
    with pytest.raises(ValueError, match="below the logits' first token"):
        recommend(model, ItemTrie(codes - 5), ids, beam=6, k=4, batch_size=2, workers=3)
    assert torch.get_num_threads() == 2


def test_decode_workers_auto_is_one_per_cpu_thread_and_never_more_than_the_batches():
    torch.set_num_threads(2)
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert decode_workers("auto", cpu, 100) == torch.get_num_threads()
    assert decode_workers("auto", cpu, 1) == 1
    assert decode_workers("auto", gpu, 100) == 1
    assert decode_workers(4, gpu, 3) == 3


@pytest.mark.parametrize("tie", [True, False])
def test_bfloat16_decoding_casts_a_copy_and_scores_near_float32(tie):
    """decode_dtype bfloat16: the model being trained stays float32; the copy's tied output layer
    reads the copy's own (bfloat16) embeddings; scores stay within bfloat16's precision of float32's."""
    model = build_model(ModelParams(**TINY, end_positions=16, tie_embeddings=tie), 50, seed=0, output_offset=20)
    half = decoding_copy(model, "bfloat16")
    assert decoding_copy(model, "float32") is model
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16}
    assert half.head(torch.ones(1, 32, dtype=torch.bfloat16)).dtype == torch.bfloat16
    g = torch.Generator().manual_seed(5)
    codes = torch.stack([torch.randint(20, 30, (40,), generator=g), torch.randint(30, 40, (40,), generator=g),
                         torch.randint(40, 50, (40,), generator=g)], 1).unique(dim=0)
    trie = ItemTrie(codes)
    ids = _inputs()
    top, scores = recommend(model, trie, ids, beam=8, k=5, batch_size=2)
    top16, scores16 = recommend(model, trie, ids, beam=8, k=5, batch_size=2, dtype="bfloat16")
    assert scores16.dtype == torch.float32 and (top16 >= 0).all()
    assert (top16[:, 0] == top[:, 0]).float().mean() >= 0.8  # near-ties may swap, most do not
    torch.testing.assert_close(scores16[:, 0], scores[:, 0], atol=0.1, rtol=0.02)
    assert not torch.equal(scores16, scores)  # it did run in bfloat16


@pytest.mark.parametrize("tie", [True, False])
def test_scaled_embedding_init_starts_the_output_at_unit_scale(tie):
    """`scaled`: token and distance-from-end embeddings N(0, 1/d_model), so the tied output
    layer's first logits have about unit spread; `t5` keeps T5's N(0, 1) (logits ~ d_model**0.5)."""
    d = 128
    cfg = dict(TINY, d_model=d, d_kv=32, tie_embeddings=tie, end_positions=64)
    scaled = build_model(ModelParams(**cfg, embedding_init="scaled"), 4000, seed=0)
    t5 = build_model(ModelParams(**cfg, embedding_init="t5"), 4000, seed=0)
    assert scaled.shared.weight.std().item() == pytest.approx(d ** -0.5, rel=0.02)
    assert scaled.end_positions.weight.std().item() == pytest.approx(d ** -0.5, rel=0.05)
    assert t5.shared.weight.std().item() == pytest.approx(1.0, rel=0.02)
    assert t5.end_positions.weight.std().item() == pytest.approx(1.0, rel=0.05)
    if not tie:  # an untied output layer starts as the embedding rows it replaces, whichever init drew them
        torch.testing.assert_close(scaled.lm_head.weight, scaled.shared.weight)
    ids = _inputs()
    labels = torch.randint(2, 4000, (ids.shape[0], 4), generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        spread = {name: m.eval()(ids, shift_right(labels)).std().item()
                  for name, m in (("scaled", scaled), ("t5", t5))}
    assert 0.5 < spread["scaled"] < 2.0
    assert spread["t5"] > 5 * spread["scaled"]
    # A saved model's weights are what it loads, whatever its config's init.
    again = model_from_config(scaled.config.to_dict())
    again.load_state_dict(scaled.state_dict())
    torch.testing.assert_close(again.shared.weight, scaled.shared.weight)
