from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from pipeline.errors import PipelineError
from pipeline.layout import EOS, FIRST_FREE, Layout, _dedup, user_tokens
from pipeline.sequences import build_sequences, eval_rows, train_prefixes
from tests.recsys_data import write_tiny_dataset


@pytest.fixture
def data(tmp_path):
    return write_tiny_dataset(tmp_path)


def build(data, modalities, transition=False, history=20, user_buckets=5, name="v"):
    out = data / "seq" / name
    report = build_sequences(data / "splits.parquet", data / "semantic_ids", modalities, transition,
                             history, user_buckets, out)
    return out, report, Layout.load(out / "layout.json")


def test_text_layout_offsets_and_tokens(data):
    out, report, layout = build(data, ["text"], user_buckets=5)
    assert [p.name for p in layout.positions] == ["text_1", "text_2"]  # unique tuples: no dedup token
    assert [(p.offset, p.size) for p in layout.positions] == [(FIRST_FREE + 5, 4), (FIRST_FREE + 5 + 4, 6)]
    assert layout.vocab_size == FIRST_FREE + 5 + 4 + 6
    items = pl.read_parquet(out / "items.parquet")
    assert items["tokens"][5].to_list() == [FIRST_FREE + 5 + 5 % 4, FIRST_FREE + 5 + 4 + (5 // 4) % 6]


def test_late_fusion_layouts_with_and_without_transition(data):
    _, _, lf = build(data, ["text", "image"], name="lf")
    _, _, lfpp = build(data, ["text", "image"], transition=True, name="lfpp")
    assert [p.name for p in lf.positions] == ["text_1", "text_2", "image_1", "image_2", "image_3"]
    assert [p.name for p in lfpp.positions] == ["text_1", "text_2", "to_image", "image_1", "image_2", "image_3"]
    for layout in (lf, lfpp):  # ranges are contiguous and disjoint: code c at level l has one token
        ends = [p.offset + p.size for p in layout.positions]
        assert [p.offset for p in layout.positions[1:]] == ends[:-1]
    assert lfpp.positions[2].size == 1
    assert lfpp.spans == {"text": [0, 2], "image": [3, 6]}


def test_dedup_over_the_whole_tuple(data):
    # image tuples collide (18 tuples for 24 items): the image-only variant needs a dedup token,
    # the late-fusion tuple (text codes are unique) does not.
    out, _, image = build(data, ["image"], name="image")
    assert image.positions[-1].name == "dedup"
    tokens = np.array(pl.read_parquet(out / "items.parquet")["tokens"].to_list())
    assert len({tuple(t) for t in tokens}) == len(tokens)
    assert _dedup(np.array([[1, 2], [3, 4], [1, 2], [1, 2]])).tolist() == [0, 0, 1, 2]


def test_prefix_expansion_and_history_cap():
    splits = pl.DataFrame({"user_idx": [7], "train": [[10, 11, 12, 13]], "valid": [14], "test": [15]},
                          schema_overrides={"train": pl.List(pl.Int32)})
    rows = train_prefixes(splits, history=2)
    assert rows["history"].to_list() == [[10], [10, 11], [11, 12]]
    assert rows["target"].to_list() == [11, 12, 13]
    assert eval_rows(splits, 2, "valid").row(0) == (7, [12, 13], 14)
    assert eval_rows(splits, 3, "test").row(0) == (7, [12, 13, 14], 15)


def test_input_ids_are_user_token_history_tokens_and_eos(data):
    out, report, layout = build(data, ["text", "image"], transition=True, user_buckets=5, name="lfpp")
    items = pl.read_parquet(out / "items.parquet")
    tok = dict(zip(items["item_idx"].to_list(), items["tokens"].to_list()))
    train = pl.read_parquet(out / "train.parquet")
    for row in train.head(5).iter_rows(named=True):
        user = int(user_tokens(np.array([row["user_idx"]]), layout)[0])
        expected = [user] + [t for i in row["history"] for t in tok[i]] + [EOS]
        assert row["input_ids"] == expected
        assert row["labels"] == tok[row["target"]]
    n_users, length = 40, 7
    assert report["train"]["rows"] == n_users * (length - 3)  # every prefix of a 5-item training part
    assert json.loads((out / "report.json").read_text())["valid"]["rows"] == n_users


def test_no_user_token_when_buckets_zero(data):
    out, _, layout = build(data, ["text"], user_buckets=0)
    first = pl.read_parquet(out / "valid.parquet")["input_ids"][0].to_list()
    assert layout.user_buckets == 0 and first[0] >= FIRST_FREE and first[-1] == EOS


def test_rows_with_items_without_ids_are_dropped_and_counted(data):
    ids = pl.read_parquet(data / "semantic_ids" / "text.parquet")
    ids.filter(pl.col("item_idx") != 3).write_parquet(data / "semantic_ids" / "text.parquet")
    _, report, _ = build(data, ["text"])
    dropped = report["dropped_rows_without_ids"]
    assert dropped["train"] > 0 and report["items"] == 23
    splits = pl.read_parquet(data / "splits.parquet")
    assert report["test"]["rows"] + dropped["test"] == splits.height


def test_missing_split_column_is_one_line_error(data):
    pl.read_parquet(data / "splits.parquet").drop("valid").write_parquet(data / "splits.parquet")
    with pytest.raises(PipelineError, match=r"splits.parquet: missing column\(s\) valid"):
        build(data, ["text"])
