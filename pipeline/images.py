"""Product images: find them on disk, and verify each one by actually decoding it.

Files from the internet are untrusted, so every check bounds the work an image can cause:
a byte limit before opening, a pixel limit before decoding (decompression bombs), and a
full decode so that truncated files are caught here rather than in the embedding stage.
"""
from __future__ import annotations

import re
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif")
MAX_IMAGE_BYTES = 20 * 1024 * 1024
MAX_IMAGE_PIXELS = 40_000_000
# Item ids become file names; anything outside this set could escape the folder.
SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def is_safe_id(item_id: str) -> bool:
    return bool(SAFE_ID.match(item_id)) and ".." not in item_id


def verify_image(path: Path, max_bytes: int = MAX_IMAGE_BYTES, max_pixels: int = MAX_IMAGE_PIXELS) -> str | None:
    """Return None if `path` is a decodable image within the limits, else the problem kind."""
    try:
        size = path.stat().st_size
    except OSError:
        return "image_missing"
    if size == 0:
        return "image_undecodable"
    if size > max_bytes:
        return "image_oversized"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                if w * h > max_pixels:
                    return "image_oversized"
                # JPEG draft mode decodes at 1/8 scale: every block is still read (so
                # truncation is caught) at a fraction of the cost of a full decode.
                im.draft("RGB", (max(1, w // 8), max(1, h // 8)))
                im.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return "image_oversized"
    except (OSError, ValueError, SyntaxError, Image.UnidentifiedImageError):
        return "image_undecodable"
    return None


def find_local_image(images_dir: Path, item_id: str) -> Path | None:
    """The first `<item_id>.<ext>` in `images_dir`, or None."""
    if not is_safe_id(item_id):
        return None
    for ext in IMAGE_EXTENSIONS:
        p = images_dir / f"{item_id}{ext}"
        if p.is_file():
            return p
    return None


def verify_many(paths: list[Path], workers: int = 4) -> list[str | None]:
    """verify_image over many files; Pillow decodes outside the GIL, so threads scale."""
    if len(paths) < 64:
        return [verify_image(p) for p in paths]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(verify_image, paths, chunksize=32))
