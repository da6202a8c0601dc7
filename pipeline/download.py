"""Raw Amazon review datasets: where each release lives, and downloading them intact.

Three releases are known: the 2014 (McAuley, SNAP) 5-core reviews, the 2018 (Ni et al.)
5-core reviews, and the 2023 (Hou et al.) full reviews, each with its item metadata.
The short dataset names used in the papers map to a category per release; `category=`
names any other category of a release directly.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.fetch import download_file, gzip_integrity


@dataclass(frozen=True)
class Release:
    reviews: str  # URL template with {cat}
    meta: str
    categories: dict[str, str]  # short dataset name -> category name


_UCSD = "https://datarepo.eng.ucsd.edu/mcauley_group/data"
RELEASES: dict[str, Release] = {
    "2014": Release(
        reviews="http://snap.stanford.edu/data/amazon/productGraph/categoryFiles/reviews_{cat}_5.json.gz",
        meta="http://snap.stanford.edu/data/amazon/productGraph/categoryFiles/meta_{cat}.json.gz",
        categories={"beauty": "Beauty", "sports": "Sports_and_Outdoors", "toys": "Toys_and_Games"},
    ),
    # 2018 also has Luxury_Beauty; 2023 also has Beauty_and_Personal_Care: pass category=.
    "2018": Release(
        reviews=f"{_UCSD}/amazon_v2/categoryFilesSmall/{{cat}}_5.json.gz",
        meta=f"{_UCSD}/amazon_v2/metaFiles2/meta_{{cat}}.json.gz",
        categories={"beauty": "All_Beauty", "sports": "Sports_and_Outdoors", "toys": "Toys_and_Games"},
    ),
    "2023": Release(
        reviews=f"{_UCSD}/amazon_2023/raw/review_categories/{{cat}}.jsonl.gz",
        meta=f"{_UCSD}/amazon_2023/raw/meta_categories/meta_{{cat}}.jsonl.gz",
        categories={"beauty": "All_Beauty", "sports": "Sports_and_Outdoors", "toys": "Toys_and_Games"},
    ),
}
DATASETS = ("beauty", "sports", "toys")
# Category names go into URLs and file names; every real one is letters, digits and '_'.
_CATEGORY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_]{0,99}$")


def dataset_urls(
    dataset: str, release: str = "2014", category: str | None = None, base_url: str | None = None
) -> dict[str, str]:
    """{"reviews": url, "meta": url} for a dataset of a release.

    With `category`, `dataset` is only a label and the category is used as given.
    `base_url` replaces everything before the file name (a mirror, or a test server).
    """
    rel = RELEASES.get(release)
    if rel is None:
        raise PipelineError(f"unknown release {release!r}; choose one of: {', '.join(RELEASES)}")
    if category is None:
        category = rel.categories.get(dataset)
        if category is None:
            raise PipelineError(
                f"unknown dataset {dataset!r}; choose one of: {', '.join(DATASETS)} "
                f"(or name a {release} category with --category)"
            )
    elif not _CATEGORY.match(category):
        raise PipelineError(f"invalid category {category!r}: use the release's name, e.g. Toys_and_Games")

    urls = {"reviews": rel.reviews.format(cat=category), "meta": rel.meta.format(cat=category)}
    if base_url:
        urls = {k: f"{base_url.rstrip('/')}/{_file_name(u)}" for k, u in urls.items()}
    return urls


def download_dataset(
    dataset: str,
    out_dir: Path,
    release: str = "2014",
    category: str | None = None,
    base_url: str | None = None,
    timeout: float = 30.0,
    retries: int = 3,
    progress: bool = True,
) -> dict[str, Path]:
    """Download the reviews and meta files into `out_dir` under their original names.

    Files already there and intact are kept; gzip files are fully decompressed once to
    check them, and a corrupt one is deleted and reported as a FetchError.
    """
    out_dir = Path(out_dir)
    paths: dict[str, Path] = {}
    for key, url in dataset_urls(dataset, release, category, base_url).items():
        name = _file_name(url)
        verify = gzip_integrity if name.endswith(".gz") else None
        paths[key] = download_file(
            url, out_dir / name, timeout=timeout, retries=retries, progress=progress, verify=verify
        )
    return paths


def _file_name(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1]
