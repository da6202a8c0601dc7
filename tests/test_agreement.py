"""Cross-modal agreement (AMI) between semantic IDs, on hand-built code assignments."""
from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from pipeline.agreement import modality_agreement
from pipeline.errors import PipelineError
from pipeline.semantic_ids import read_ids
from stages.agreement import agreement

N = 600


def ids_frame(c1, c2=None, order=None) -> pl.DataFrame:
    rng = np.random.default_rng(1)
    c2 = rng.integers(0, 4, N) if c2 is None else c2
    frame = pl.DataFrame({"item_idx": np.arange(N, dtype=np.int32), "item_id": [f"A{i:04d}" for i in range(N)],
                          "code_1": c1, "code_2": c2, "code_3": np.zeros(N, int), "dedup": np.zeros(N, int)})
    return frame if order is None else frame[order]


@pytest.fixture
def codes():
    rng = np.random.default_rng(0)
    text, image = rng.integers(0, 8, N), rng.integers(0, 8, N)
    fused = text * 2 + rng.integers(0, 2, N)  # fused codes refine the text codes: text dominates
    return text, image, fused


def test_independent_modalities_score_near_zero_and_dominance_is_named(codes):
    text, image, fused = codes
    rep = modality_agreement({"image": ids_frame(image), "fused": ids_frame(fused), "text": ids_frame(text)})
    assert rep["modalities"] == ["text", "image", "fused"]
    assert abs(rep["level_1"]["text~image"]) < 0.05
    assert rep["level_1"]["text~fused"] > 0.7 and abs(rep["level_1"]["image~fused"]) < 0.05
    assert rep["fused_dominated_by"] == "text"
    assert set(rep["levels_1_2"]) == {"text~image", "text~fused", "image~fused"}


def test_items_are_matched_by_id_not_by_row_order(codes):
    text, _, _ = codes
    shuffled = ids_frame(text, order=np.random.default_rng(2).permutation(N))
    rep = modality_agreement({"text": ids_frame(text), "image": shuffled})
    assert rep["level_1"]["text~image"] == 1.0 and rep["items"] == N


def test_ground_truth_labels_score_each_modality(codes):
    text, image, _ = codes
    truth = pl.DataFrame({"asin": [f"A{i:04d}" for i in range(N)], "type": text, "style": image})
    rep = modality_agreement({"text": ids_frame(text), "image": ids_frame(image)}, truth)
    assert rep["ground_truth"]["text"]["type"] == 1.0 and abs(rep["ground_truth"]["text"]["style"]) < 0.05
    assert rep["ground_truth"]["image"]["style"] == 1.0


def test_stage_writes_report_and_names_missing_files(tmp_path, codes):
    text, image, fused = codes
    ids_dir = tmp_path / "ids"
    ids_dir.mkdir()
    for name, c in (("text", text), ("image", image), ("fused", fused)):
        ids_frame(c).write_parquet(ids_dir / f"{name}.parquet")
    (tmp_path / "params.yaml").write_text("agreement:\n  ground_truth: null\n")
    agreement(params=tmp_path / "params.yaml", ids_dir=ids_dir, modalities="text,image,fused",
              out=tmp_path / "m.json", usage_dir=tmp_path / "usage")
    assert json.loads((tmp_path / "m.json").read_text())["fused_dominated_by"] == "text"
    assert sorted(p.name for p in (tmp_path / "usage").iterdir()) == ["fused.csv", "image.csv", "text.csv"]
    assert (tmp_path / "usage" / "text.csv").read_text().startswith("level,codes_used,entropy_bits\n1,")
    with pytest.raises(PipelineError, match="nope.parquet: semantic IDs not found"):
        read_ids(ids_dir / "nope.parquet")
    (tmp_path / "params.yaml").write_text("agreement:\n  ground_truth: missing.csv\n")
    with pytest.raises(PipelineError, match="agreement.ground_truth: missing.csv"):
        agreement(params=tmp_path / "params.yaml", ids_dir=ids_dir, modalities="text,image", out=tmp_path / "m.json",
                  usage_dir=None)
