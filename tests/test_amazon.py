"""Parsing the three Amazon releases, and counting every line that cannot be used."""
from __future__ import annotations

import gzip
import json

import pytest

from pipeline import amazon
from pipeline.errors import PipelineError, Problems
from tests.amazon_files import meta_2014, meta_2018, meta_2023, review_2014, review_2023, write_lines


def test_clean_text_unescapes_strips_tags_and_joins_lists():
    assert amazon.clean_text("Soft &amp; Shiny <br/>  Shampoo\n") == "Soft & Shiny Shampoo"
    assert amazon.clean_text(["Long", " lasting &lt;3 ", None]) == "Long lasting <3"
    assert amazon.clean_text("size < 5 ml and > 2") == "size < 5 ml and > 2"
    assert amazon.item_text("Gel.", "Bright") == "Gel. Bright"
    assert amazon.item_text("Gel", "Bright") == "Gel. Bright"
    assert amazon.item_text("", "Bright") == "Bright"


@pytest.mark.parametrize("gz", [True, False])
def test_reviews_2014_plain_or_gzipped(tmp_path, gz):
    path = write_lines(tmp_path / "r.json", [review_2014("U1", "B1", 100, 4.0), review_2014("U2", "B1", 50)], gz=gz)
    problems = Problems()
    r = amazon.read_reviews(path, "auto", problems)
    assert r.format == "2014"
    assert (r.user, r.item, r.rating, r.ts_ms) == (["U1", "U2"], ["B1", "B1"], [4.0, 5.0], [100_000, 50_000])
    assert not problems


def test_reviews_2023_use_parent_asin_and_milliseconds(tmp_path):
    path = write_lines(tmp_path / "r.jsonl.gz", [review_2023("U1", "P1", 100)])
    r = amazon.read_reviews(path, "auto", Problems())
    assert r.format == "2023"
    assert r.item == ["P1"] and r.ts_ms == [100_123]


def test_reviews_bad_lines_are_counted_by_kind(tmp_path):
    lines = [
        review_2014("U1", "B1", 100),
        '{"reviewerID": "U1", "asin": "B2", "overall": 5.0, "unixReviewT',  # truncated line
        "not json at all",
        '{"reviewerID": "U2", "overall": 5.0, "unixReviewTime": 1}',  # no asin
        '{"reviewerID": "U3", "asin": "B1", "overall": 5.0}',  # no time
        '{"reviewerID": "U3", "asin": "B1", "unixReviewTime": "yesterday"}',
        '["a", "list"]',
        review_2014("U4", "B1", 7),
    ]
    problems = Problems()
    r = amazon.read_reviews(write_lines(tmp_path / "r.json.gz", lines), "auto", problems)
    assert r.user == ["U1", "U4"] and r.lines == 8
    assert problems == {
        "reviews_malformed_line": 3,
        "reviews_missing_field:asin": 1,
        "reviews_missing_field:unixReviewTime": 1,
        "reviews_bad_value:unixReviewTime": 1,
    }


