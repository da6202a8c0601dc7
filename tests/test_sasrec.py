"""SASRec baseline: padding, learning a pattern, determinism, resume, the stage and its errors."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
import yaml

from pipeline import sasrec
from pipeline.errors import PipelineError
from pipeline.sasrec import (SASRec, SASRecConfig, SASRecParams, fingerprint, left_pad, load_sasrec, read_splits,
                             run_sasrec, train_sasrec)
from stages.sasrec import sasrec as sasrec_stage

N_USERS, N_ITEMS = 60, 30


pytestmark = pytest.mark.usefixtures("one_thread")


def write_data(root: Path, seed: int = 0) -> tuple[Path, Path]:
    """Users walk the items in a cycle, i -> i + 1 mod 30, from a random start: the next item is learnable."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(N_USERS):
        start, length = int(rng.integers(N_ITEMS)), int(rng.integers(5, 12))
        seq = [(start + j) % N_ITEMS for j in range(length)]
        rows.append({"user_idx": u, "user_id": f"u{u}", "train": seq[:-2], "valid": seq[-2], "test": seq[-1]})
    splits = pl.DataFrame(rows, schema={"user_idx": pl.Int32, "user_id": pl.String, "train": pl.List(pl.Int32),
                                        "valid": pl.Int32, "test": pl.Int32})
    items = pl.DataFrame({"item_idx": pl.Series(range(N_ITEMS), dtype=pl.Int32),
                          "item_id": [f"i{i}" for i in range(N_ITEMS)]})
    root.mkdir(parents=True, exist_ok=True)
    splits.write_parquet(root / "splits.parquet")
    items.write_parquet(root / "items.parquet")
    return root / "splits.parquet", root / "items.parquet"


def small(**kw) -> SASRecParams:
    base = dict(hidden=16, blocks=1, heads=2, dropout=0.1, max_len=6, lr=1e-2, batch_size=16, epochs=40,
                patience=5, seed=0)
    return SASRecParams(**{**base, **kw})


def run(tmp: Path, data: tuple[Path, Path], cfg: SASRecParams, work: str = "work", **kw) -> tuple[dict | None, Path]:
    out = tmp / f"out-{work}"
    metrics = run_sasrec(*data, cfg, out / "model.pt", out / "metrics.json", out / "live", tmp / work,
                         progress=False, **kw)
    return metrics, out


def without_seconds(metrics: dict) -> dict:
    return {**metrics, "train": {k: v for k, v in metrics["train"].items() if k != "seconds"}}


def curve(live: Path, name: str) -> list[tuple[str, str]]:
    """(step, value) rows of a DVCLive curve, without its timestamps."""
    lines = (live / "plots" / "metrics" / f"{name}.tsv").read_text().splitlines()
    header = lines[0].split("\t")
    step, value = header.index("step"), header.index(name.split("/")[-1])
    return [(row.split("\t")[step], row.split("\t")[value]) for row in lines[1:]]


def test_left_pad_keeps_the_last_items_right_aligned():
    lists = pl.Series([[4, 5, 6, 7], [1], [2, 3]], dtype=pl.List(pl.Int32))
    assert left_pad(lists, 3).tolist() == [[6, 7, 8], [0, 0, 2], [0, 3, 4]]


def test_read_splits_inputs_and_targets(tmp_path):
    splits, items = write_data(tmp_path)
    data = read_splits(splits, items, max_len=4)
    df = pl.read_parquet(splits)
    first = df.row(0, named=True)
    assert data.n_items == N_ITEMS
    assert data.valid_input[0].tolist() == [0] * (4 - len(first["train"][-4:])) + [i + 1 for i in first["train"][-4:]]
    assert data.test_input[0, -1].item() == first["valid"] + 1
    assert data.valid_target[0] == first["valid"] and data.test_target[0] == first["test"]
    assert data.train.shape == (N_USERS, 5)


