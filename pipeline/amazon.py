"""Readers for the raw Amazon review releases (2014, 2018, 2023), gzipped or plain.

| release | reviews (JSON lines)                                   | meta                                         |
|---------|--------------------------------------------------------|----------------------------------------------|
| 2014    | reviewerID, asin, overall, unixReviewTime (s)          | Python literals: title, description, imUrl   |
| 2018    | same as 2014                                           | JSON: description [..], imageURLHighRes [..] |
| 2023    | user_id, parent_asin, rating, timestamp (ms)           | JSONL: parent_asin, images[].hi_res/large    |

Every line that cannot be used is counted by kind in a `Problems`, never dropped silently.
"""
from __future__ import annotations

import ast
import gzip
import html
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import orjson
import polars as pl

from pipeline.errors import PipelineError, Problems

FORMATS = ("auto", "2014", "2018", "2023")
# 2014 and 2018 reviews share their keys; only 2023 renamed them.
REVIEW_KEYS = {
    "2014": ("reviewerID", "asin", "overall", "unixReviewTime", 1000),
    "2023": ("user_id", "parent_asin", "rating", "timestamp", 1),
}
_SNIFF_LINES = 1000
# Pulls the item id out of a raw meta line without parsing it, so that the (slow,
# literal_eval) parse is spent only on items that some review mentions.
_META_ID = {
    "parent_asin": re.compile(rb"""["']parent_asin["']\s*:\s*["']([^"']+)["']"""),
    "asin": re.compile(rb"""["']asin["']\s*:\s*["']([^"']+)["']"""),
}
_TAG = re.compile(r"</?[A-Za-z][^<>]{0,300}>")
_SPACE = re.compile(r"\s+")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([.,;:!?])(?=\s|$)")


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise PipelineError(f"unknown Amazon format {fmt!r}: expected one of {', '.join(FORMATS)}")
    return fmt


def iter_lines(path: Path, problems: Problems, what: str) -> Iterator[bytes]:
    """Non-empty lines of a gzipped or plain file; a truncated or corrupt gzip ends the file, counted."""
    path = Path(path)
    if not path.exists():
        raise PipelineError(f"{path}: {what} file not found")
    if not path.is_file():
        raise PipelineError(f"{path}: {what} path is not a file")
    with open(path, "rb") as f:
        is_gzip = f.read(2) == b"\x1f\x8b"
    opener = gzip.open if is_gzip else open
    try:
        with opener(path, "rb") as f:
            for line in f:
                line = line.strip()
                if line:
                    yield line
    except EOFError:
        problems.add(f"{what}_truncated_file")
    except (gzip.BadGzipFile, zlib.error, OSError):
        problems.add(f"{what}_corrupt_compressed_data")


def parse_object(line: bytes) -> dict | None:
    """JSON first (fast); the 2014 meta files are Python literals, so fall back to literal_eval.

    literal_eval only builds literals, never runs code: never `eval` on downloaded data.
    """
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        if not line.startswith(b"{"):
            return None
        try:
            obj = ast.literal_eval(line.decode("utf-8"))
        except (ValueError, SyntaxError, UnicodeDecodeError, MemoryError, RecursionError):
            return None
    return obj if isinstance(obj, dict) else None


# ---------------------------------------------------------------- reviews


REVIEW_SCHEMA = {"user_id": pl.String, "item_id": pl.String, "rating": pl.Float32, "ts_ms": pl.Int64}
CHUNK_ROWS = 200_000  # parsed reviews held as Python objects before they move into a polars chunk


