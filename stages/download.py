"""`mgr download`: fetch a raw Amazon dataset (and optionally its product images)."""
from __future__ import annotations

import sys
from pathlib import Path

import typer

from pipeline.download import RELEASES, DATASETS, download_dataset
from pipeline.errors import PipelineError


def download(
    dataset: str = typer.Option(
        ..., help=f"Dataset short name: {', '.join(DATASETS)}. With --category it is just the folder label."
    ),
    release: str = typer.Option("2014", help=f"Amazon reviews release: {', '.join(RELEASES)}."),
    category: str | None = typer.Option(
        None, help="Category name of the release, e.g. Luxury_Beauty (2018) or Beauty_and_Personal_Care (2023)."
    ),
    out: Path = typer.Option(
        Path("data/raw"),
        help="Files go to OUT/<dataset>-<release>/ under their original names; images to OUT/<dataset>-<release>/images/.",
    ),
    images: bool = typer.Option(False, "--images", help="Also download every item's product image."),
    base_url: str | None = typer.Option(None, help="Mirror URL that replaces everything before the file name."),
    workers: int = typer.Option(8, min=1, help="Parallel image downloads."),
    timeout: float = typer.Option(30.0, min=0.01, help="Seconds to wait on a stalled connection."),
) -> None:
    """Download raw reviews and metadata; existing good files are kept, partial ones resumed."""
    from pipeline.images import is_safe_id  # here: every `mgr` call imports this module (tests/test_dvc_pipeline.py)
    if not is_safe_id(dataset):
        raise PipelineError(f"invalid dataset name {dataset!r}: use letters, digits, '_', '-' or '.'")
    folder = out / f"{dataset}-{release}"
    paths = download_dataset(dataset, folder, release=release, category=category, base_url=base_url, timeout=timeout)
    names = ", ".join(p.name for p in paths.values())
    print(f"download: {dataset} {release} -> {folder} ({names})", file=sys.stderr)

    if images:
        from pipeline.amazon import read_meta_image_urls, read_reviews
        from pipeline.errors import Problems
        from pipeline.image_fetch import fetch_images

        # Full meta files list far more items than the reviews use (2014 Beauty: 259k vs 12k).
        reviewed = set(read_reviews(paths["reviews"], "auto", Problems()).item)
        urls = read_meta_image_urls(paths["meta"], wanted=reviewed)
        image_dir = folder / "images"
        fetched, problems = fetch_images(urls, image_dir, workers=workers, timeout=timeout)
        print(f"download: {len(fetched)}/{len(urls)} item images cached in {image_dir}", file=sys.stderr)
        problems.echo("download images")
