"""`mgr agreement`: how much the modalities' semantic IDs agree (adjusted mutual information)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import polars as pl
import typer

from pipeline.artifacts import write_json
from pipeline.errors import PipelineError
from pipeline.params import AgreementParams, load_section


def agreement(
    params: Optional[Path] = typer.Option(Path("params.yaml"), help="Reads its `agreement:` section."),
    ids_dir: Path = typer.Option(Path("data/semantic_ids"), help="Folder of <modality>.parquet semantic IDs."),
    modalities: str = typer.Option("text,image,fused", help="Comma-separated modalities to compare (two or more)."),
    out: Path = typer.Option(Path("metrics/modality_agreement.json"), help="Report (JSON)."),
    usage_dir: Optional[Path] = typer.Option(None, help="Also write <modality>.csv of code usage per level here "
                                                        "(the `dvc plots` codebook-usage plot)."),
) -> None:
    """Adjusted mutual information between the modalities' codes (and against ground truth, if given)."""
    from pipeline.agreement import modality_agreement
    from pipeline.semantic_ids import read_ids
    from pipeline.summary import write_usage_csv
    cfg = load_section(params, "agreement", AgreementParams)
    names = [m.strip() for m in modalities.split(",") if m.strip()]
    if len(names) < 2:
        raise typer.BadParameter("name two or more modalities, e.g. text,image", param_hint="--modalities")
    ids = {m: read_ids(ids_dir / f"{m}.parquet") for m in names}
    truth = None
    if cfg.ground_truth:
        if not Path(cfg.ground_truth).is_file():
            raise PipelineError(f"agreement.ground_truth: {cfg.ground_truth}: file not found")
        truth = pl.read_csv(cfg.ground_truth, infer_schema_length=0)
    report = modality_agreement(ids, truth)
    write_json(report, out)
    if usage_dir is not None:
        for m, frame in ids.items():
            write_usage_csv(frame, usage_dir / f"{m}.csv")
    pairs = ", ".join(f"{k} {v:.3f}" for k, v in report["level_1"].items())
    typer.echo(f"agreement: first-level AMI {pairs} -> {out}", err=True)
