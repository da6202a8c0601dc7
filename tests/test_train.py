from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pipeline.params import AlignParams, ModelParams, RecommenderParams, TrainParams, VariantParams
from pipeline.layout import Layout
from pipeline.seq2seq import build_model, info_nce, model_from_config, seq2seq_loss
from pipeline.sequences import build_sequences
from pipeline.examples import pad_lists
from pipeline.train import Trainer, alignment_pairs, batch_order, lr_factor, train_variant, trimmed
from tests.recsys_data import write_tiny_dataset

TINY = ModelParams(encoder_layers=1, decoder_layers=1, d_model=32, heads=2, d_kv=16, d_ff=64, dropout=0.1)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def seqs(tmp_path_factory):
    root = write_tiny_dataset(tmp_path_factory.mktemp("recsys"))
    out = {}
    for name, mods, transition in [("text", ["text"], False), ("lfpp", ["text", "image"], True)]:
        out[name] = root / "seq" / name
        build_sequences(root / "splits.parquet", root / "semantic_ids", mods, transition, 20, 0, out[name])
    return out


def rec(**train) -> RecommenderParams:
    base = dict(batch_size=16, lr=3e-3, warmup_steps=5, max_epochs=3, patience=5, beam=10, top_k=10,
                eval_batch=16, checkpoint_every=7)
    return RecommenderParams(model=TINY, train=TrainParams(**{**base, **train}))


LFPP = VariantParams(modalities=["text", "image"], transition=True,
                     align=AlignParams(epochs=2, lr=3e-3, contrastive_weight=0.5))


def test_pad_lists_and_bucketed_batches_cover_every_example_once():
    import polars as pl
    padded = pad_lists(pl.Series([[3, 4], [5], [], [6, 7, 8]]))
    assert padded.tolist() == [[3, 4, 0], [5, 0, 0], [0, 0, 0], [6, 7, 8]]
    lengths = torch.randint(1, 50, (1000,), generator=torch.Generator().manual_seed(0))
    batches = batch_order(lengths, 10, torch.Generator().manual_seed(1))
    assert sorted(torch.cat(batches).tolist()) == list(range(1000))
    spread = np.mean([float(lengths[b].max() - lengths[b].min()) for b in batches])
    assert spread < 5  # sorted within windows: little padding per batch (random batches: ~40)


def test_lr_schedules():
    cfg = TrainParams(lr=1.0, warmup_steps=10, schedule="inverse_sqrt")
    f = lr_factor(cfg, 100)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0) and f(39) == pytest.approx(0.5)
    cos = lr_factor(TrainParams(lr=1.0, warmup_steps=10, schedule="cosine"), 110)
    assert cos(9) == pytest.approx(1.0) and cos(109) == pytest.approx(0.0, abs=1e-6)


def test_info_nce_prefers_matching_pairs():
    a = torch.randn(8, 16, generator=torch.Generator().manual_seed(0))
    assert info_nce(a, a, 0.1) < info_nce(a, a.roll(1, 0), 0.1)


def test_training_learns_the_cycle(seqs, tmp_path):
    report = train_variant(seqs["text"], VariantParams(modalities=["text"]), rec(max_epochs=25, lr=1e-2),
                           tmp_path / "m.pt", tmp_path / "m.json", tmp_path / "live", tmp_path / "work")
    # 24 items, top 10: a model that learned nothing finds the next item ~40% of the time
    assert report["valid"]["recall@10"] >= 0.8
    written = json.loads((tmp_path / "m.json").read_text())
    assert written["valid"] == report["valid"] and written["train"]["best_epoch"] >= 1
    assert (tmp_path / "live" / "plots" / "metrics" / "valid" / "ndcg@10.tsv").is_file()
    saved = torch.load(tmp_path / "m.pt", weights_only=True)
    assert set(saved) == {"config", "state_dict"}


