"""`mgr recommend`: real, distinct, ranked items for a history or a user; clear errors otherwise."""
from __future__ import annotations

import json

import polars as pl
import pytest
import torch

from pipeline.errors import PipelineError
from pipeline.layout import Layout
from pipeline.params import ModelParams
from pipeline.recommend import Recommender, user_history
from pipeline.seq2seq import build_model
from pipeline.sequences import build_sequences
from tests.recsys_data import write_tiny_dataset
from tests.test_cli import mgr

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A project folder as `dvc repro` leaves it, for the lfpp layout, with an untrained model."""
    root = write_tiny_dataset(tmp_path_factory.mktemp("rec"))
    build_sequences(root / "splits.parquet", root / "semantic_ids", ["text", "image"], True, 20, 16,
                    root / "data/sequences/lfpp")
    pl.DataFrame({"item_idx": pl.Series(range(24), dtype=pl.Int32), "item_id": [f"I{i:04d}" for i in range(24)],
                  "title": [f"Item {i}" for i in range(24)]}).write_parquet(root / "items.parquet")
    layout = Layout.load(root / "data/sequences/lfpp/layout.json")
    model = build_model(ModelParams(encoder_layers=1, decoder_layers=1, d_model=16, heads=2, d_kv=8, d_ff=32),
                        layout.vocab_size, seed=0)
    (root / "models/recommender").mkdir(parents=True)
    torch.save({"config": model.config.to_dict(), "state_dict": model.state_dict()},
               root / "models/recommender/lfpp.pt")
    (root / "params.yaml").write_text("recommender:\n  train:\n    beam: 12\n    top_k: 10\n")
    return root


def _load(root):
    return Recommender.load(root / "data/sequences/lfpp", root / "models/recommender/lfpp.pt", root / "items.parquet")


def test_history_gives_real_distinct_items_best_first(project):
    r = _load(project)
    top = r.recommend(r.item_indices(["I0003", "I0004", "I0005"]), k=8, beam=12)
    assert top["rank"].to_list() == list(range(1, 9))
    assert top["item_id"].n_unique() == 8 and top["item_id"].is_in([f"I{i:04d}" for i in range(24)]).all()
    assert top["title"].to_list() == [f"Item {int(a[1:])}" for a in top["item_id"]]
    scores = top["score"].to_list()
    assert scores == sorted(scores, reverse=True) and all(s <= 0 for s in scores)


def test_decode_dtype_reaches_the_decoder(project):
    """bfloat16 decodes a cast copy: real items, scores within bfloat16's precision of float32's."""
    r = _load(project)
    hist = r.item_indices(["I0003", "I0004", "I0005"])
    ref = r.recommend(hist, k=24, beam=24)
    half = r.recommend(hist, k=24, beam=24, dtype="bfloat16")
    assert set(half["item_id"]) == set(ref["item_id"])  # all 24 items, in some order
    by_item = dict(zip(ref["item_id"], ref["score"]))
    diffs = [abs(s - by_item[i]) for i, s in zip(half["item_id"], half["score"])]
    assert 0 < max(diffs) < 0.05 * max(abs(s) for s in by_item.values())
    assert next(r.model.parameters()).dtype == torch.float32


def test_exclude_seen_drops_the_history_and_still_fills_k(project):
    r = _load(project)
    everything = r.recommend(r.item_indices(["I0001"]), k=24, beam=24)["item_id"].to_list()
    history = everything[:3]  # the model's own favourites, so excluding them must change the list
    top = r.recommend(r.item_indices(history), k=8, beam=12, exclude_seen=True)
    assert top.height == 8 and not set(top["item_id"]) & set(history)


def test_user_history_and_the_user_token(project):
    splits = pl.read_parquet(project / "splits.parquet")
    row = splits.row(3, named=True)
    user_idx, hist = user_history(project / "splits.parquet", row["user_id"])
    assert user_idx == row["user_idx"] and hist == [*row["train"], row["valid"], row["test"]]
    r = _load(project)
    with_user = r.recommend(hist, k=5, beam=12, user_idx=user_idx)
    assert with_user.height == 5
    with pytest.raises(PipelineError, match="unknown user 'nobody'"):
        user_history(project / "splits.parquet", "nobody")


def test_unknown_asin_is_named(project):
    with pytest.raises(PipelineError, match="unknown ASIN\\(s\\): B000NOPE"):
        _load(project).item_indices(["I0001", "B000NOPE"])


def test_cli_json_and_one_line_errors(project):
    args = ("recommend", "--variant", "lfpp", "--items", "items.parquet", "--splits", "splits.parquet")
    res = mgr(*args, "--history", "I0001,I0002", "-k", "4", "--format", "json", cwd=project)
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout)
    assert [r["rank"] for r in rows] == [1, 2, 3, 4] and all(r["item_id"].startswith("I") for r in rows)
    res = mgr(*args, "--history", "I0001,NOPE", cwd=project)
    assert res.returncode == 2 and res.stderr.strip().startswith("error: unknown ASIN(s): NOPE")
    assert "Traceback" not in res.stderr
    res = mgr(*args, "--user", "U003", cwd=project)
    assert res.returncode == 0 and "I0" in res.stdout
