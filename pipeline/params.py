"""Typed, validated `params.yaml`.

Every section is a pydantic model with `extra="forbid"`, so a typo in a key is an error
that names it instead of a silently ignored setting. Errors come out as one line:
`params.yaml: data.min_interactions: Input should be greater than or equal to 1 (got 0)`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from pipeline.errors import PipelineError
from pipeline.synthetic import SyntheticConfig

AmazonFormat = Literal["auto", "2014", "2018", "2023"]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataParams(Section):
    """Which raw Amazon files the pipeline ingests, and how they are filtered."""

    reviews: str
    meta: str
    # Folder of `<asin>.<ext>` images; None (command line only) downloads them into image_cache.
    images_dir: str | None = None
    image_cache: str = "data/image_cache"
    format: AmazonFormat = "auto"
    min_interactions: int = Field(5, ge=1)
    require_image: bool = True
    download_workers: int = Field(8, ge=1, le=64)


class Params(Section):
    generate: SyntheticConfig = SyntheticConfig()  # the embedded dataset (pipeline/synthetic.py)
    data: DataParams


def _one_line(err: ValidationError, source: str) -> str:
    first = err.errors()[0]
    key = ".".join(str(p) for p in first["loc"]) or "<root>"
    got = first.get("input")
    shown = "" if first["type"] == "missing" or isinstance(got, dict) else f" (got {got!r})"
    more = f" [+{err.error_count() - 1} more]" if err.error_count() > 1 else ""
    return f"{source}: {key}: {first['msg']}{shown}{more}"


def validate(model: type, raw: Any, source: str, prefix: str = "") -> Any:
    """Validate `raw` as `model` (a Section or a config dataclass); the first problem is a one-line PipelineError."""
    try:
        return TypeAdapter(model).validate_python(raw if raw is not None else {})
    except ValidationError as err:
        msg = _one_line(err, source)
        if prefix:
            msg = msg.replace(f"{source}: ", f"{source}: {prefix}.", 1)
        raise PipelineError(msg) from None


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: params file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        line = getattr(getattr(err, "problem_mark", None), "line", None)
        where = f" (line {line + 1})" if line is not None else ""
        raise PipelineError(f"{path}: not valid YAML{where}") from None
    if not isinstance(raw, dict):
        raise PipelineError(f"{path}: expected a mapping of sections at the top level")
    return raw


def load_params(path: str | Path = "params.yaml") -> Params:
    return validate(Params, read_yaml(path), str(path))


def load_section(path: str | Path | None, name: str, model: type, overrides: dict[str, Any] | None = None) -> Any:
    """One section of the params file with command-line overrides (None = not given) applied."""
    raw = dict(read_yaml(path).get(name) or {}) if path else {}
    raw.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return validate(model, raw, str(path or "command line"), prefix=name)