def test_bfloat16_training_learns_with_float32_weights(seqs, tmp_path):
    """train_dtype bfloat16: the forward runs under autocast (the loss differs from float32's in
    bfloat16's precision), weights and optimizer state stay float32, and the model still learns."""
    cfg = rec(max_epochs=25, lr=1e-2)
    half = Trainer(seqs["text"], VariantParams(modalities=["text"]),
                   cfg.model_copy(update={"train": cfg.train.model_copy(update={"train_dtype": "bfloat16"})}),
                   None, None)
    full = Trainer(seqs["text"], VariantParams(modalities=["text"]), cfg, None, None)
    ids, labels = half.train.input_ids[:16], half.train.labels[:16]
    with torch.no_grad():
        l16, l32 = half.objective("train", ids, labels), full.objective("train", ids, labels)
    assert l16.dtype == torch.float32 and l16 != l32 and abs(float(l16 - l32)) < 0.05 * float(l32)
    half.run()
    assert {p.dtype for p in half.model.parameters()} == {torch.float32}
    assert all(s["exp_avg"].dtype == torch.float32 for s in half.opt.state.values())
    assert max(h["valid/recall@10"] for h in half.tracker.history if "valid/recall@10" in h) >= 0.8


def _run(seq_dir, work, live, stop_after=None):
    trainer = Trainer(seq_dir, LFPP, rec(), work / "last.pt", live)
    finished = trainer.run(stop_after)
    return trainer, finished


def test_killed_run_resumes_to_the_same_result(seqs, tmp_path):
    """Stopped mid-alignment and mid-epoch (between checkpoints): same weights and curves."""
    full, done = _run(seqs["lfpp"], tmp_path / "a", tmp_path / "live_a")
    assert done and any("align/loss" in h for h in full.tracker.history)
    steps = []
    for budget in (3, 12, 9):  # the loop saves when a budget ends, as a kill after a checkpoint would
        part, done = _run(seqs["lfpp"], tmp_path / "b", tmp_path / "live_b", stop_after=budget)
        steps.append(part.state["step"])
        assert not done
    resumed, done = _run(seqs["lfpp"], tmp_path / "b", tmp_path / "live_b")
    assert done and steps == [3, 15, 24]
    assert resumed.tracker.history == full.tracker.history
    for k, v in full.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    assert (tmp_path / "live_b" / "plots" / "metrics" / "train" / "loss.tsv").read_text() == \
        (tmp_path / "live_a" / "plots" / "metrics" / "train" / "loss.tsv").read_text()


def test_finished_run_is_not_retrained(seqs, tmp_path):
    first, _ = _run(seqs["lfpp"], tmp_path / "w", None)
    again = Trainer(seqs["lfpp"], LFPP, rec(), tmp_path / "w" / "last.pt", None)
    assert again.state["done"] and again.state["step"] == first.state["step"]
    assert again.run() is True and again.state["step"] == first.state["step"]


def _losses(trainer):
    return [h[k] for h in trainer.tracker.history for k in sorted(h) if "loss" in k]


needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")


@needs_gpu
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_training_on_a_gpu_learns_and_its_model_decodes_on_the_cpu(seqs, tmp_path, monkeypatch, dtype):
    """MGR_DEVICE=cuda: alignment and training on the GPU (bfloat16: under autocast), weights saved
    as CPU tensors; decoded on the CPU in float32, the model ranks as it did on the GPU."""
    from pipeline.evaluate import evaluate_variant
    monkeypatch.setenv("MGR_DEVICE", "cuda")
    cfg = rec(max_epochs=25, lr=1e-2, train_dtype=dtype, decode_dtype=dtype)
    report = train_variant(seqs["lfpp"], LFPP, cfg, tmp_path / "m.pt", tmp_path / "m.json", None, tmp_path / "w")
    assert report["train"]["dtype"] == dtype and report["valid"]["recall@10"] >= 0.8
    saved = torch.load(tmp_path / "m.pt", weights_only=True)
    assert {v.device.type for v in saved["state_dict"].values()} == {"cpu"}
    monkeypatch.setenv("MGR_DEVICE", "cpu")
    on_cpu = evaluate_variant(seqs["lfpp"], tmp_path / "m.pt", cfg.train.model_copy(update={"decode_dtype": "float32"}),
                              "valid")
    assert on_cpu["valid"]["recall@10"] == pytest.approx(report["valid"]["recall@10"], abs=0.05)


