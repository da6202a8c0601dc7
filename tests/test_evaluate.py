from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
import torch

from pipeline.compare import comparison
from pipeline.evaluate import evaluate_variant
from pipeline.examples import read_items
from pipeline.params import ModelParams, TrainParams
from pipeline.seq2seq import build_model
from pipeline.sequences import build_sequences
from tests.recsys_data import write_tiny_dataset


def test_comparison_table_and_relative_gain():
    m = {"recall@5": 0.1, "recall@10": 0.2, "ndcg@5": 0.05, "ndcg@10": 0.1, "mrr": 0.04}
    results = {"text": m, "image": {k: v * 2 for k, v in m.items()}, "lfpp": {k: v * 3 for k, v in m.items()},
               "sasrec": m}
    table, text = comparison(results)
    assert list(table) == ["text", "image", "lfpp", "sasrec"] and table["lfpp"]["recall@10"] == 0.6
    assert "| lfpp | 0.3000 | 0.6000 | 0.1500 | 0.3000 | 0.1200 |" in text
    assert "- recall@10: +50.0% (best unimodal: image, 0.4000)" in text


def test_evaluation_returns_real_distinct_items(tmp_path):
    torch.set_num_threads(1)
    root = write_tiny_dataset(tmp_path)
    seq = root / "seq"
    build_sequences(root / "splits.parquet", root / "semantic_ids", ["text", "image"], True, 20, 0, seq)
    from pipeline.layout import Layout
    layout = Layout.load(seq / "layout.json")
    model = build_model(ModelParams(encoder_layers=1, decoder_layers=1, d_model=16, heads=2, d_kv=8, d_ff=32),
                        layout.vocab_size, seed=0)
    torch.save({"config": model.config.to_dict(), "state_dict": model.state_dict()}, tmp_path / "m.pt")
    report = evaluate_variant(seq, tmp_path / "m.pt", TrainParams(beam=12, top_k=10, eval_batch=7),
                              per_user_out=tmp_path / "per_user.parquet")
    assert report["decoding"]["users"] == 40 and report["decoding"]["unfilled_slots"] == 0
    per_user = pl.read_parquet(tmp_path / "per_user.parquet")
    assert per_user.columns == ["user_idx", "target", "rank", "top"] and per_user.height == 40
    assert per_user["user_idx"].to_list() == pl.read_parquet(seq / "test.parquet")["user_idx"].to_list()
    assert ((per_user["rank"] > 0) & (per_user["rank"] <= 10)).mean() == pytest.approx(report["test"]["recall@10"])
    assert 0 <= report["test"]["recall@10"] <= 1 and report["test"]["mrr_depth"] == 10
    # an untrained model still only returns real items, each once per list
    from pipeline.beam import ItemTrie
    from pipeline.examples import read_examples
    from pipeline.seq2seq import recommend
    item_idx, tokens = read_items(seq)
    ex = read_examples(seq / "test.parquet")
    top, scores = recommend(model, ItemTrie(tokens, item_idx), ex.input_ids, 12, 10, 7)
    top = top.numpy()
    assert np.isin(top, item_idx).all()
    assert all(len(set(row)) == len(row) for row in top.tolist())
    assert (np.diff(scores.numpy(), axis=1) <= 1e-6).all()


def test_missing_model_is_one_line_error(tmp_path):
    from pipeline.errors import PipelineError
    with pytest.raises(PipelineError, match="model not found"):
        evaluate_variant(tmp_path, tmp_path / "nope.pt", TrainParams())


def test_a_model_saved_by_the_transformers_based_code_is_a_one_line_error(tmp_path):
    """Files written before pipeline/t5.py hold transformers' T5Config keys: retrain, not a traceback."""
    from pipeline.errors import PipelineError
    from pipeline.evaluate import load_recommender
    torch.save({"config": {"vocab_size": 50, "num_layers": 2, "num_heads": 4, "d_model": 128}, "state_dict": {}},
               tmp_path / "old.pt")
    with pytest.raises(PipelineError, match=r"old\.pt: not a pipeline.t5 model config .*num_heads.*retrain"):
        load_recommender(tmp_path / "old.pt")


def test_compare_command_prints_a_table_and_writes_markdown(tmp_path):
    from tests.test_cli import mgr
    for name, r10 in (("text", 0.2), ("image", 0.1), ("lfpp", 0.3)):
        row = {"recall@5": r10 / 2, "recall@10": r10, "ndcg@5": r10 / 4, "ndcg@10": r10 / 3, "mrr": r10 / 5}
        (tmp_path / f"eval_{name}.json").write_text(json.dumps({"test": row}))
    args = ("compare", "--names", "text,image,lfpp", "--metrics-dir", str(tmp_path),
            "--out", str(tmp_path / "eval.json"), "--report", str(tmp_path / "cmp.md"))
    res = mgr(*args)
    assert res.returncode == 0, res.stderr
    assert "┃ model" in res.stdout and "lfpp" in res.stdout and "recall@10: +50.0%" in res.stdout
    assert "| lfpp | 0.1500 | 0.3000 |" in (tmp_path / "cmp.md").read_text()
    res = mgr(*args, "--markdown")
    assert res.stdout.startswith("| variant | recall@5 |")
    res = mgr("compare", "--names", "text,nope", "--metrics-dir", str(tmp_path))
    assert res.returncode == 2 and res.stderr.strip().startswith(f"error: {tmp_path / 'eval_nope.json'}: not found")
