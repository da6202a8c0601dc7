"""The ingest stage end to end on small files written here, plus the real Beauty counts."""
from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from pipeline import artifacts
from pipeline.errors import PipelineError
from pipeline.ingest import OUTPUTS, ingest
from pipeline.params import DataParams
from tests.amazon_files import make_dataset, review_2014, write_image, write_lines

BEAUTY = Path(__file__).resolve().parents[2] / "shared" / "data" / "amazon2014" / "Beauty"


def params(paths: dict, **kw) -> DataParams:
    base = {"reviews": str(paths["reviews"]), "meta": str(paths["meta"]), "images_dir": str(paths["images_dir"])}
    return DataParams(**{**base, **kw})


def read_out(out: Path):
    return (pl.read_parquet(out / "items.parquet"), pl.read_parquet(out / "interactions.parquet"),
            pl.read_parquet(out / "splits.parquet"), json.loads((out / "ingest_report.json").read_text()))


@pytest.mark.parametrize("release", ["2014", "2018", "2023"])
def test_each_release_ingests_to_the_same_tables(tmp_path, release):
    paths = make_dataset(tmp_path, release)
    ingest(params(paths), tmp_path / "out", progress=False)
    items, inter, splits, report = read_out(tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(OUTPUTS)
    assert (items.height, inter.height, splits.height) == (8, 72, 12)
    assert report["inputs"]["format"]["reviews"] == ("2023" if release == "2023" else "2014")
    assert report["inputs"]["format"]["meta"] == release
    assert items["image_path"].null_count() == 0
    assert items["item_idx"].to_list() == list(range(8))
    assert inter.filter(pl.col("split") == "test").height == 12
    # user U000 reviewed items 0..5 on consecutive days: the last one is the test target
    u0 = splits.filter(pl.col("user_id") == "U000").row(0, named=True)
    assert (u0["train"], u0["valid"], u0["test"]) == ([0, 1, 2, 3], 4, 5)


def test_require_image_drops_items_before_kcore_and_counts_every_kind(tmp_path):
    paths = make_dataset(tmp_path, n_users=30, n_items=12, per_user=8)
    img = paths["images_dir"]
    (img / "B000000000.jpg").unlink()  # missing
    (img / "B000000001.jpg").write_bytes(b"<html>not an image</html>")  # undecodable
    data = (img / "B000000002.jpg").read_bytes()
    (img / "B000000002.jpg").write_bytes(data[: len(data) // 2])  # truncated
    (img / "B000000003.jpg").unlink()
    write_image(img / "B000000003.png", fmt="PNG")  # other extension is fine
    ingest(params(paths), tmp_path / "out", progress=False)
    items, inter, _, report = read_out(tmp_path / "out")
    assert report["skipped"] == {"image_missing": 1, "image_undecodable": 2}
    assert report["dropped"]["items_without_image"] == 3
    assert set(items["item_id"]) == {f"B{i:09d}" for i in range(3, 12)}
    assert items.filter(pl.col("item_id") == "B000000003")["image_path"].item().endswith(".png")
    assert inter.group_by("user_idx").len()["len"].min() >= 5
    assert inter.group_by("item_idx").len()["len"].min() >= 5

    ingest(params(paths, require_image=False), tmp_path / "all", progress=False)
    items_all, *_ = read_out(tmp_path / "all")
    assert items_all.height == 12 and items_all["image_path"].null_count() == 3


def test_reviews_without_meta_unused_meta_and_duplicates_are_counted(tmp_path):
    paths = make_dataset(tmp_path, n_users=12, n_items=8, per_user=6)
    extra = [review_2014("U000", "B000000000", 1_400_000_000),  # duplicate pair, later: dropped
             review_2014("U001", "BNOMETA000", 1_300_000_000)]
    lines = [ln.decode() for ln in __import__("gzip").decompress(paths["reviews"].read_bytes()).splitlines()]
    write_lines(paths["reviews"], lines + extra)
    meta_lines = __import__("gzip").decompress(paths["meta"].read_bytes()).decode().splitlines()
    write_lines(paths["meta"], meta_lines + [repr({"asin": "BUNUSED", "title": "x"})])
    ingest(params(paths), tmp_path / "out", progress=False)
    _, inter, _, report = read_out(tmp_path / "out")
    assert report["dropped"]["reviews_without_meta"] == 1
    assert report["dropped"]["meta_without_reviews"] == 1
    assert report["dropped"]["duplicate_interactions"] == 1
    assert inter.height == 72
    first = inter.filter((pl.col("user_id") == "U000") & (pl.col("item_id") == "B000000000"))
    assert first["timestamp"].item() == 1_300_000_000  # the earliest copy was kept


def test_min_interactions_too_high_is_a_clear_error(tmp_path):
    paths = make_dataset(tmp_path, n_users=20, n_items=10, per_user=6)
    with pytest.raises(PipelineError, match=r"no interactions left after 7-core.*data.min_interactions=7"):
        ingest(params(paths, min_interactions=7), tmp_path / "out", progress=False)
    ingest(params(paths, min_interactions=6), tmp_path / "out", progress=False)
    assert read_out(tmp_path / "out")[1].height == 120


def test_missing_inputs_are_fatal_and_name_the_path(tmp_path):
    paths = make_dataset(tmp_path)
    with pytest.raises(PipelineError, match=r"nowhere: images folder not found \(data.images_dir\)"):
        ingest(params(paths, images_dir=str(tmp_path / "nowhere")), tmp_path / "out", progress=False)
    with pytest.raises(PipelineError, match=r"missing.json.gz: meta file not found"):
        ingest(params(paths, meta=str(tmp_path / "missing.json.gz")), tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_killed_write_leaves_previous_output_whole(tmp_path, monkeypatch):
    paths = make_dataset(tmp_path)
    out = tmp_path / "out"
    ingest(params(paths), out, progress=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    real = artifacts.write_parquet
    calls = []

    def dies_on_second_file(df, dest):
        calls.append(dest)
        if len(calls) == 2:
            Path(dest).write_bytes(b"PAR1 half")  # what a kill mid-write would leave
            raise KeyboardInterrupt
        real(df, dest)

    monkeypatch.setattr("pipeline.ingest.write_parquet", dies_on_second_file)
    with pytest.raises(KeyboardInterrupt):
        ingest(params(paths, min_interactions=6), out, progress=False)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []


def test_atomic_path_replaces_only_on_success(tmp_path):
    dest = tmp_path / "a.json"
    artifacts.write_json({"v": 1}, dest)
    with pytest.raises(RuntimeError):
        with artifacts.atomic_path(dest) as tmp:
            tmp.write_text("partial")
            raise RuntimeError
    assert json.loads(dest.read_text()) == {"v": 1}
    assert list(tmp_path.iterdir()) == [dest]


@pytest.mark.realdata
@pytest.mark.skipif(not BEAUTY.is_dir(), reason="needs ../shared/data/amazon2014/Beauty")
def test_real_beauty_counts(tmp_path):
    cfg = DataParams(reviews=str(BEAUTY / "reviews_Beauty_5.json.gz"), meta=str(BEAUTY / "meta_Beauty.json.gz"),
                     images_dir=str(tmp_path), require_image=False)
    report = ingest(cfg, tmp_path / "out", progress=False)
    assert (report["output"]["users"], report["output"]["items"], report["output"]["interactions"]) == (
        22_363, 12_101, 198_502)
    assert report["skipped"] == {"image_missing": 12_101}
    splits = pl.read_parquet(tmp_path / "out" / "splits.parquet")
    assert splits.height == 22_363 and splits["train"].list.len().min() >= 3


def test_without_images_dir_images_are_downloaded_into_the_cache(tmp_path, http_server):
    import io

    from PIL import Image

    from tests.amazon_files import meta_2014

    paths = make_dataset(tmp_path, n_users=12, n_items=8, per_user=6, images=False)
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (9, 9, 9)).save(buf, format="JPEG")
    lines = []
    for i in range(8):
        item = f"B{i:09d}"
        lines.append(meta_2014(item).replace(f"http://img.test/{item}.jpg", http_server.url(f"/{item}.jpg")))
        if i != 7:  # the last one is a 404 on the server
            http_server.routes[f"/{item}.jpg"] = buf.getvalue()
    write_lines(paths["meta"], lines)
    cfg = params(paths, images_dir=None, image_cache=str(tmp_path / "cache"), require_image=False)
    ingest(cfg, tmp_path / "out", progress=False)
    items, _, _, report = read_out(tmp_path / "out")
    assert report["skipped"] == {"image_http_error": 1}
    assert items["image_path"].null_count() == 1
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [f"B{i:09d}.jpg" for i in range(7)]
