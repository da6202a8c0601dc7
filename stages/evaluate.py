"""`mgr evaluate --variant V` (test metrics of one trained variant) and `mgr compare` (the table)."""
from __future__ import annotations

import json
from pathlib import Path

import typer

from pipeline.artifacts import atomic_path, write_json
from pipeline.errors import PipelineError
from pipeline.params import RecommenderParams
from stages.options import PARAMS, VARIANT, section


def evaluate(
    variant: str = VARIANT, params: Path = PARAMS,
    seq_dir: Path = typer.Option(None, help="Sequences (default data/sequences/<variant>)."),
    model: Path = typer.Option(None, help="Model (default models/recommender/<variant>.pt)."),
    out: Path = typer.Option(None, help="Test metrics (default metrics/eval_<variant>.json)."),
    curve: Path = typer.Option(None, help="Test Recall@1..top_k as CSV (default reports/recall_at_k/<variant>.csv)."),
    per_user: Path = typer.Option(None, help="Per user: target, rank, top list (default reports/per_user/<variant>.parquet)."),
) -> None:
    """Decode the test targets once with the best model; write the test metrics."""
    from pipeline.evaluate import evaluate_variant
    rec: RecommenderParams = section(params, "recommender", RecommenderParams)
    report = evaluate_variant(seq_dir or Path(f"data/sequences/{variant}"),
                              model or Path(f"models/recommender/{variant}.pt"), rec.train,
                              curve_out=curve or Path(f"reports/recall_at_k/{variant}.csv"),
                              per_user_out=per_user or Path(f"reports/per_user/{variant}.parquet"))
    write_json(report, out or Path(f"metrics/eval_{variant}.json"))
    t = report["test"]
    typer.echo(f"evaluate[{variant}]: test recall@10 {t['recall@10']:.4f} ndcg@10 {t['ndcg@10']:.4f} "
               f"({report['decoding']['users_per_s']} users/s)", err=True)


def compare(
    names: str = typer.Option("text,image,fused,lf,lfpp,sasrec", help="Comma-separated models, in table order."),
    metrics_dir: Path = typer.Option(Path("metrics"), help="Where eval_<name>.json files are."),
    out: Path = typer.Option(Path("metrics/eval.json"), help="Combined test metrics."),
    report: Path = typer.Option(Path("reports/comparison.md"), help="Markdown comparison."),
    markdown: bool = typer.Option(False, help="Print the markdown instead of a terminal table."),
) -> None:
    """Combine every model's test metrics into one JSON and a markdown table; show it in the terminal."""
    from pipeline.compare import comparison
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
    if markdown:
        typer.echo(text)
        return
    from rich.console import Console
    from rich.table import Table
    best = {m: max(v[m] for v in table.values()) for m in next(iter(table.values()))}
    grid = Table("model", *best, title="Test metrics, full ranking over all items")
    for name, row in table.items():
        grid.add_row(name, *[f"[bold]{v:.4f}[/bold]" if v == best[m] else f"{v:.4f}" for m, v in row.items()])
    console = Console()
    console.print(grid)
    for line in text.split("\n\n", 1)[1:]:
        console.print(line.strip())
