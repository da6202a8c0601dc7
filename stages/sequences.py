"""`mgr sequences --variant V`: token layout and train/valid/test sequences of one variant.

It reads only `sequences` and `variants.<V>` of params.yaml, so DVC reruns only the variant whose
params changed.
"""
from __future__ import annotations

from pathlib import Path

import typer

from pipeline.params import SequenceParams
from stages.options import PARAMS, VARIANT, section, variant_params


def sequences(
    variant: str = VARIANT, params: Path = PARAMS,
    splits: Path = typer.Option(Path("data/ingested/splits.parquet"), help="Leave-one-out splits."),
    ids_dir: Path = typer.Option(Path("data/semantic_ids"), help="Folder of <modality>.parquet semantic IDs."),
    out: Path = typer.Option(None, help="Output folder (default data/sequences/<variant>)."),
) -> None:
    """Token layout and train/valid/test sequences of one variant."""
    from pipeline.sequences import build_sequences
    var = variant_params(params, variant)
    seq: SequenceParams = section(params, "sequences", SequenceParams)
    report = build_sequences(splits, ids_dir, list(var.modalities), var.transition, seq.history,
                             seq.user_buckets, out or Path(f"data/sequences/{variant}"))
    typer.echo(f"sequences[{variant}]: {report['train']['rows']} train rows, item_len {report['item_len']}, "
               f"vocab {report['vocab_size']}", err=True)
