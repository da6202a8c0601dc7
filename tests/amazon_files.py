"""Small raw Amazon files in each release's format, written by the tests themselves."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

from PIL import Image


def write_lines(path: Path, lines: list[str | bytes], gz: bool = True) -> Path:
    data = b"".join((ln if isinstance(ln, bytes) else ln.encode()) + b"\n" for ln in lines)
    path.write_bytes(gzip.compress(data, mtime=0) if gz else data)
    return path


def interactions_grid(n_users: int, n_items: int, per_user: int) -> list[tuple[str, str, int]]:
    """(user, item, unix seconds): user u reviews items u, u+1, ... (mod n_items) on consecutive days."""
    out = []
    for u in range(n_users):
        for j in range(per_user):
            out.append((f"U{u:03d}", f"B{(u + j) % n_items:09d}", 1_300_000_000 + 86400 * (u + j)))
    return out


def review_2014(user: str, item: str, ts: int, rating: float = 5.0) -> str:
    return json.dumps({"reviewerID": user, "asin": item, "overall": rating, "unixReviewTime": ts,
                       "reviewTime": "01 1, 2011", "reviewText": "fine", "summary": "ok"})


def review_2023(user: str, item: str, ts: int, rating: float = 5.0) -> str:
    return json.dumps({"rating": rating, "title": "ok", "text": "fine", "images": [],
                       "asin": item + "-V", "parent_asin": item, "user_id": user,
                       "timestamp": ts * 1000 + 123, "helpful_vote": 0, "verified_purchase": True})


def meta_2014(item: str, title: str = "Soft &amp; Shiny  Shampoo", desc: str | None = "Cleans <b>well</b>.") -> str:
    rec = {"asin": item, "title": title, "imUrl": f"http://img.test/{item}.jpg",
           "categories": [["Beauty", "Hair Care", "Shampoo"]], "related": {"also_bought": ["B000000001"]}}
    if desc is not None:
        rec["description"] = desc
    return repr(rec)  # Python literal, single quotes: what the 2014 files look like


def meta_2018(item: str) -> str:
    return json.dumps({"asin": item, "title": "Gel Polish", "description": ["Long", "lasting &amp; bright"],
                       "imageURL": [f"http://img.test/small/{item}.jpg"],
                       "imageURLHighRes": [f"http://img.test/{item}.jpg"], "category": ["Beauty", "Nails"],
                       "brand": "Acme", "main_cat": "All Beauty"})


def meta_2023(item: str) -> str:
    return json.dumps({"parent_asin": item, "title": "Face Serum", "description": ["Hydrates.", "Daily use."],
                       "images": [{"thumb": f"http://img.test/t/{item}.jpg", "large": f"http://img.test/l/{item}.jpg",
                                   "variant": "PT01", "hi_res": None},
                                  {"thumb": None, "large": f"http://img.test/main/{item}.jpg", "variant": "MAIN",
                                   "hi_res": f"http://img.test/hi/{item}.jpg"}],
                       "categories": ["Beauty", "Skin Care"], "store": "Glow Co", "main_category": "All Beauty"})


def write_image(path: Path, color=(200, 30, 30), size=(16, 16), fmt="JPEG") -> Path:
    Image.new("RGB", size, color).save(path, fmt)
    return path


def make_dataset(root: Path, release: str = "2014", n_users: int = 12, n_items: int = 8, per_user: int = 6,
                 images: bool = True) -> dict[str, Path]:
    """A complete small data set: every user and item has >= 5 interactions."""
    review = review_2023 if release == "2023" else review_2014
    meta = {"2014": meta_2014, "2018": meta_2018, "2023": meta_2023}[release]
    rows = interactions_grid(n_users, n_items, per_user)
    ext = "jsonl" if release == "2023" else "json"
    paths = {
        "reviews": write_lines(root / f"reviews.{ext}.gz", [review(*r) for r in rows]),
        "meta": write_lines(root / f"meta.{ext}.gz", [meta(f"B{i:09d}") for i in range(n_items)]),
        "images_dir": root / "images",
    }
    paths["images_dir"].mkdir(exist_ok=True)
    if images:
        for i in range(n_items):
            write_image(paths["images_dir"] / f"B{i:09d}.jpg")
    return paths
