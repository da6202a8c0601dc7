"""`mgr train --variant V`: (alignment, then) next-item training of one variant, early stopping on validation."""
from __future__ import annotations

from pathlib import Path

import typer

from pipeline.params import RecommenderParams
from stages.options import PARAMS, VARIANT, section, variant_params


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
    from pipeline import distributed
    from pipeline.train import train_variant
    var = variant_params(params, variant)
    rec: RecommenderParams = section(params, "recommender", RecommenderParams)
    report = train_variant(seq_dir or Path(f"data/sequences/{variant}"), var, rec,
                           model or Path(f"models/recommender/{variant}.pt"),
                           metrics or Path(f"metrics/train_{variant}.json"),
                           live or Path(f"dvclive/{variant}"), work_dir, progress=progress)
    v = report["valid"]
    if distributed.rank() != 0:  # under torchrun, one summary line
        return
    typer.echo(f"train[{variant}]: best epoch {report['train']['best_epoch']}, valid recall@10 "
               f"{v['recall@10']:.4f} ndcg@10 {v['ndcg@10']:.4f}", err=True)
