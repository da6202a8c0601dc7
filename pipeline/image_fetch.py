"""Download product images named in item metadata into a cache folder, resumably.

The cache is the resume state: `<item_id><ext>` that exists and decodes is never fetched
again, so an interrupted run just runs again. Every item ends up either cached or counted
under exactly one problem kind.
"""
from __future__ import annotations

from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from tqdm import tqdm

from pipeline.errors import Problems
from pipeline.fetch import SCHEMES, FetchError, download_file
from pipeline.images import IMAGE_EXTENSIONS, MAX_IMAGE_BYTES, is_safe_id, verify_image

# FetchError.kind -> problem kind. invalid_content uses verify_image's own kind instead.
_PROBLEM = {
    "http_error": "image_http_error",
    "timeout": "image_timeout",
    "connection": "image_connection",
    "too_large": "image_oversized",
    "bad_scheme": "image_bad_url",
    "bad_url": "image_bad_url",
}


def fetch_images(
    urls: dict[str, str | None],
    cache_dir: Path,
    *,
    workers: int = 8,
    timeout: float = 15.0,
    retries: int = 2,
    backoff: float = 1.0,
    max_bytes: int = MAX_IMAGE_BYTES,
    progress: bool = True,
) -> tuple[dict[str, Path], Problems]:
    """Fetch each item's image into `cache_dir`; return {item_id: path} and Problems.

    Problem kinds: image_no_url, image_bad_url, image_unsafe_id, image_http_error,
    image_timeout, image_connection, image_oversized, image_undecodable.
    """
    cache_dir = Path(cache_dir)
    problems = Problems()
    jobs: list[tuple[str, str, Path]] = []
    for item_id, url in urls.items():
        kind = _precheck(item_id, url)
        if kind:
            problems.add(kind)
        else:
            jobs.append((item_id, url, cache_dir / f"{item_id}{image_extension(url)}"))

    def fetch_one(url: str, path: Path) -> str | None:
        try:
            download_file(url, path, timeout=timeout, retries=retries, backoff=backoff,
                          max_bytes=max_bytes, progress=False, verify=verify_image)
        except FetchError as err:
            if err.kind == "invalid_content":
                return err.detail if err.detail in ("image_oversized", "image_undecodable") else "image_undecodable"
            return _PROBLEM.get(err.kind, "image_http_error")
        return None

    fetched: dict[str, Path] = {}
    if jobs:
        cache_dir.mkdir(parents=True, exist_ok=True)
    # Keep only a few jobs in flight: a million queued futures would cost real memory.
    window = max(1, workers) * 4
    pending: dict[Future, tuple[str, Path]] = {}
    todo = iter(jobs)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool, tqdm(
        total=len(jobs), desc="images", unit="img", disable=None if progress else True
    ) as bar:
        while True:
            for item_id, url, path in todo:
                pending[pool.submit(fetch_one, url, path)] = (item_id, path)
                if len(pending) >= window:
                    break
            if not pending:
                break
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                item_id, path = pending.pop(fut)
                kind = fut.result()
                if kind is None:
                    fetched[item_id] = path
                else:
                    problems.add(kind)
                bar.update()
    return fetched, problems


def image_extension(url: str) -> str:
    """The URL path's extension if it is an image one, else .jpg (what Amazon serves)."""
    ext = PurePosixPath(urlsplit(url).path).suffix.lower()
    return ext if ext in IMAGE_EXTENSIONS else ".jpg"


def _precheck(item_id: str, url: str | None) -> str | None:
    if not isinstance(item_id, str) or not is_safe_id(item_id):
        return "image_unsafe_id"
    if not url:
        return "image_no_url"
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError:
        return "image_bad_url"
    return None if scheme in SCHEMES else "image_bad_url"
