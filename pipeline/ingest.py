"""Raw Amazon files -> items.parquet, interactions.parquet, splits.parquet, ingest_report.json.

Order of work, as the research filters: parse reviews and meta, drop reviews of items with
no meta, deduplicate, drop items without a valid image (when required), iterate k-core,
then sort each user chronologically and split leave-one-out.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from pipeline import amazon, images, interactions
from pipeline.artifacts import atomic_dir, write_json, write_parquet
from pipeline.errors import PipelineError, Problems
from pipeline.params import DataParams

OUTPUTS = ("items.parquet", "interactions.parquet", "splits.parquet", "ingest_report.json")


@dataclass
class Counts:
    skipped: Problems  # unusable input: malformed lines, missing fields, bad images
    dropped: Problems  # usable input removed by a rule: no meta, duplicates, k-core

    def echo(self) -> None:
        self.skipped.echo("ingest (bad input)")
        self.dropped.echo("ingest (filtered)")


def ingest(cfg: DataParams, out_dir: Path, progress: bool = True) -> dict[str, Any]:
    """Run the stage and return its report.

    The report holds no timings, so the same inputs give byte-identical outputs and DVC can
    skip everything downstream when a code change does not change the data.
    """
    counts = Counts(Problems(), Problems())
    reviews = amazon.read_reviews(Path(cfg.reviews), cfg.format, counts.skipped)
    df = reviews.frame()
    meta = amazon.read_meta(Path(cfg.meta), cfg.format, set(df["item_id"].unique()), counts.skipped)
    if meta.unused:
        counts.dropped.add("meta_without_reviews", meta.unused)
    items = _items_frame(meta)

    known = df["item_id"].is_in(items["item_id"].implode())
    counts.dropped.add("reviews_without_meta", int((~known).sum()))
    df = df.filter(known)
    deduped = interactions.dedup(df)
    counts.dropped.add("duplicate_interactions", df.height - deduped.height)
    df = deduped

    items = items.filter(pl.col("item_id").is_in(df["item_id"].unique().implode()))
    items = items.with_columns(image_path=_image_paths(items, cfg, counts.skipped, progress))
    if cfg.require_image:
        no_image = items.filter(pl.col("image_path").is_null())["item_id"]
        counts.dropped.add("items_without_image", no_image.len())
        before = df.height
        df = df.filter(~pl.col("item_id").is_in(no_image.implode()))
        counts.dropped.add("interactions_of_items_without_image", before - df.height)

    before_users, before_items, before = df["user_id"].n_unique(), df["item_id"].n_unique(), df.height
    df, rounds = interactions.kcore(df, cfg.min_interactions)
    if df.is_empty():
        raise PipelineError(
            f"{cfg.reviews}: no interactions left after {cfg.min_interactions}-core filtering "
            f"(data.min_interactions={cfg.min_interactions})"
        )
    counts.dropped.add("kcore_users", before_users - df["user_id"].n_unique())
    counts.dropped.add("kcore_items", before_items - df["item_id"].n_unique())
    counts.dropped.add("kcore_interactions", before - df.height)

    inter, items, splits = _finalise(df, items)
    report = _report(cfg, reviews, meta, counts, inter, items, rounds)
    with atomic_dir(out_dir) as tmp:
        write_parquet(items, tmp / "items.parquet")
        write_parquet(inter, tmp / "interactions.parquet")
        write_parquet(splits, tmp / "splits.parquet")
        write_json(report, tmp / "ingest_report.json")
    counts.echo()
    return report


def _items_frame(meta: amazon.Meta) -> pl.DataFrame:
    schema = {
        "item_id": pl.String, "title": pl.String, "description": pl.String, "text": pl.String,
        "categories": pl.List(pl.String), "brand": pl.String, "image_url": pl.String,
    }
    rows = [{"item_id": k, **v} for k, v in meta.rows.items()]
    return pl.DataFrame(rows, schema=schema)


def _image_paths(items: pl.DataFrame, cfg: DataParams, skipped: Problems, progress: bool) -> pl.Series:
    ids = items["item_id"].to_list()
    if cfg.images_dir is None:
        from pipeline.image_fetch import fetch_images  # only needed when downloading

        urls = dict(zip(ids, items["image_url"].to_list()))
        found, problems = fetch_images(
            urls, Path(cfg.image_cache), workers=cfg.download_workers, progress=progress
        )
        skipped.update(problems)
        return pl.Series([str(found[i]) if i in found else None for i in ids], dtype=pl.String)
    return pl.Series(_local_images(ids, Path(cfg.images_dir), skipped), dtype=pl.String)


def _local_images(ids: list[str], folder: Path, skipped: Problems) -> list[str | None]:
    if not folder.is_dir():
        raise PipelineError(f"{folder}: images folder not found (data.images_dir)")
    paths: list[str | None] = [None] * len(ids)
    todo: list[tuple[int, Path]] = []
    for i, item in enumerate(ids):
        if not images.is_safe_id(item):
            skipped.add("image_unsafe_id")
        elif (p := images.find_local_image(folder, item)) is None:
            skipped.add("image_missing")
        else:
            todo.append((i, p))
    for (i, p), problem in zip(todo, images.verify_many([p for _, p in todo])):
        if problem:
            skipped.add(problem)
        else:
            paths[i] = str(p)
    return paths


def _finalise(df: pl.DataFrame, items: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    df = interactions.index_ids(df, "user_id", "user_idx")
    df = interactions.index_ids(df, "item_id", "item_idx")
    inter = interactions.order_and_split(df).select(
        "user_idx", "item_idx", "user_id", "item_id", "rating",
        (pl.col("ts_ms") // 1000).alias("timestamp"), "position", "split",
    ).sort(["user_idx", "position"])
    item_idx = inter.select("item_id", "item_idx").unique()
    items = items.join(item_idx, on="item_id", how="inner").sort("item_idx")
    items = items.select("item_idx", pl.exclude("item_idx"))
    return inter, items, interactions.per_user_splits(inter)


def _report(cfg, reviews, meta, counts, inter, items, rounds) -> dict[str, Any]:
    return {
        "inputs": {
            "reviews": str(cfg.reviews), "meta": str(cfg.meta),
            "images": str(cfg.images_dir) if cfg.images_dir else f"downloaded into {cfg.image_cache}",
            "format": {"reviews": reviews.format, "meta": meta.format},
        },
        "params": {"min_interactions": cfg.min_interactions, "require_image": cfg.require_image},
        "read": {
            "review_lines": reviews.lines, "reviews_parsed": len(reviews),
            "meta_lines": meta.lines, "meta_records_used": len(meta.rows),
        },
        "skipped": dict(sorted(counts.skipped.items())),
        "dropped": dict(sorted(counts.dropped.items())),
        "output": {
            "users": inter["user_idx"].n_unique(),
            "items": items.height,
            "interactions": inter.height,
            "items_with_image": int(items["image_path"].is_not_null().sum()),
            "kcore_rounds": rounds,
            "mean_interactions_per_user": round(inter.height / max(1, inter["user_idx"].n_unique()), 3),
        },
    }
