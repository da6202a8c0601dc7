"""`mgr quantize`: one modality's item vectors -> semantic IDs (RQ-VAE or residual k-means), checkpoint and metrics."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from pipeline.errors import PipelineError
from pipeline.params import MODALITIES, QuantizeParams, read_yaml, validate


def quantize(
    modality: str = typer.Option(..., help="text | image | fused"),
    params: Path = typer.Option(Path("params.yaml"), help="Params file; its `quantize.<modality>` section is used."),
    embeddings: Optional[Path] = typer.Option(None, help="Item vectors (default data/embeddings/<modality>.parquet)."),
    out: Optional[Path] = typer.Option(None, help="Semantic IDs (default data/semantic_ids/<modality>.parquet)."),
    model: Optional[Path] = typer.Option(None, help="Quantizer checkpoint (default models/rqvae_<modality>.pt, whichever the method)."),
    metrics: Optional[Path] = typer.Option(None, help="Metrics JSON (default metrics/quantize_<modality>.json)."),
    progress: bool = typer.Option(True, help="Show a progress bar over epochs."),
) -> None:
    """Fit the quantizer (quantize.<modality>.method) on one modality's vectors; give every item a unique semantic ID."""
    from pipeline.quantize import quantize as run_quantize
    if modality not in MODALITIES:
        raise typer.BadParameter(f"unknown modality {modality!r}; expected one of {', '.join(MODALITIES)}",
                                 param_hint="--modality")
    section = read_yaml(params).get("quantize") or {}
    if not isinstance(section, dict):
        raise PipelineError(f"{params}: quantize: expected a mapping of modalities")
    raw = section.get(modality)
    cfg: QuantizeParams = validate(QuantizeParams, raw, str(params), prefix=f"quantize.{modality}")
    run_quantize(
        embeddings or Path(f"data/embeddings/{modality}.parquet"),
        cfg,
        out or Path(f"data/semantic_ids/{modality}.parquet"),
        model or Path(f"models/rqvae_{modality}.pt"),
        metrics or Path(f"metrics/quantize_{modality}.json"),
        modality=modality,
        progress=progress,
    )
