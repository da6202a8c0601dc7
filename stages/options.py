"""Options and params helpers shared by the recommender commands (sequences, train, evaluate, recommend)."""
from __future__ import annotations

from pathlib import Path

import typer

from pipeline.errors import PipelineError
from pipeline.params import VariantParams, read_yaml, validate

PARAMS = typer.Option(Path("params.yaml"), help="Params file.")
VARIANT = typer.Option(..., help="A key of `variants:` in params.yaml (text, image, fused, lf, lfpp, ...).")


def variant_params(params: Path, name: str) -> VariantParams:
    variants = read_yaml(params).get("variants") or {}
    if name not in variants:
        raise PipelineError(f"{params}: variants.{name}: no such variant (have: {', '.join(variants) or 'none'})")
    return validate(VariantParams, variants[name], str(params), prefix=f"variants.{name}")


def section(params: Path, name: str, model: type):
    return validate(model, read_yaml(params).get(name), str(params), prefix=name)