@needs_gpu
def test_killed_run_on_a_gpu_resumes_to_the_same_result(seqs, tmp_path, monkeypatch):
    """The GPU's dropout generator is checkpointed too; its kernels (atomic adds in the embedding
    gradients) are not bit-reproducible, so the comparison has a tolerance."""
    monkeypatch.setenv("MGR_DEVICE", "cuda")
    full, _ = _run(seqs["lfpp"], tmp_path / "a", None)
    for budget in (3, 12):
        _run(seqs["lfpp"], tmp_path / "b", None, stop_after=budget)
    resumed, done = _run(seqs["lfpp"], tmp_path / "b", None)
    assert done and resumed.state["step"] == full.state["step"]
    assert len(_losses(full)) == 5 and _losses(resumed) == pytest.approx(_losses(full), rel=1e-3)
    for k, v in full.model.state_dict().items():
        torch.testing.assert_close(v, resumed.model.state_dict()[k], atol=1e-3, rtol=1e-3)


def test_alignment_phase_lowers_translation_loss(seqs):
    trainer = Trainer(seqs["lfpp"], LFPP.model_copy(update={"align": AlignParams(epochs=15, lr=1e-2)}),
                      rec(max_epochs=1), None, None)
    trainer.run()
    align = [h["align/loss"] for h in trainer.tracker.history if "align/loss" in h]
    assert len(align) == 15 and align[-1] < 0.5 * align[0]


def test_model_is_built_from_config_without_pretrained_weights():
    model = build_model(TINY, vocab_size=50, seed=0)
    again = build_model(TINY, vocab_size=50, seed=0)
    assert model.config.vocab_size == 50 and model.config.encoder_layers == 1
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), again.parameters()))


@pytest.mark.parametrize("tie", [True, False])
def test_item_output_trains_a_head_over_item_tokens_only(seqs, tmp_path, tie):
    params = RecommenderParams(model=TINY.model_copy(update={"item_output": True, "tie_embeddings": tie}),
                               train=rec(max_epochs=1).train)
    report = train_variant(seqs["text"], VariantParams(modalities=["text"]), params, tmp_path / "m.pt",
                           tmp_path / "m.json", None, tmp_path / "work")
    first = Layout.load(seqs["text"] / "layout.json").first_item_token
    saved = torch.load(tmp_path / "m.pt", weights_only=True)
    assert saved["config"]["output_offset"] == first > 0 and saved["config"]["tie_embeddings"] == tie
    model = model_from_config(saved["config"])
    model.load_state_dict(saved["state_dict"])
    assert model.head(torch.zeros(1, 32)).shape == (1, model.config.vocab_size - first)
    assert 0 <= report["valid"]["recall@10"] <= 1


def test_first_code_weight_reaches_the_next_item_loss_not_the_alignment(seqs):
    plain, weighted = (Trainer(seqs["lfpp"], LFPP, rec(max_epochs=1, first_code_weight=w), None, None) for w in (1.0, 3.0))
    a, b = plain.train.input_ids[:8], plain.train.labels[:8]
    first, second = alignment_pairs(plain.layout, plain.tokens[:8])
    for trainer in (plain, weighted):
        trainer.objective.eval()  # no dropout: the same seeded weights give the same logits
    with torch.no_grad():
        expected = seq2seq_loss(weighted.model, trimmed(a), b, 3.0)
        assert weighted.objective("train", a, b) == expected != plain.objective("train", a, b)
        assert weighted.objective("align", first, second) == plain.objective("align", first, second)