def test_truncated_gzip_keeps_what_was_read_and_counts_it(tmp_path):
    full = gzip.compress("".join(review_2014(f"U{i}", "B1", i) + "\n" for i in range(2000)).encode())
    path = tmp_path / "r.json.gz"
    path.write_bytes(full[: len(full) // 2])
    problems = Problems()
    r = amazon.read_reviews(path, "auto", problems)
    assert 0 < len(r.user) < 2000
    assert problems["reviews_truncated_file"] == 1


def test_missing_file_and_unknown_format_are_fatal_one_liners(tmp_path):
    with pytest.raises(PipelineError, match="nope.json: reviews file not found"):
        amazon.read_reviews(tmp_path / "nope.json", "auto", Problems())
    path = write_lines(tmp_path / "r.json", ['{"foo": 1}'] * 3)
    with pytest.raises(PipelineError, match="unknown reviews format"):
        amazon.read_reviews(path, "auto", Problems())
    with pytest.raises(PipelineError, match="unknown Amazon format '2016'"):
        amazon.read_reviews(path, "2016", Problems())
    empty = write_lines(tmp_path / "e.json", [review_2014("U1", "", 1)])
    with pytest.raises(PipelineError, match=r"no valid review records \(1 lines read; reviews_missing_field:asin=1\)"):
        amazon.read_reviews(empty, "2014", Problems())
    wrong = write_lines(tmp_path / "w.json", [review_2023("U1", "B1", 1)])
    with pytest.raises(PipelineError, match=r"reviews_missing_field:reviewerID=1"):
        amazon.read_reviews(wrong, "2014", Problems())
    garbage = tmp_path / "g.json.gz"
    garbage.write_bytes(b"\x1f\x8b" + bytes(range(256)) * 4)
    with pytest.raises(PipelineError, match=r"g.json.gz: no valid review records \(0 lines read; reviews_corrupt"):
        amazon.read_reviews(garbage, "auto", Problems())


def test_meta_2014_python_literals(tmp_path):
    path = write_lines(tmp_path / "m.json.gz", [meta_2014("B1"), meta_2014("B2", desc=None)])
    meta = amazon.read_meta(path, "auto", None, Problems())
    assert meta.format == "2014"
    b1 = meta.rows["B1"]
    assert b1["title"] == "Soft & Shiny Shampoo"
    assert b1["text"] == "Soft & Shiny Shampoo. Cleans well."
    assert b1["image_url"] == "http://img.test/B1.jpg"
    assert b1["categories"] == ["Beauty > Hair Care > Shampoo"]
    assert meta.rows["B2"]["text"] == "Soft & Shiny Shampoo"


def test_meta_literal_eval_never_runs_code(tmp_path):
    evil = "{'asin': 'B1', 'title': __import__('os').system('touch " + str(tmp_path / "pwned") + "')}"
    problems = Problems()
    with pytest.raises(PipelineError, match="no valid meta records"):
        amazon.read_meta(write_lines(tmp_path / "m.json", [evil]), "auto", None, problems)
    assert problems["meta_malformed_line"] == 1
    assert not (tmp_path / "pwned").exists()


def test_meta_2018_and_2023_fields(tmp_path):
    m18 = amazon.read_meta(write_lines(tmp_path / "a.json.gz", [meta_2018("B1")]), "auto", None, Problems())
    assert m18.format == "2018"
    assert m18.rows["B1"]["image_url"] == "http://img.test/B1.jpg"  # high-res preferred
    assert m18.rows["B1"]["description"] == "Long lasting & bright"
    assert m18.rows["B1"]["categories"] == ["Beauty > Nails"]
    m23 = amazon.read_meta(write_lines(tmp_path / "b.jsonl", [meta_2023("P1")], gz=False), "auto", None, Problems())
    assert m23.format == "2023"
    row = m23.rows["P1"]
    assert row["image_url"] == "http://img.test/hi/P1.jpg"  # MAIN variant, hi_res
    assert row["text"] == "Face Serum. Hydrates. Daily use."
    assert row["brand"] == "Glow Co"


def test_meta_unwanted_records_are_counted_not_parsed(tmp_path):
    lines = [meta_2014("B1"), meta_2014("B2"), "{'asin': 'B3', broken", meta_2014("B1")]
    problems = Problems()
    meta = amazon.read_meta(write_lines(tmp_path / "m.json", lines), "auto", {"B1"}, problems)
    assert set(meta.rows) == {"B1"}
    assert meta.unused == 2  # B2 and the broken B3 line: no review needs them
    assert problems == {"meta_duplicate_record": 1}


def test_read_meta_image_urls(tmp_path):
    path = write_lines(tmp_path / "m.json", [meta_2014("B1"), repr({"asin": "B2", "title": "x"})])
    assert amazon.read_meta_image_urls(path) == {"B1": "http://img.test/B1.jpg", "B2": None}


def test_reviews_move_into_chunks_in_file_order(tmp_path, monkeypatch):
    """Parsed reviews leave the Python lists every CHUNK_ROWS rows; the frame is the file's order."""
    monkeypatch.setattr(amazon, "CHUNK_ROWS", 3)
    lines = [json.dumps({"reviewerID": f"U{i}", "asin": f"B{i % 4}", "overall": i % 5 + 1, "unixReviewTime": 100 + i})
             for i in range(10)]
    lines.insert(4, "not json")
    r = amazon.read_reviews(write_lines(tmp_path / "r.json.gz", lines), "2014", Problems())
    assert len(r._chunks) == 3 and len(r) == 10  # 3 + 3 + 3 moved, 1 still buffered
    df = r.frame()
    assert df["user_id"].to_list() == [f"U{i}" for i in range(10)] and df["line"].to_list() == list(range(10))
    assert df["ts_ms"].to_list() == [(100 + i) * 1000 for i in range(10)]
