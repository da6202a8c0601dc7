"""`mgr sequences | train | evaluate | compare`: the generative recommender, one variant at a time.

Each command reads only its variant's sections of params.yaml (`sequences`, `variants.<name>`,
`recommender`), so DVC reruns only the variant whose params changed.
"""
from __future__ import annotations

import json
from pathlib import Path

import typer

from pipeline.artifacts import atomic_path, write_json
from pipeline.errors import PipelineError
from pipeline.params import RecommenderParams, SequenceParams, VariantParams, read_yaml, validate

PARAMS = typer.Option(Path("params.yaml"), help="Params file.")
VARIANT = typer.Option(..., help="A key of `variants:` in params.yaml (text, image, fused, lf, lfpp, ...).")


def _variant(params: Path, name: str) -> VariantParams:
    variants = read_yaml(params).get("variants") or {}
    if name not in variants:
        raise PipelineError(f"{params}: variants.{name}: no such variant (have: {', '.join(variants) or 'none'})")
    return validate(VariantParams, variants[name], str(params), prefix=f"variants.{name}")


def _section(params: Path, name: str, model: type):
    return validate(model, read_yaml(params).get(name), str(params), prefix=name)


def sequences(
    variant: str = VARIANT, params: Path = PARAMS,
    splits: Path = typer.Option(Path("data/ingested/splits.parquet"), help="Leave-one-out splits."),
    ids_dir: Path = typer.Option(Path("data/semantic_ids"), help="Folder of <modality>.parquet semantic IDs."),
    out: Path = typer.Option(None, help="Output folder (default data/sequences/<variant>)."),
) -> None:
    """Token layout and train/valid/test sequences of one variant."""
    from pipeline.sequences import build_sequences
    var = _variant(params, variant)
    seq: SequenceParams = _section(params, "sequences", SequenceParams)
    report = build_sequences(splits, ids_dir, list(var.modalities), var.transition, seq.history,
                             seq.user_buckets, out or Path(f"data/sequences/{variant}"))
    typer.echo(f"sequences[{variant}]: {report['train']['rows']} train rows, item_len {report['item_len']}, "
               f"vocab {report['vocab_size']}", err=True)


def train(
    variant: str = VARIANT, params: Path = PARAMS,
    seq_dir: Path = typer.Option(None, help="Sequences (default data/sequences/<variant>)."),
    model: Path = typer.Option(None, help="Best model (default models/recommender/<variant>.pt)."),
    metrics: Path = typer.Option(None, help="Validation metrics (default metrics/train_<variant>.json)."),
    live: Path = typer.Option(None, help="DVCLive folder (default dvclive/<variant>)."),
    work_dir: Path = typer.Option(Path("data/cache/train"), help="Resumable checkpoints."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """(Align, then) train one variant with early stopping on validation."""
    from pipeline.train import train_variant
    var = _variant(params, variant)
    rec: RecommenderParams = _section(params, "recommender", RecommenderParams)
    report = train_variant(seq_dir or Path(f"data/sequences/{variant}"), var, rec,
                           model or Path(f"models/recommender/{variant}.pt"),
                           metrics or Path(f"metrics/train_{variant}.json"),
                           live or Path(f"dvclive/{variant}"), work_dir, progress=progress)
    v = report["valid"]
    typer.echo(f"train[{variant}]: best epoch {report['train']['best_epoch']}, valid recall@10 "
               f"{v['recall@10']:.4f} ndcg@10 {v['ndcg@10']:.4f}", err=True)


def evaluate(
    variant: str = VARIANT, params: Path = PARAMS,
    seq_dir: Path = typer.Option(None, help="Sequences (default data/sequences/<variant>)."),
    model: Path = typer.Option(None, help="Model (default models/recommender/<variant>.pt)."),
    out: Path = typer.Option(None, help="Test metrics (default metrics/eval_<variant>.json)."),
) -> None:
    """Decode the test targets once with the best model; write the test metrics."""
    from pipeline.evaluate import evaluate_variant
    rec: RecommenderParams = _section(params, "recommender", RecommenderParams)
    report = evaluate_variant(seq_dir or Path(f"data/sequences/{variant}"),
                              model or Path(f"models/recommender/{variant}.pt"), rec.train)
    write_json(report, out or Path(f"metrics/eval_{variant}.json"))
    t = report["test"]
    typer.echo(f"evaluate[{variant}]: test recall@10 {t['recall@10']:.4f} ndcg@10 {t['ndcg@10']:.4f} "
               f"({report['decoding']['users_per_s']} users/s)", err=True)


def compare(
    names: str = typer.Option("text,image,fused,lf,lfpp,sasrec", help="Comma-separated models, in table order."),
    metrics_dir: Path = typer.Option(Path("metrics"), help="Where eval_<name>.json files are."),
    out: Path = typer.Option(Path("metrics/eval.json"), help="Combined test metrics."),
    report: Path = typer.Option(Path("reports/comparison.md"), help="Markdown comparison."),
) -> None:
    """Combine every model's test metrics into one JSON and a markdown table."""
    from pipeline.evaluate import comparison
    results = {}
    for name in [n.strip() for n in names.split(",") if n.strip()]:
        path = metrics_dir / f"eval_{name}.json"
        if not path.is_file():
            raise PipelineError(f"{path}: not found (run the evaluate stage for {name})")
        results[name] = json.loads(path.read_text())["test"]
    table, text = comparison(results)
    write_json(table, out)
    with atomic_path(report) as tmp:
        tmp.write_text("# Variant comparison (test split, full ranking over all items)\n\n" + text)
    typer.echo(text, err=True)