@dataclass
class Reviews:
    """The usable reviews, in file order.

    Parsed rows wait in Python lists (about 200 bytes a review) and move into compact polars
    chunks (about 50) every CHUNK_ROWS rows, so memory grows with the compact columns, not with
    the Python objects: ingesting 5M reviews stays far under 2 GiB (bench/ingest_memory.py).
    """

    lines: int = 0
    format: str = "auto"
    _buf: dict[str, list] = field(default_factory=lambda: {k: [] for k in REVIEW_SCHEMA})
    _chunks: list[pl.DataFrame] = field(default_factory=list)

    def append(self, user: str, item: str, rating: float | None, ts_ms: int) -> None:
        for key, value in zip(REVIEW_SCHEMA, (user, item, rating, ts_ms)):
            self._buf[key].append(value)
        if len(self._buf["user_id"]) >= CHUNK_ROWS:
            self._flush()

    def _flush(self) -> None:
        if self._buf["user_id"]:
            self._chunks.append(pl.DataFrame(self._buf, schema=REVIEW_SCHEMA))
            self._buf = {k: [] for k in REVIEW_SCHEMA}

    def __len__(self) -> int:
        return sum(c.height for c in self._chunks) + len(self._buf["user_id"])

    def frame(self) -> pl.DataFrame:
        """user_id, item_id, rating, ts_ms and `line` (the review's index in file order)."""
        self._flush()
        self._chunks = [pl.concat(self._chunks) if self._chunks else pl.DataFrame(schema=REVIEW_SCHEMA)]
        return self._chunks[0].with_row_index("line")

    # Column views for small uses (tests, the download command's item set).
    @property
    def user(self) -> list[str]:
        return self.frame()["user_id"].to_list()

    @property
    def item(self) -> list[str]:
        return self.frame()["item_id"].to_list()

    @property
    def rating(self) -> list[float | None]:
        return self.frame()["rating"].to_list()

    @property
    def ts_ms(self) -> list[int]:
        return self.frame()["ts_ms"].to_list()


def detect_review_format(obj: dict) -> str | None:
    if "user_id" in obj:
        return "2023"
    if "reviewerID" in obj:
        return "2014"
    return None


