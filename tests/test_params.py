"""params.yaml is validated at load, with one-line errors that name the key."""
from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import PipelineError
from pipeline.params import DataParams, load_params, load_section

REPO = Path(__file__).resolve().parents[1]


def test_repo_params_yaml_is_valid():
    p = load_params(REPO / "params.yaml")
    assert p.data.min_interactions == 5 and p.data.require_image is True
    assert p.data.reviews.endswith("reviews_Synthetic_5.json.gz")


@pytest.mark.parametrize(
    "body, message",
    [
        ("data:\n  reviews: r\n  meta: m\n  min_interactions: 0\n",
         r"p.yaml: data.min_interactions: Input should be greater than or equal to 1 \(got 0\)"),
        ("data:\n  reviews: r\n  meta: m\n  min_interactons: 5\n",
         r"p.yaml: data.min_interactons: Extra inputs are not permitted"),
        ("data:\n  meta: m\n", r"p.yaml: data.reviews: Field required"),
        ("data:\n  reviews: r\n  meta: m\n  format: '2016'\n", r"p.yaml: data.format: Input should be 'auto'"),
        ("data:\n  reviews: r\n  meta: m\n  require_image: maybe\n", r"p.yaml: data.require_image: Input should be a valid boolean"),
        ("data:\n  reviews: r\n  meta: m\nrecommender:\n  train:\n    decode_workers: 0\n",
         r"p.yaml: recommender.train.decode_workers: Value error, must be an integer >= 1 or auto \(got 0\)"),
        ("data:\n  reviews: r\n  meta: m\nquantize:\n  image:\n    dtype: float16\n",
         r"p.yaml: quantize.image.dtype: Input should be 'auto', 'float32' or 'bfloat16'"),
        ("data: [1, 2\n", r"p.yaml: not valid YAML \(line 2\)"),
        ("- just\n- a list\n", r"p.yaml: expected a mapping"),
    ],
)
def test_bad_params_name_the_key(tmp_path, body, message):
    path = tmp_path / "p.yaml"
    path.write_text(body)
    with pytest.raises(PipelineError, match=message) as err:
        load_params(path)
    assert "\n" not in str(err.value)


def test_section_with_overrides(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("data:\n  reviews: r\n  meta: m\n  min_interactions: 5\n")
    cfg = load_section(path, "data", DataParams, {"min_interactions": 3, "meta": None})
    assert (cfg.reviews, cfg.meta, cfg.min_interactions) == ("r", "m", 3)
    with pytest.raises(PipelineError, match=r"p.yaml: data.min_interactions: Input should be a valid integer"):
        load_section(path, "data", DataParams, {"min_interactions": "many"})
    with pytest.raises(PipelineError, match=r"command line: data.reviews: Field required"):
        load_section(None, "data", DataParams, {"meta": "m"})
    with pytest.raises(PipelineError, match=r"nope.yaml: params file not found"):
        load_params(tmp_path / "nope.yaml")