def test_pad_positions_do_not_change_the_outputs():
    torch.manual_seed(0)
    model = SASRec(SASRecConfig(n_items=10, hidden=8, blocks=2, heads=2, dropout=0.0, max_len=5)).eval()
    short = torch.tensor([[3, 4, 5]])
    padded = torch.tensor([[0, 0, 3, 4, 5]])
    with torch.no_grad():
        h_short, h_padded = model(short), model(padded)
    assert torch.isfinite(h_padded).all()
    torch.testing.assert_close(h_short, h_padded[:, 2:])


def test_learns_the_next_item_and_writes_its_outputs(tmp_path):
    data = write_data(tmp_path / "data")
    metrics, out = run(tmp_path, data, small())
    # Random ranking would put the target in the top 10 of 30 a third of the time.
    assert metrics["valid"]["recall@10"] > 0.8
    assert metrics["test"]["recall@10"] > 0.8
    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert set(metrics) == {"valid", "test", "train"}
    assert metrics["valid"]["mrr_depth"] == 20
    assert 1 <= metrics["train"]["best_epoch"] <= metrics["train"]["epochs"] <= 40
    model = load_sasrec(out / "model.pt")
    assert metrics["train"]["parameters"] == sum(p.numel() for p in model.parameters())
    assert torch.load(out / "model.pt", weights_only=True)["config"]["n_items"] == N_ITEMS
    assert len(curve(out / "live", "train/loss")) == metrics["train"]["epochs"]
    assert len(curve(out / "live", "valid/ndcg@10")) == metrics["train"]["epochs"]


