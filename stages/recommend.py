"""`mgr recommend`: top-K items for a history or a known user from a trained variant.

Not a pipeline stage (nothing in dvc.yaml runs it): it reads what `dvc repro` wrote.
"""
from __future__ import annotations

import json
from pathlib import Path

import typer

from pipeline.params import RecommenderParams
from stages.options import PARAMS, VARIANT, section


def recommend(
    variant: str = VARIANT, params: Path = PARAMS,
    history: str = typer.Option(None, help="Comma-separated ASINs, oldest first."),
    user: str = typer.Option(None, help="A reviewer ID of the ingested data: their whole history (and user token)."),
    k: int = typer.Option(10, "-k", "--k", min=1, help="How many items."),
    fmt: str = typer.Option("table", "--format", help="table | json"),
    exclude_seen: bool = typer.Option(False, help="Leave out items already in the history "
                                                  "(the metrics do not: off by default)."),
    seq_dir: Path = typer.Option(None, help="Sequences (default data/sequences/<variant>)."),
    model: Path = typer.Option(None, help="Model (default models/recommender/<variant>.pt)."),
    items: Path = typer.Option(Path("data/ingested/items.parquet"), help="Ingested items (ASIN, title)."),
    splits: Path = typer.Option(Path("data/ingested/splits.parquet"), help="Ingested histories (for --user)."),
) -> None:
    """Top-K items for a history or a known user, through the trained model's constrained decoding."""
    from pipeline.recommend import Recommender, user_history
    if (history is None) == (user is None):
        raise typer.BadParameter("give exactly one of --history and --user")
    if fmt not in ("table", "json"):
        raise typer.BadParameter(f"unknown format {fmt!r}; expected table or json", param_hint="--format")
    rec: RecommenderParams = section(params, "recommender", RecommenderParams)
    r = Recommender.load(seq_dir or Path(f"data/sequences/{variant}"),
                         model or Path(f"models/recommender/{variant}.pt"), items)
    if user is not None:
        user_idx, hist = user_history(splits, user)
    else:
        user_idx, hist = None, r.item_indices([a.strip() for a in history.split(",") if a.strip()])
    top = r.recommend(hist, k, rec.train.beam, user_idx, exclude_seen, rec.train.decode_dtype)
    if fmt == "json":
        typer.echo(json.dumps(top.to_dicts(), indent=2))
        return
    from rich.console import Console
    from rich.table import Table
    table = Table(title=f"{variant}: top {k} for {'user ' + user if user else f'{len(hist)} items'}")
    for col in ("rank", "ASIN", "title", "score"):
        table.add_column(col, justify="right" if col in ("rank", "score") else "left")
    for row in top.iter_rows(named=True):
        table.add_row(str(row["rank"]), row["item_id"], row["title"] or "", f"{row['score']:.3f}")
    Console().print(table)
