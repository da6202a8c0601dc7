"""`mgr embed`: one vector per item for a modality (text, image), or their early fusion."""
from __future__ import annotations

import time
from pathlib import Path

import polars as pl
import typer

from pipeline.artifacts import write_json
from pipeline.errors import PipelineError
from pipeline.params import MODALITIES, EmbedParams, load_section


def embed(
    modality: str = typer.Option(..., help="text | image | fused"),
    params: Path = typer.Option(Path("params.yaml"), help="Read the `embed:` section of this params file."),
    items: Path = typer.Option(Path("data/ingested/items.parquet"), help="Ingested items (text and image paths)."),
    out_dir: Path = typer.Option(Path("data/embeddings"), help="Writes <modality>.parquet and <modality>_report.json."),
    work_dir: Path = typer.Option(
        Path("data/cache/embed"), help="Finished chunks of an unfinished run, so a rerun resumes."
    ),
    progress: bool = typer.Option(True, help="Show progress bars."),
) -> None:
    """Encode item text or images (open_clip / transformers), or fuse the two (early fusion).

    Runs on MGR_DEVICE (auto: a GPU when torch sees one). Under `torchrun --nproc_per_node N` the
    processes split the chunks and rank 0 merges them (`--work-dir` must be shared)."""
    if modality not in MODALITIES:
        raise typer.BadParameter(f"must be one of {', '.join(MODALITIES)} (got {modality!r})", param_hint="--modality")
    cfg: EmbedParams = load_section(params, "embed", EmbedParams)
    # Only the library is imported lazily: torch and the models load when a stage runs, not for --help.
    from pipeline.embed import embed_items, fuse

    if not progress:
        from transformers.utils import logging as hf_logging
        hf_logging.disable_progress_bar()  # its weight-loading bar ignores our --no-progress otherwise

    out = out_dir / f"{modality}.parquet"
    t0 = time.perf_counter()
    if modality == "fused":
        report = fuse(out_dir / "text.parquet", out_dir / "image.parquet", cfg.fused, out)
    else:
        if not items.is_file():
            raise PipelineError(f"{items}: items file not found (run `mgr ingest` first)")
        report = embed_items(modality, pl.read_parquet(items), getattr(cfg, modality), out, work_dir,
                             progress=progress)
        if report is None:  # another rank than 0 under torchrun: rank 0 merges and reports
            return
    write_json(report, out_dir / f"{modality}_report.json")
    typer.echo(f"embed {modality}: {report['items_out']} items x {report['dim']} -> {out} "
               f"({time.perf_counter() - t0:.2f} s)", err=True)
