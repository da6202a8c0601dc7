"""`mgr sasrec`: the ID-based SASRec baseline on the leave-one-out splits -> model, metrics, curves."""
from __future__ import annotations

from pathlib import Path

import typer

from pipeline.params import read_yaml, validate


def sasrec(
    params: Path = typer.Option(Path("params.yaml"), help="Params file; its `sasrec` section is used."),
    splits: Path = typer.Option(Path("data/ingested/splits.parquet"), help="Leave-one-out splits."),
    items: Path = typer.Option(Path("data/ingested/items.parquet"), help="Items (their count sizes the model)."),
    model: Path = typer.Option(Path("models/sasrec.pt"), help="Best-on-validation weights and config."),
    metrics: Path = typer.Option(Path("metrics/eval_sasrec.json"), help="Valid and test metrics JSON."),
    live: Path = typer.Option(Path("dvclive/sasrec"), help="DVCLive folder for the training curves."),
    work_dir: Path = typer.Option(Path("data/cache/train"), help="Where the resumable checkpoint lives."),
    progress: bool = typer.Option(True, help="Show a progress bar over epochs."),
    curve: Path = typer.Option(Path("reports/recall_at_k/sasrec.csv"), help="Test Recall@1..top_k as CSV."),
) -> None:
    """Train SASRec with early stopping on validation, then test once with the best weights."""
    from pipeline.sasrec import SASRecParams, run_sasrec
    cfg: SASRecParams = validate(SASRecParams, read_yaml(params).get("sasrec"), str(params), prefix="sasrec")
    run_sasrec(splits, items, cfg, model, metrics, live, work_dir, progress=progress, curve_out=curve)