def test_same_params_same_results(tmp_path):
    data = write_data(tmp_path / "data")
    cfg = small(epochs=6)
    first, out_a = run(tmp_path, data, cfg, work="a")
    second, out_b = run(tmp_path, data, cfg, work="b")
    assert without_seconds(first) == without_seconds(second)
    a = torch.load(out_a / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(out_b / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resumed_run_equals_an_uninterrupted_one(tmp_path, monkeypatch):
    data = write_data(tmp_path / "data")
    cfg = small(epochs=7, patience=3, eval_every=2)  # dropout > 0: the RNG states must come back too
    whole, out_whole = run(tmp_path, data, cfg, work="whole")
    assert whole["train"]["epochs"] == 7

    assert run(tmp_path, data, cfg, work="killed", stop_after=2)[0] is None
    (ckpt,) = (tmp_path / "killed").glob("sasrec-*/last.pt")
    assert torch.load(ckpt, weights_only=True)["epoch"] == 2
    assert not (tmp_path / "out-killed" / "metrics.json").exists()
    epochs_run = []
    real_epoch = sasrec.train_epoch
    monkeypatch.setattr(sasrec, "train_epoch", lambda *a: epochs_run.append(1) or real_epoch(*a))
    resumed, out_resumed = run(tmp_path, data, cfg, work="killed")
    assert len(epochs_run) == 5  # epochs 3..7 only: it did resume

    assert without_seconds(resumed) == without_seconds(whole)
    a = torch.load(out_whole / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(out_resumed / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    for name in ("train/loss", "valid/ndcg@10"):
        assert curve(out_resumed / "live", name) == curve(out_whole / "live", name)
    # A finished checkpoint is not trained further: a rerun only tests and writes again.
    again, _ = run(tmp_path, data, cfg, work="killed")
    assert without_seconds(again) == without_seconds(whole) and len(epochs_run) == 5


def test_changed_params_or_data_never_resume(tmp_path):
    splits, _ = write_data(tmp_path / "a", seed=0)
    other, _ = write_data(tmp_path / "b", seed=1)
    base = fingerprint(small(), splits, N_ITEMS)
    assert base == fingerprint(small(), splits, N_ITEMS)
    assert base != fingerprint(small(lr=2e-2), splits, N_ITEMS)
    assert base != fingerprint(small(), other, N_ITEMS)
    assert base != fingerprint(small(), splits, N_ITEMS + 1)


def test_stop_after_leaves_the_global_rng_alone(tmp_path):
    data = read_splits(*write_data(tmp_path), max_len=6)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    assert train_sasrec(data, small(), stop_after=1) is None
    assert torch.equal(torch.rand(3), expected)


def write_params(path: Path, section: dict) -> Path:
    path.write_text(yaml.safe_dump({"sasrec": section}))
    return path


def stage(tmp_path: Path, params: Path, splits: Path, items: Path) -> None:
    sasrec_stage(params=params, splits=splits, items=items, model=tmp_path / "m.pt", metrics=tmp_path / "m.json",
                 live=tmp_path / "live", work_dir=tmp_path / "work", progress=False, curve=tmp_path / "curve.csv")


def test_a_model_file_from_other_code_is_a_one_line_error(tmp_path):
    """A config SASRecConfig does not know (another version's file) names the file, no traceback."""
    from pipeline.errors import PipelineError
    torch.save({"config": {"hidden": 16, "num_blocks": 2}, "state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(PipelineError, match=r"other\.pt: .*num_blocks"):
        load_sasrec(tmp_path / "other.pt")
    with pytest.raises(PipelineError, match=r"nope\.pt: SASRec checkpoint not found"):
        load_sasrec(tmp_path / "nope.pt")


def test_stage_reads_its_params_section(tmp_path):
    splits, items = write_data(tmp_path / "data")
    params = write_params(tmp_path / "params.yaml", small(epochs=2).model_dump())
    stage(tmp_path, params, splits, items)
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["train"]["epochs"] == 2
    assert load_sasrec(tmp_path / "m.pt").cfg.hidden == 16
    curve = (tmp_path / "curve.csv").read_text().splitlines()
    assert curve[0] == "k,recall" and len(curve) == 1 + metrics["test"]["mrr_depth"]
    assert float(curve[10].split(",")[1]) == pytest.approx(metrics["test"]["recall@10"], abs=1e-5)


@pytest.mark.parametrize("section, key", [
    ({"hidden": 0}, "sasrec.hidden"),
    ({"dropout": 1.5}, "sasrec.dropout"),
    ({"select_on": "mrr"}, "sasrec.select_on"),
    ({"top_k": 5}, "sasrec.top_k"),
    ({"hiden": 64}, "sasrec.hiden"),
])
def test_bad_params_name_the_key(tmp_path, section, key):
    splits, items = write_data(tmp_path / "data")
    params = write_params(tmp_path / "params.yaml", section)
    with pytest.raises(PipelineError) as err:
        stage(tmp_path, params, splits, items)
    msg = str(err.value)
    assert msg.startswith(f"{params}: {key}:") and "\n" not in msg


def test_heads_must_divide_hidden(tmp_path):
    splits, items = write_data(tmp_path / "data")
    with pytest.raises(PipelineError, match="sasrec.heads"):
        run(tmp_path, (splits, items), small(hidden=16, heads=3))


@pytest.mark.parametrize("column", ["train", "valid", "test"])
def test_missing_column_names_file_and_column(tmp_path, column):
    splits, items = write_data(tmp_path / "data")
    pl.read_parquet(splits).drop(column).write_parquet(splits)
    with pytest.raises(PipelineError) as err:
        run(tmp_path, (splits, items), small())
    assert str(err.value) == f"{splits}: missing column {column!r}"


def test_missing_files_and_bad_item_indices(tmp_path):
    splits, items = write_data(tmp_path / "data")
    with pytest.raises(PipelineError, match="not found"):
        run(tmp_path, (tmp_path / "nope.parquet", items), small())
    pl.DataFrame({"item_id": ["a"]}).write_parquet(tmp_path / "no_idx.parquet")
    with pytest.raises(PipelineError, match="missing column 'item_idx'"):
        run(tmp_path, (splits, tmp_path / "no_idx.parquet"), small())
    pl.read_parquet(splits).with_columns(test=pl.lit(N_ITEMS, dtype=pl.Int32)).write_parquet(splits)
    with pytest.raises(PipelineError, match="'test' has item_idx outside 0..29"):
        run(tmp_path, (splits, items), small())
