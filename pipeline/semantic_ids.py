"""Reading a modality's semantic IDs (the quantize stage's Parquet: item_idx, item_id, code_1..).

Its own module because the recommender's stages read the IDs (pipeline/layout.py), the
agreement stage does too, and the quantize stage and `mgr inspect` count their levels
(pipeline/summary.py): none should load, or depend on, the others' code.
"""
from __future__ import annotations

import os

import polars as pl

from pipeline.errors import PipelineError


def read_ids(path: str | os.PathLike) -> pl.DataFrame:
    if not os.path.isfile(path):
        raise PipelineError(f"{path}: semantic IDs not found (run `mgr quantize` first)")
    ids = pl.read_parquet(path)
    if "item_id" not in ids.columns or "code_1" not in ids.columns:
        raise PipelineError(f"{path}: not a semantic-ID file (needs item_id and code_1 columns)")
    return ids


def code_levels(ids: pl.DataFrame) -> list[str]:
    """The level columns of a semantic-ID frame (`code_1`, `code_2`, ...), in level order (code_10 after code_9)."""
    return sorted((c for c in ids.columns if c.startswith("code_") and c[5:].isdigit()), key=lambda c: int(c[5:]))
