"""Property-based tests (hypothesis, derandomized so runs repeat): parsers and ingestion on arbitrary
input never crash beyond a one-line PipelineError and account for every line; the sequence builder
keeps its invariants on arbitrary histories."""
from __future__ import annotations

import gzip

import numpy as np
import orjson
import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.amazon import parse_object, read_meta, read_reviews
from pipeline.errors import PipelineError, Problems
from pipeline.layout import EOS, Layout, Position
from pipeline.sequences import input_ids, train_prefixes

SETTINGS = settings(derandomize=True, deadline=None, max_examples=60,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

GOOD = st.fixed_dictionaries({"reviewerID": st.text(min_size=1, max_size=8), "asin": st.text(min_size=1, max_size=8),
                              "overall": st.floats(1, 5), "unixReviewTime": st.integers(0, 2**31)})
# Junk never starts with the gzip magic: a first line that did would make the reader treat the whole
# (plain) file as gzip, which is a different test (below).
JUNK = st.one_of(st.binary(max_size=40).filter(lambda b: not b.startswith(b"\x1f")),
                 st.dictionaries(st.text(max_size=5), st.integers(-2**63, 2**63 - 1), max_size=3).map(orjson.dumps),
                 st.just(b'{"reviewerID": "u"}'), st.just(b"{'asin': 1"))


@SETTINGS
@given(st.binary(max_size=200))
def test_parse_object_never_raises(line):
    assert parse_object(line) is None or isinstance(parse_object(line), dict)


@SETTINGS
@given(st.lists(st.one_of(GOOD.map(lambda d: ("good", orjson.dumps(d))), JUNK.map(lambda b: ("junk", b))),
                min_size=1, max_size=30))
def test_every_review_line_is_kept_or_counted(tmp_path, lines):
    path = tmp_path / "reviews.json"
    path.write_bytes(b"\n".join(b.replace(b"\n", b" ") for _, b in lines) + b"\n")
    problems = Problems()
    n_good = sum(kind == "good" for kind, _ in lines)
    try:
        reviews = read_reviews(path, "2014", problems)
    except PipelineError as err:
        assert "\n" not in str(err) and n_good == 0
        return
    kept = len(reviews.user)
    assert kept >= n_good  # junk that happens to be a valid record may be kept too
    non_empty = sum(bool(b.replace(b"\n", b" ").strip()) for _, b in lines)
    assert kept + sum(problems.values()) == non_empty


@SETTINGS
@given(st.integers(10, 2000), st.integers(0, 2**32 - 1))
def test_truncated_or_corrupt_gzip_is_counted(tmp_path, cut, seed):
    rng = np.random.default_rng(seed)
    records = b"".join(orjson.dumps({"reviewerID": f"u{i}", "asin": f"i{i % 7}", "overall": 5.0,
                                     "unixReviewTime": 1000 + i}) + b"\n" for i in range(200))
    full = gzip.compress(records)
    blob = bytearray(full)[:cut]
    flipped = rng.random() < 0.5 and len(blob) > 20
    if flipped:  # a corrupt byte inside the compressed stream (or its checksum)
        blob[int(rng.integers(10, len(blob)))] ^= 0xFF
    path = tmp_path / "reviews.json.gz"
    path.write_bytes(bytes(blob))
    problems = Problems()
    try:
        reviews = read_reviews(path, "2014", problems)
    except PipelineError as err:  # nothing readable survived: one line, names the file
        assert "\n" not in str(err) and str(path) in str(err)
        return
    damaged = problems["reviews_truncated_file"] + problems["reviews_corrupt_compressed_data"]
    if cut < len(full) or flipped:
        assert damaged == 1  # the damage is counted once; the lines before it are kept
    else:
        assert damaged == 0 and len(reviews.user) == 200

META = st.fixed_dictionaries({"asin": st.sampled_from([f"B{i}" for i in range(6)]),
                              "title": st.text(max_size=20), "imUrl": st.just("http://x/i.jpg")},
                             optional={"description": st.text(max_size=30),
                                       "categories": st.lists(st.lists(st.text(max_size=5), max_size=2), max_size=2)})


@SETTINGS
@given(st.lists(st.one_of(META.map(lambda d: repr(d).encode()), JUNK), min_size=1, max_size=30),
       st.one_of(st.none(), st.sets(st.sampled_from([f"B{i}" for i in range(6)]))))
def test_every_meta_line_is_used_or_counted(tmp_path, lines, wanted):
    """2014 meta lines (Python literals) mixed with junk: each line becomes a record, is counted
    unused (an item no review wants), or is counted as a problem; never an uncaught exception."""
    path = tmp_path / "meta.json"
    path.write_bytes(b"\n".join(b.replace(b"\n", b" ") for b in lines) + b"\n")
    problems = Problems()
    try:
        meta = read_meta(path, "2014", wanted, problems)
    except PipelineError as err:
        assert "\n" not in str(err)
        return
    assert meta.lines == sum(bool(b.replace(b"\n", b" ").strip()) for b in lines)
    assert len(meta.rows) + meta.unused + sum(problems.values()) == meta.lines
    assert wanted is None or set(meta.rows) <= wanted


HISTORIES = st.lists(st.lists(st.integers(0, 9), min_size=0, max_size=12), min_size=1, max_size=15)


@SETTINGS
@given(HISTORIES, st.integers(1, 6))
def test_prefixes_are_every_position_with_a_capped_history(trains, history):
    splits = pl.DataFrame({"user_idx": list(range(len(trains))), "train": trains},
                          schema={"user_idx": pl.Int32, "train": pl.List(pl.Int32)})
    rows = train_prefixes(splits, history)
    assert rows.height == sum(max(len(t) - 1, 0) for t in trains)
    expected = [(u, t[max(0, j - history):j], t[j]) for u, t in enumerate(trains) for j in range(1, len(t))]
    got = list(zip(rows["user_idx"].to_list(), rows["history"].to_list(), rows["target"].to_list()))
    assert got == expected


@SETTINGS
@given(HISTORIES.filter(lambda ts: all(ts)), st.integers(1, 3), st.booleans())
def test_input_ids_spell_user_history_and_eos(trains, item_len, with_user):
    tokens = np.arange(10 * item_len, dtype=np.int32).reshape(10, item_len) + 100
    layout = Layout(["text"], [Position(f"text_{i}", 100, 10 * item_len) for i in range(item_len)],
                    2, 50, 20, 100 + 10 * item_len, {"text": [0, item_len]})
    rows = pl.DataFrame({"user_idx": list(range(len(trains))), "history": trains},
                        schema={"user_idx": pl.Int64, "history": pl.List(pl.Int64)})
    ids = input_ids(rows, layout, tokens, np.arange(10), with_user=with_user).to_pylist()
    for u, (hist, seq) in enumerate(zip(trains, ids)):
        body = [int(x) for i in hist for x in tokens[i]]
        assert seq[-1] == EOS and seq[int(with_user):-1] == body
        if with_user:
            assert 2 <= seq[0] < 52



@SETTINGS
@given(st.integers(0, 4000), st.binary(min_size=0, max_size=64))
def test_ingest_stage_on_damaged_reviews_counts_in_the_report(tmp_path_factory, cut, junk):
    """The whole ingest stage, fed a reviews file cut short and followed by random bytes: one-line
    fatal error, or an output whose report counts the damage."""
    from pipeline.ingest import ingest
    from pipeline.params import DataParams
    from tests.amazon_files import make_dataset

    root = tmp_path_factory.mktemp("ingest")
    paths = make_dataset(root, "2014")
    whole = paths["reviews"].read_bytes()
    assert whole[:2] == b"\x1f\x8b"  # gzipped
    paths["reviews"].write_bytes(whole[:cut] + junk)
    cfg = DataParams(reviews=str(paths["reviews"]), meta=str(paths["meta"]), images_dir=str(paths["images_dir"]))
    try:
        report = ingest(cfg, root / "out", progress=False)
    except PipelineError as err:
        assert "\n" not in str(err)
        return
    damage = report["skipped"].get("reviews_truncated_file", 0) + report["skipped"].get(
        "reviews_corrupt_compressed_data", 0)
    if cut < len(whole):  # the gzip stream ends early (or the junk breaks it): counted once
        assert damage == 1
    else:  # whole file, then junk: counted once, or nothing if gzip reads it as padding
        assert damage <= 1 and report["read"]["reviews_parsed"] >= 1
