"""The embedding stage: skipped inputs counted, schema, resume after a crash, determinism, fusion, CLI."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
import typer
from typer.testing import CliRunner

import pipeline.embed as embed_mod
from pipeline.embed import embed_items, fuse
from pipeline.errors import PipelineError
from pipeline.params import FusedEmbedParams, ImageEmbedParams, TextEmbedParams
from pipeline.vectors import read_vectors, write_vectors
from stages.embed import embed as embed_command
from tests.amazon_files import write_image

TEXTS = ["red lipstick for soft lips", "blue mascara for the eyes", None, "oily hair shampoo", "   ",
         "gentle cream", "long lasting red colour"]




@pytest.fixture
def items(tmp_path) -> pl.DataFrame:
    """7 items, listed out of order: 2 without text; images: 4 good, 1 missing, 1 corrupt, 1 null path."""
    img = tmp_path / "images"
    img.mkdir()
    colours = [(220, 20, 20), (20, 20, 220), (20, 200, 20), (200, 200, 20)]
    good = [write_image(img / f"I{i}.jpg", c, size=(32, 32)) for i, c in enumerate(colours)]
    (img / "corrupt.jpg").write_bytes(good[0].read_bytes()[:100])
    paths = [str(good[0]), str(good[1]), str(img / "gone.jpg"), str(good[2]), None, str(img / "corrupt.jpg"),
             str(good[3])]
    frame = pl.DataFrame({
        "item_idx": pl.Series(range(7), dtype=pl.Int32), "item_id": [f"B{i:09d}" for i in range(7)],
        "text": TEXTS, "title": TEXTS, "description": [None] * 7, "image_path": paths,
    })
    return frame.reverse()  # input order must not matter: outputs are sorted by item_idx


def text_cfg(tiny_bert: Path, **kw) -> TextEmbedParams:
    return TextEmbedParams(**{"model": "tiny", "weights": str(tiny_bert), "batch_size": 2, **kw})


def image_cfg(tiny_clip: str, **kw) -> ImageEmbedParams:
    return ImageEmbedParams(**{"model": tiny_clip, "weights": "random", "batch_size": 2, **kw})


def check_vectors_file(path: Path, ids: list[int], dim: int) -> np.ndarray:
    schema = pq.read_schema(path)
    assert str(schema.field("item_idx").type) == "int32"
    assert str(schema.field("item_id").type) == "string"
    assert str(schema.field("embedding").type) == f"fixed_size_list<element: float>[{dim}]"
    keys, matrix = read_vectors(path)
    assert keys["item_idx"].to_list() == ids
    assert keys["item_id"].to_list() == [f"B{i:09d}" for i in ids]
    assert matrix.shape == (len(ids), dim) and matrix.dtype == np.float32
    return matrix


def test_image_embedding_counts_every_skipped_item(tiny_clip, items, tmp_path):
    out = tmp_path / "emb" / "image.parquet"
    report = embed_items("image", items, image_cfg(tiny_clip), out, tmp_path / "work", progress=False)
    assert report["skipped"] == {"image_missing": 1, "image_no_path": 1, "image_undecodable": 1}
    assert (report["items_in"], report["items_out"], report["dim"], report["resumed_chunks"]) == (7, 4, 32, 0)
    assert report["weights"] == {"spec": "random", "kind": "random", "resolved": None, "seed": 0}
    matrix = check_vectors_file(out, [0, 1, 3, 6], 32)
    np.testing.assert_allclose(np.linalg.norm(matrix, axis=1), 1.0, atol=1e-6)
    assert not np.allclose(matrix[0], matrix[1])
    assert list((tmp_path / "work").iterdir()) == []  # the chunk folder is gone after success


def test_text_embedding_skips_empty_text_and_keeps_order(tiny_bert, items, tmp_path):
    out = tmp_path / "text.parquet"
    report = embed_items("text", items, text_cfg(tiny_bert), out, tmp_path / "work", progress=False)
    assert report["skipped"] == {"text_empty": 2}
    assert (report["encoder"], report["model"], report["items_out"], report["normalize"]) == ("hf", "tiny", 5, True)
    matrix = check_vectors_file(out, [0, 1, 3, 5, 6], 32)
    np.testing.assert_allclose(np.linalg.norm(matrix, axis=1), 1.0, atol=1e-6)
    # Batches are formed by length, but each row must still be its own item's vector.
    from pipeline.text_encoder import HFTextEncoder
    direct = HFTextEncoder(text_cfg(tiny_bert)).encode([TEXTS[i] for i in (0, 1, 3, 5, 6)])
    direct /= np.linalg.norm(direct, axis=1, keepdims=True)
    np.testing.assert_allclose(matrix, direct, atol=1e-5)


def test_without_normalize_vectors_keep_their_norm(tiny_bert, items, tmp_path):
    out = tmp_path / "text.parquet"
    embed_items("text", items, text_cfg(tiny_bert, normalize=False), out, tmp_path / "work", progress=False)
    _, matrix = read_vectors(out)
    assert not np.allclose(np.linalg.norm(matrix, axis=1), 1.0, atol=1e-3)


def test_runs_are_byte_identical(tiny_clip, items, tmp_path):
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    ra = embed_items("image", items, image_cfg(tiny_clip, chunk_size=3), a, tmp_path / "work", progress=False)
    rb = embed_items("image", items, image_cfg(tiny_clip, chunk_size=3, workers=3), b, tmp_path / "work",
                     progress=False)
    assert a.read_bytes() == b.read_bytes()
    assert json.dumps(ra) == json.dumps(rb)


def test_resume_after_a_crash_reuses_finished_chunks(tiny_bert, items, tmp_path, monkeypatch):
    cfg = text_cfg(tiny_bert, chunk_size=2)  # 7 items -> 4 chunks, one encoder call per chunk
    whole = tmp_path / "whole.parquet"
    embed_items("text", items, cfg, whole, tmp_path / "work-whole", progress=False)

    real_load = embed_mod._load_encoder
    calls = []

    def counting(crash_on: int | None):
        def load(modality, c):
            enc = real_load(modality, c)
            encode = enc.encode

            def wrapped(texts):
                calls.append(list(texts))
                if len(calls) == crash_on:
                    raise KeyboardInterrupt  # the run is killed mid-way
                return encode(texts)
            enc.encode = wrapped
            return enc
        return load

    out, work = tmp_path / "out.parquet", tmp_path / "work"
    monkeypatch.setattr(embed_mod, "_load_encoder", counting(crash_on=2))
    with pytest.raises(KeyboardInterrupt):
        embed_items("text", items, cfg, out, work, progress=False)
    assert not out.exists()
    [chunk_dir] = list(work.iterdir())
    assert [p.name for p in chunk_dir.iterdir()] == ["chunk-00000.parquet"]

    calls.clear()
    monkeypatch.setattr(embed_mod, "_load_encoder", counting(crash_on=None))
    report = embed_items("text", items, cfg, out, work, progress=False)
    assert report["resumed_chunks"] == 1
    # chunk 0 (items 0, 1) is read back, not encoded again; items 2 and 4 have no text
    assert calls == [[TEXTS[3]], [TEXTS[5]], [TEXTS[6]]]
    assert report["skipped"] == {"text_empty": 2}
    assert out.read_bytes() == whole.read_bytes()
    assert not chunk_dir.exists()


def test_changed_input_does_not_reuse_chunks(tiny_bert, items, tmp_path, monkeypatch):
    cfg = text_cfg(tiny_bert, chunk_size=2)
    monkeypatch.setattr(embed_mod, "write_chunk", _crash_after_first(embed_mod.write_chunk))
    with pytest.raises(KeyboardInterrupt):
        embed_items("text", items, cfg, tmp_path / "out.parquet", tmp_path / "work", progress=False)
    monkeypatch.undo()
    changed = items.with_columns(pl.when(pl.col("item_idx") == 0).then(pl.lit("blue cream"))
                                 .otherwise(pl.col("title")).alias("title"))
    report = embed_items("text", changed, cfg, tmp_path / "out.parquet", tmp_path / "work", progress=False)
    assert report["resumed_chunks"] == 0
    report = embed_items("text", items, text_cfg(tiny_bert, chunk_size=2, batch_size=1),
                         tmp_path / "out.parquet", tmp_path / "work", progress=False)
    assert report["resumed_chunks"] == 0  # other params: other fingerprint


def test_chunks_are_keyed_by_the_resolved_dtype(tiny_bert, items, tmp_path, monkeypatch):
    work, out = tmp_path / "work", tmp_path / "out.parquet"
    monkeypatch.setattr(embed_mod, "write_chunk", _crash_after_first(embed_mod.write_chunk))
    with pytest.raises(KeyboardInterrupt):  # one bfloat16 chunk left behind
        embed_items("text", items, text_cfg(tiny_bert, chunk_size=2, dtype="bfloat16"), out, work, progress=False)
    monkeypatch.undo()
    # `auto` where it means float32 does not reuse it ...
    monkeypatch.setattr("pipeline.precision.native_bfloat16", lambda device: False)
    report = embed_items("text", items, text_cfg(tiny_bert, chunk_size=2, dtype="auto"), out, work, progress=False)
    assert report["dtype"] == "float32" and report["resumed_chunks"] == 0
    # ... and where it means bfloat16 it does: the key is what ran, not the word
    monkeypatch.setattr("pipeline.precision.native_bfloat16", lambda device: True)
    report = embed_items("text", items, text_cfg(tiny_bert, chunk_size=2, dtype="auto"), out, work, progress=False)
    assert report["dtype"] == "bfloat16" and report["resumed_chunks"] == 1


def _crash_after_first(write):
    def wrapped(path, chunk):
        write(path, chunk)
        raise KeyboardInterrupt
    return wrapped


def test_no_usable_input_is_a_one_line_error(tiny_bert, items, tmp_path):
    blank = items.with_columns(pl.lit(None, dtype=pl.String).alias("title"))
    with pytest.raises(PipelineError, match=r"^embed\.text: no item has a usable text \(text_empty=7\)$"):
        embed_items("text", blank, text_cfg(tiny_bert), tmp_path / "t.parquet", tmp_path / "work", progress=False)
    with pytest.raises(PipelineError, match=r"column 'image_path' missing"):
        embed_items("image", items.drop("image_path"), ImageEmbedParams(), tmp_path / "i.parquet", tmp_path)


# --- fusion ----------------------------------------------------------------------------

def write_pair(tmp_path: Path, text_dim: int, image_dim: int) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    text, image = rng.normal(size=(5, text_dim)) * 3, rng.normal(size=(5, image_dim)) * 2
    tp, ip = tmp_path / "text.parquet", tmp_path / "image.parquet"
    write_vectors(tp, [0, 1, 2, 3, 4], [f"B{i}" for i in range(5)], text)               # item 0: no image
    write_vectors(ip, [5, 4, 3, 2, 1], [f"B{i}" for i in (5, 4, 3, 2, 1)], image)       # item 5: no text
    return tp, ip, text.astype(np.float32), image.astype(np.float32)


def test_fuse_concat_weights_each_normalised_half(tmp_path):
    tp, ip, text, image = write_pair(tmp_path, 4, 3)
    out = tmp_path / "fused.parquet"
    report = fuse(tp, ip, FusedEmbedParams(text_weight=2.0, image_weight=0.5), out)
    assert (report["combine"], report["dim"], report["items_out"]) == ("concat", 7, 4)
    assert report["dropped"] == {"no_text": 1, "no_image": 1}
    assert report["inputs"]["text"]["dim"] == 4 and report["inputs"]["image"]["items"] == 5
    keys, fused = read_vectors(out)
    assert keys["item_idx"].to_list() == [1, 2, 3, 4] and keys["item_id"].to_list() == ["B1", "B2", "B3", "B4"]
    np.testing.assert_allclose(np.linalg.norm(fused[:, :4], axis=1), 2.0, rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(fused[:, 4:], axis=1), 0.5, rtol=1e-6)
    # item 1 is row 1 of the text file and row 4 of the image file
    np.testing.assert_allclose(fused[0, :4], 2.0 * text[1] / np.linalg.norm(text[1]), rtol=1e-5)
    np.testing.assert_allclose(fused[0, 4:], 0.5 * image[4] / np.linalg.norm(image[4]), rtol=1e-5)


def test_fuse_sum(tmp_path):
    tp, ip, text, image = write_pair(tmp_path, 3, 3)
    out = tmp_path / "fused.parquet"
    assert fuse(tp, ip, FusedEmbedParams(combine="sum"), out)["dim"] == 3
    _, fused = read_vectors(out)
    expected = text[2] / np.linalg.norm(text[2]) + image[3] / np.linalg.norm(image[3])  # item 2
    np.testing.assert_allclose(fused[1], expected, rtol=1e-5)


def test_fuse_sum_with_unequal_dims_names_the_key(tmp_path):
    tp, ip, _, _ = write_pair(tmp_path, 4, 3)
    with pytest.raises(PipelineError, match=r"^embed\.fused\.combine: 'sum' needs equal dimensions.*4.*3"):
        fuse(tp, ip, FusedEmbedParams(combine="sum"), tmp_path / "fused.parquet")


# --- the command -----------------------------------------------------------------------

def test_command_writes_vectors_and_reports(tiny_bert, tiny_clip, items, tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(
        f"embed:\n  text:\n    model: tiny\n    weights: {tiny_bert}\n"
        f"  image:\n    model: {tiny_clip}\n    weights: random\n    seed: 3\n"
        f"  fused:\n    image_weight: 0.5\n"
    )
    items_path = tmp_path / "items.parquet"
    items.write_parquet(items_path)
    out_dir = tmp_path / "emb"
    for modality in ("text", "image", "fused"):
        embed_command(modality=modality, params=params, items=items_path, out_dir=out_dir,
                      work_dir=tmp_path / "work", progress=False)
    reports = {m: json.loads((out_dir / f"{m}_report.json").read_text()) for m in ("text", "image", "fused")}
    assert reports["image"]["weights"]["seed"] == 3 and reports["text"]["weights"]["kind"] == "local"
    # text: items 0 1 3 5 6; image: items 0 1 3 6
    assert reports["fused"]["dim"] == 64 and reports["fused"]["items_out"] == 4
    assert reports["fused"]["dropped"] == {"no_text": 0, "no_image": 1}
    fused = check_vectors_file(out_dir / "fused.parquet", [0, 1, 3, 6], 64)
    np.testing.assert_allclose(np.linalg.norm(fused[:, 32:], axis=1), 0.5, rtol=1e-6)


def test_command_errors(tmp_path):
    app = typer.Typer()
    app.command()(embed_command)
    res = CliRunner().invoke(app, ["--modality", "audio"], env={"COLUMNS": "200"})
    assert res.exit_code == 2 and "must be one of text, image, fused (got 'audio')" in res.output

    params = tmp_path / "params.yaml"
    params.write_text("embed:\n  text:\n    batch_size: 0\n")
    with pytest.raises(PipelineError, match=r"embed\.text\.batch_size: Input should be greater than or equal to 1"):
        embed_command(modality="text", params=params, items=tmp_path / "items.parquet", out_dir=tmp_path,
                      work_dir=tmp_path, progress=False)
    params.write_text("embed: {}\n")
    with pytest.raises(PipelineError, match=r"items\.parquet: items file not found \(run `mgr ingest` first\)$"):
        embed_command(modality="text", params=params, items=tmp_path / "items.parquet", out_dir=tmp_path,
                      work_dir=tmp_path, progress=False)
    with pytest.raises(PipelineError, match=r"text\.parquet: embeddings file not found"):
        embed_command(modality="fused", params=params, items=tmp_path / "items.parquet", out_dir=tmp_path,
                      work_dir=tmp_path, progress=False)


def test_item_text_recipe_from_fields():
    items = pl.DataFrame({
        "title": ["Red lipstick", "Shampoo!", None, "Cream"],
        "description": ["Soft.", "For oily hair", None, "  "],
        "categories": [["Beauty > Makeup > Lips"], ["Beauty > Hair", "Beauty > Bath"], [], None],
        "brand": ["Acme", None, None, "Dove"],
    }, schema_overrides={"categories": pl.List(pl.String)})
    assert embed_mod.item_texts(items, ["title", "description"]).to_list() == [
        "Red lipstick. Soft.", "Shampoo! For oily hair", None, "Cream"]
    assert embed_mod.item_texts(items, ["title", "categories", "brand"]).to_list() == [
        "Red lipstick. Category: Beauty > Makeup > Lips. Brand: Acme",
        "Shampoo! Category: Beauty > Hair; Beauty > Bath", None, "Cream. Brand: Dove"]
    assert embed_mod.item_texts(items, ["brand", "title"]).to_list()[0] == "Brand: Acme. Red lipstick"


def test_text_fields_choose_what_is_embedded(tiny_bert, items, tmp_path):
    items = items.with_columns(pl.lit("Acme").alias("brand"))
    a = embed_items("text", items, text_cfg(tiny_bert), tmp_path / "a.parquet", tmp_path / "work", progress=False)
    b = embed_items("text", items, text_cfg(tiny_bert, fields=["brand"]),
                    tmp_path / "b.parquet", tmp_path / "work", progress=False)
    assert a["items_out"] == 5 and b["items_out"] == 7  # every item has a brand; two have no title
    _, va = read_vectors(tmp_path / "a.parquet")
    _, vb = read_vectors(tmp_path / "b.parquet")
    np.testing.assert_allclose(vb[0], vb[1], rtol=1e-6)  # the same text, "Brand: Acme", for all
    assert not np.array_equal(va[0], vb[0])
    with pytest.raises(ValueError, match="listed twice"):
        text_cfg(tiny_bert, fields=["title", "title"])
    with pytest.raises(ValueError):
        text_cfg(tiny_bert, fields=["price"])
    with pytest.raises(PipelineError, match=r"column 'brand' \(embed.text.fields\) missing"):
        embed_items("text", items.drop("brand"), text_cfg(tiny_bert, fields=["brand"]), tmp_path / "c.parquet",
                    tmp_path / "work", progress=False)