def _as_timestamp(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return None


def _as_rating(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def read_reviews(path: Path, fmt: str, problems: Problems) -> Reviews:
    check_format(fmt)
    out = Reviews()
    keys = None
    if fmt != "auto":
        out.format = fmt
        keys = REVIEW_KEYS["2023" if fmt == "2023" else "2014"]
    for line in iter_lines(path, problems, "reviews"):
        out.lines += 1
        obj = parse_object(line)
        if obj is None:
            problems.add("reviews_malformed_line")
            continue
        if keys is None:
            found = detect_review_format(obj)
            if found is None:
                if out.lines >= _SNIFF_LINES:
                    break
                problems.add("reviews_unrecognised_record")
                continue
            out.format, keys = found, REVIEW_KEYS[found]
        _add_review(obj, keys, out, problems)
    if keys is None and problems["reviews_unrecognised_record"]:
        raise PipelineError(f"{path}: unknown reviews format: no record with reviewerID or user_id found")
    if not len(out):
        raise PipelineError(f"{path}: no valid review records ({out.lines} lines read; {_why(problems)})")
    return out


def _add_review(obj: dict, keys: tuple, out: Reviews, problems: Problems) -> None:
    user_key, item_key, rating_key, ts_key, to_ms = keys
    user = obj.get(user_key)
    # 2023 reviews name the variant in `asin` and the product in `parent_asin`; items are products.
    item = obj.get(item_key) or (obj.get("asin") if item_key == "parent_asin" else None)
    if not isinstance(user, str) or not user:
        problems.add(f"reviews_missing_field:{user_key}")
        return
    if not isinstance(item, str) or not item:
        problems.add(f"reviews_missing_field:{item_key}")
        return
    if ts_key not in obj:
        problems.add(f"reviews_missing_field:{ts_key}")
        return
    ts = _as_timestamp(obj[ts_key])
    if ts is None:
        problems.add(f"reviews_bad_value:{ts_key}")
        return
    out.append(user, item, _as_rating(obj.get(rating_key)), ts * to_ms)


# ---------------------------------------------------------------- meta


def clean_text(value: Any) -> str:
    """HTML entities unescaped, tags removed, whitespace collapsed; lists joined."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        value = " ".join(clean_text(v) for v in value)
    elif not isinstance(value, str):
        value = str(value)
    value = _SPACE.sub(" ", _TAG.sub(" ", html.unescape(value))).strip()
    # a removed tag before punctuation ("<b>well</b>.") would leave "well ."
    return _SPACE_BEFORE_PUNCT.sub(r"\1", value)


def item_text(title: str, description: str) -> str:
    if title and description:
        sep = " " if title[-1] in ".!?" else ". "
        return f"{title}{sep}{description}"
    return title or description


def detect_meta_format(obj: dict, literal: bool) -> str:
    if "parent_asin" in obj:
        return "2023"
    if literal or "imUrl" in obj or ("categories" in obj and "category" not in obj):
        return "2014"
    return "2018"


def _first_str(value: Any) -> str | None:
    if isinstance(value, str):
        return value or None
    if isinstance(value, (list, tuple)):
        for v in value:
            if isinstance(v, str) and v:
                return v
    return None


def image_url(obj: dict) -> str | None:
    """The best product image URL that any release's meta record offers."""
    images = obj.get("images")
    if isinstance(images, list) and images and isinstance(images[0], dict):
        main = [im for im in images if isinstance(im, dict) and im.get("variant") == "MAIN"]
        for im in main + [im for im in images if isinstance(im, dict)]:
            url = _first_str(im.get("hi_res")) or _first_str(im.get("large")) or _first_str(im.get("thumb"))
            if url:
                return url
    for key in ("imageURLHighRes", "imageURL", "imUrl", "image"):
        url = _first_str(obj.get(key))
        if url:
            return url
    return None


def categories(obj: dict) -> list[str]:
    raw = obj.get("categories", obj.get("category"))
    if not isinstance(raw, list):
        return []
    paths = raw if raw and all(isinstance(p, list) for p in raw) else [raw]
    return [" > ".join(clean_text(c) for c in p if isinstance(c, str)) for p in paths if p]


def normalise_meta(obj: dict) -> dict[str, Any]:
    title = clean_text(obj.get("title"))
    description = clean_text(obj.get("description"))
    brand = obj.get("brand") or obj.get("store")
    return {
        "title": title,
        "description": description,
        "text": item_text(title, description),
        "categories": categories(obj),
        "brand": clean_text(brand) or None,
        "image_url": image_url(obj),
    }


@dataclass
class Meta:
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    lines: int = 0
    unused: int = 0
    format: str = "auto"


def _meta_id(obj: dict, fmt: str) -> str | None:
    key = obj.get("parent_asin") if fmt in ("2023", "auto") else None
    key = key or obj.get("asin")
    return key if isinstance(key, str) and key else None


def read_meta(path: Path, fmt: str, wanted: set[str] | None, problems: Problems) -> Meta:
    """Meta records of the `wanted` items (all when None); the others are counted as unused."""
    check_format(fmt)
    out = Meta(format=fmt)
    for line in iter_lines(path, problems, "meta"):
        out.lines += 1
        if wanted is not None:
            quick = _quick_meta_id(line)
            if quick is not None and quick not in wanted:
                out.unused += 1
                continue
        obj = parse_object(line)
        if obj is None:
            problems.add("meta_malformed_line")
            continue
        if out.format == "auto":
            out.format = detect_meta_format(obj, literal=not line.startswith(b'{"'))
        item = _meta_id(obj, out.format)
        if item is None:
            problems.add("meta_missing_field:asin")
        elif wanted is not None and item not in wanted:
            out.unused += 1
        elif item in out.rows:
            problems.add("meta_duplicate_record")
        else:
            out.rows[item] = normalise_meta(obj)
    if not out.rows and out.unused == 0:
        raise PipelineError(f"{path}: no valid meta records ({out.lines} lines read; {_why(problems)})")
    return out


def _why(problems: Problems) -> str:
    return problems.kinds() or "the file is empty"


def _quick_meta_id(line: bytes) -> str | None:
    for rx in _META_ID.values():
        m = rx.search(line)
        if m:
            try:
                return m.group(1).decode("utf-8")
            except UnicodeDecodeError:
                return None
    return None


def read_meta_image_urls(meta_path: Path, fmt: str = "auto", wanted: set[str] | None = None) -> dict[str, str | None]:
    """Item id -> best image URL (or None) for the `wanted` items of a meta file (all when None)."""
    problems = Problems()
    meta = read_meta(Path(meta_path), fmt, wanted, problems)
    problems.echo("meta")
    return {item: row["image_url"] for item, row in meta.rows.items()}
