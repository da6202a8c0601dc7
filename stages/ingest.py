"""`mgr ingest`: raw Amazon reviews + meta (+ images) -> cleaned, k-core, split Parquet."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from pipeline.params import DataParams, load_section


def ingest(
    reviews: Optional[Path] = typer.Option(None, help="Reviews file (.json/.jsonl, gzipped or plain)."),
    meta: Optional[Path] = typer.Option(None, help="Meta file (2014 Python literals or 2018/2023 JSON lines)."),
    images_dir: Optional[Path] = typer.Option(
        None, help="Folder of <asin>.<ext> images. Without it, images are downloaded from the meta URLs."
    ),
    out: Path = typer.Option(Path("data/ingested"), help="Output folder."),
    min_interactions: Optional[int] = typer.Option(None, help="k of the iterative k-core (default 5)."),
    require_image: Optional[bool] = typer.Option(
        None, "--require-image/--no-require-image", help="Drop items without a valid image (default: yes)."
    ),
    fmt: Optional[str] = typer.Option(None, "--format", help="auto | 2014 | 2018 | 2023 (default auto)."),
    image_cache: Optional[Path] = typer.Option(None, help="Where downloaded images are cached."),
    params: Optional[Path] = typer.Option(
        None, help="Read the `data:` section of this params file; options given here override it."
    ),
    progress: bool = typer.Option(True, help="Show progress bars."),
) -> None:
    """Parse, deduplicate, filter (image, k-core) and split the raw files."""
    from pipeline.ingest import ingest as run_ingest
    if params is None and (reviews is None or meta is None):
        raise typer.BadParameter("give --reviews and --meta, or --params FILE with a `data:` section")
    given = {
        "reviews": reviews, "meta": meta, "images_dir": images_dir, "min_interactions": min_interactions,
        "require_image": require_image, "format": fmt, "image_cache": image_cache,
    }
    given = {k: str(v) if isinstance(v, Path) else v for k, v in given.items()}
    cfg = load_section(params, "data", DataParams, given)
    t0 = time.perf_counter()
    report = run_ingest(cfg, out, progress=progress)
    o = report["output"]
    typer.echo(
        f"ingest: {o['users']} users, {o['items']} items, {o['interactions']} interactions "
        f"-> {out} ({time.perf_counter() - t0:.2f} s)",
        err=True,
    )
