"""Reading a modality's semantic IDs (the quantize stage's Parquet: item_idx, item_id, code_1..).

Its own module because the recommender's stages read the IDs (pipeline/layout.py) and the
agreement stage does too: neither should load, or depend on, the other's code.
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
