"""`mgr inspect`: summaries of Parquet, semantic IDs, folders, JSON and checkpoints; clear errors."""
from __future__ import annotations

import json

import polars as pl
import pytest
import torch

from pipeline.errors import PipelineError
from pipeline.summary import summarize
from tests.test_cli import mgr


def _ids(path):
    pl.DataFrame({"item_idx": [0, 1, 2, 3], "item_id": ["A", "B", "C", "D"],
                  "code_1": [0, 0, 0, 1], "code_2": [5, 5, 6, 7]}).write_parquet(path)
    return path


def test_semantic_ids_get_code_usage(tmp_path):
    s = summarize(_ids(tmp_path / "text.parquet"), rows=2)
    assert s["rows"] == 4 and s["schema"]["code_1"] == "Int64" and s["head"].height == 2
    first = s["codes"]["levels"]["code_1"]
    assert first["used"] == 2 and first["top_share"] == 0.75
    assert first["entropy_bits"] == pytest.approx(0.811, abs=1e-3)  # -(.75 log .75 + .25 log .25)
    assert s["codes"]["distinct_tuples"] == 3 and s["codes"]["items_sharing_a_tuple"] == 2
    assert s["codes"]["max_items_per_tuple"] == 2


def test_plain_parquet_has_no_code_section(tmp_path):
    pl.DataFrame({"x": [1, 2]}).write_parquet(tmp_path / "x.parquet")
    assert "codes" not in summarize(tmp_path / "x.parquet")


def test_folder_lists_files_with_rows(tmp_path):
    _ids(tmp_path / "a.parquet")
    (tmp_path / "r.json").write_text('{"k": 1}')
    files = {f["file"].rsplit("/", 1)[1]: f for f in summarize(tmp_path)["files"]}
    assert files["a.parquet"]["rows"] == 4 and "rows" not in files["r.json"]


def test_json_and_checkpoint(tmp_path):
    (tmp_path / "m.json").write_text('{"recall@10": 0.5}')
    assert summarize(tmp_path / "m.json")["content"] == {"recall@10": 0.5}
    shared = torch.zeros(3, 4)
    torch.save({"config": {"d_model": 4}, "state_dict": {"a": shared, "tied": shared, "b": torch.zeros(5)}},
               tmp_path / "m.pt")
    s = summarize(tmp_path / "m.pt")
    assert s["keys"] == ["config", "state_dict"] and s["config"] == {"d_model": 4}
    assert s["parameters"] == 12 + 5  # the tied tensor counts once


def test_errors_name_the_file(tmp_path):
    with pytest.raises(PipelineError, match="no such file"):
        summarize(tmp_path / "missing.parquet")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(PipelineError, match="bad.json: not valid JSON"):
        summarize(tmp_path / "bad.json")
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(PipelineError, match="bad.parquet: not a readable Parquet file"):
        summarize(tmp_path / "bad.parquet")
    (tmp_path / "x.csv").write_text("a\n")
    with pytest.raises(PipelineError, match="don't know how to inspect .csv"):
        summarize(tmp_path / "x.csv")


def test_cli_json(tmp_path):
    res = mgr("inspect", str(_ids(tmp_path / "text.parquet")), "--format", "json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["rows"] == 4 and out["head"][0]["item_id"] == "A"
    res = mgr("inspect", str(tmp_path / "nope.parquet"))
    assert res.returncode == 2 and res.stderr.strip() == f"error: {tmp_path / 'nope.parquet'}: no such file or folder"
