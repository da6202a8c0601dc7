"""Summaries of stage outputs for `mgr inspect`: what a file holds, without recomputing anything.

- Parquet: rows, schema, the first rows; for semantic-ID files (`code_1`, `code_2`, ...) also
  per-level code usage and how many items share a full code tuple.
- a folder: its files with sizes (and rows, for Parquet), e.g. `data/sequences/lfpp`;
- JSON: the parsed content (metrics, reports, layouts);
- a checkpoint (`.pt`): its top-level keys, config and parameter count, loaded with
  `weights_only=True` (no pickle code runs).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from pipeline.artifacts import atomic_path
from pipeline.errors import PipelineError
from pipeline.semantic_ids import code_levels


def summarize(path: Path, rows: int = 5) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise PipelineError(f"{path}: no such file or folder")
    if path.is_dir():
        return {"kind": "folder", "path": str(path), "files": [_entry(p) for p in sorted(path.rglob("*")) if p.is_file()]}
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return _parquet(path, rows)
    if suffix == ".json":
        try:
            return {"kind": "json", "path": str(path), "content": json.loads(path.read_text())}
        except json.JSONDecodeError as err:
            raise PipelineError(f"{path}: not valid JSON ({err})") from None
    if suffix in (".pt", ".pth"):
        return _checkpoint(path)
    raise PipelineError(f"{path}: don't know how to inspect {suffix or 'this'} files (Parquet, JSON, .pt, folders)")


def _entry(p: Path) -> dict[str, Any]:
    entry: dict[str, Any] = {"file": str(p), "bytes": p.stat().st_size}
    if p.suffix == ".parquet":
        entry["rows"] = pl.scan_parquet(p).select(pl.len()).collect().item()
    return entry


def _parquet(path: Path, rows: int) -> dict[str, Any]:
    try:
        df = pl.read_parquet(path)
    except Exception as err:  # polars raises several types for a corrupt file
        raise PipelineError(f"{path}: not a readable Parquet file ({type(err).__name__})") from None
    out: dict[str, Any] = {"kind": "parquet", "path": str(path), "rows": df.height,
                           "schema": {c: str(t) for c, t in df.schema.items()}, "head": df.head(rows)}
    levels = code_levels(df)
    if levels and df.height:
        out["codes"] = code_usage(df, levels)
    return out


def level_usage(codes: np.ndarray, codebook_size: int) -> list[dict[str, float]]:
    """Per level of an (n, L) code matrix: codes used, entropy of their distribution in bits, the
    most used code's share (unrounded). The one count both `mgr inspect` and quantize's metrics use."""
    out = []
    for level in range(codes.shape[1]):
        count = np.bincount(codes[:, level], minlength=codebook_size)
        p = count[count > 0] / max(len(codes), 1)
        out.append({"used": int((count > 0).sum()), "entropy_bits": float(-(p * np.log2(p)).sum()),
                    "top_share": float(p.max(initial=0.0))})
    return out


def code_usage(ids: pl.DataFrame, levels: list[str]) -> dict[str, Any]:
    """Per level: distinct codes used, entropy in bits, the most used code's share; tuple sharing."""
    codes = ids.select(levels).to_numpy().astype(np.int64)
    per_level = {c: {"used": u["used"], "entropy_bits": round(u["entropy_bits"], 3), "top_share": round(u["top_share"], 4)}
                 for c, u in zip(levels, level_usage(codes, int(codes.max(initial=0)) + 1))}
    tuples = ids.group_by(levels).len()["len"]
    return {"levels": per_level, "distinct_tuples": int(tuples.len()),
            "items_sharing_a_tuple": int(tuples.filter(tuples > 1).sum()), "max_items_per_tuple": int(tuples.max())}


def _checkpoint(path: Path) -> dict[str, Any]:
    import torch

    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise PipelineError(f"{path}: not a readable checkpoint ({type(err).__name__})") from None
    out: dict[str, Any] = {"kind": "checkpoint", "path": str(path)}
    if isinstance(saved, dict):
        out["keys"] = sorted(map(str, saved))
        state = saved.get("state_dict") or saved.get("model")
        if isinstance(state, dict):
            # Tied weights appear under several names but share storage: count each once.
            unique = {t.untyped_storage().data_ptr(): t.numel() for t in state.values() if hasattr(t, "numel")}
            out["parameters"] = int(sum(unique.values()))
        if isinstance(saved.get("config"), dict):
            out["config"] = saved["config"]
    return out


def write_usage_csv(ids: pl.DataFrame, path: Path) -> None:
    """CSV `level,codes_used,entropy_bits` of a semantic-ID frame (atomically)."""
    usage = code_usage(ids, code_levels(ids))["levels"]
    with atomic_path(path) as tmp:
        tmp.write_text("level,codes_used,entropy_bits\n" + "".join(
            f"{c[5:]},{u['used']},{u['entropy_bits']}\n" for c, u in usage.items()))
