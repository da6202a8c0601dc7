"""The embedded synthetic dataset: formats, determinism, and the generative story it promises."""
from __future__ import annotations

import ast
import csv
import datetime as dt
import gzip
import json
import re
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.errors import PipelineError
from pipeline.synthetic import SyntheticConfig, generate, type_names, type_transition_matrix

SMALL = SyntheticConfig(
    seed=3, n_users=300, n_types=5, n_styles=6, items_per_cell=6,
    p_missing_image=0.05, p_duplicate_review=0.02, n_unreviewed_items=10, name="Tiny",
)
STYLE_WORDS = re.compile(
    r"\b(colou?rs?|colou?red|hues?|shades?|tint(ed|s)?|patterns?|patterned|solid|stripes?|striped|dots?|dotted|"
    r"polka|red|orange|yellow|chartreuse|green|spring|cyan|azure|blue|violet|magenta|rose|pink|purple|black|"
    r"white|gr[ae]y|brown|gold(en)?|silver|beige|nude|coral|plum|lilac|lavender|amber|teal|navy|peach|berry|"
    r"glossy|matte|shimmer|sheer|bright)\b",
    re.IGNORECASE,
)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("syn") / "Tiny"
    counts = generate(SMALL, out)
    reviews = [json.loads(line) for line in gzip.open(out / "reviews_Tiny_5.json.gz", "rt")]
    meta_lines = gzip.open(out / "meta_Tiny.json.gz", "rt").read().splitlines()
    meta = [ast.literal_eval(line) for line in meta_lines]
    with open(out / "ground_truth.csv") as f:
        truth = {r["asin"]: r for r in csv.DictReader(f)}
    return {"out": out, "counts": counts, "reviews": reviews, "meta_lines": meta_lines, "meta": meta,
            "truth": truth}


def sequences(reviews):
    """Per user: the (time, asin) list sorted by time, first occurrence of each item only."""
    by_user = defaultdict(list)
    for r in reviews:
        by_user[r["reviewerID"]].append((r["unixReviewTime"], r["asin"]))
    out = {}
    for u, rows in by_user.items():
        seen, seq = set(), []
        for t, a in sorted(rows):
            if a not in seen:
                seen.add(a)
                seq.append((t, a))
        out[u] = seq
    return out


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_bytes_other_seed_differs(tmp_path):
    cfg = SyntheticConfig(seed=7, n_users=120, n_types=4, n_styles=4, items_per_cell=4, n_unreviewed_items=5)
    generate(cfg, tmp_path / "a")
    generate(cfg, tmp_path / "b")
    a, b = files(tmp_path / "a"), files(tmp_path / "b")
    assert a == b and len(a) > 10
    generate(SyntheticConfig(**{**cfg.__dict__, "seed": 8}), tmp_path / "c")
    c = files(tmp_path / "c")
    for name in ("reviews_Synthetic_5.json.gz", "meta_Synthetic.json.gz", "ground_truth.csv"):
        assert a[name] != c[name]


def test_gzip_headers_have_no_mtime_and_no_name(data):
    for name in ("reviews_Tiny_5.json.gz", "meta_Tiny.json.gz"):
        head = (data["out"] / name).read_bytes()[:10]
        assert head[:2] == b"\x1f\x8b"
        assert head[3] == 0, "no FNAME/FEXTRA/FCOMMENT flags"
        assert head[4:8] == b"\0\0\0\0", "mtime 0"


def test_review_lines_look_like_the_2014_files(data):
    keys = ["reviewerID", "asin", "reviewerName", "helpful", "reviewText", "overall", "summary",
            "unixReviewTime", "reviewTime"]
    for r in data["reviews"]:
        assert list(r) == keys
        assert re.fullmatch(r"A[A-Z0-9]{13}", r["reviewerID"])
        assert re.fullmatch(r"B0[A-Z0-9]{8}", r["asin"])
        assert r["helpful"] == [0, 0]
        assert isinstance(r["overall"], float) and 1.0 <= r["overall"] <= 5.0
        assert isinstance(r["unixReviewTime"], int) and r["unixReviewTime"] % 86400 == 0
        day = dt.datetime.fromtimestamp(r["unixReviewTime"], dt.timezone.utc).date()
        assert r["reviewTime"] == f"{day.month:02d} {day.day}, {day.year}"
        assert day.year >= 2012
    ratings = Counter(r["overall"] for r in data["reviews"])
    assert (ratings[4.0] + ratings[5.0]) / len(data["reviews"]) > 0.7


def test_lines_are_not_grouped_by_user(data):
    users = [r["reviewerID"] for r in data["reviews"]]
    same_as_next = sum(a == b for a, b in zip(users, users[1:]))
    assert same_as_next < 0.1 * len(users)


def test_meta_lines_are_python_literals(data):
    for line, m in zip(data["meta_lines"], data["meta"]):
        assert line.startswith("{'asin': ")
        with pytest.raises(json.JSONDecodeError):
            json.loads(line)
        assert set(m) >= {"asin", "title", "description", "imUrl", "categories", "brand"}
        assert m["imUrl"] == f"https://synthetic.invalid/images/{m['asin']}.jpg"
        assert m["categories"][0][0] == "Beauty" and len(m["categories"][0]) == 3
        assert "price" not in m or m["price"] > 0
    assert len({m["asin"] for m in data["meta"]}) == len(data["meta"])
    assert set(data["truth"]) == {m["asin"] for m in data["meta"]}


def test_images_decode_at_the_configured_size(data):
    paths = sorted((data["out"] / "images").glob("*.jpg"))
    assert paths
    for p in paths[:60]:
        with Image.open(p) as im:
            assert im.format == "JPEG" and im.mode == "RGB" and im.size == (SMALL.image_size, SMALL.image_size)
            im.load()


def test_text_carries_the_type_and_never_the_style(data):
    truth = data["truth"]
    for m in data["meta"]:
        text = " ".join([m["title"], m["description"], m["brand"], *m["categories"][0]])
        assert not STYLE_WORDS.search(text), text
        t = truth[m["asin"]]["type"]
        assert t in m["title"].lower() and m["categories"][0][2].lower() == t
    for r in data["reviews"]:
        assert not STYLE_WORDS.search(r["reviewText"] + " " + r["summary"] + " " + r["reviewerName"])
    # The style is in the ground truth only, and it is a colour/pattern name.
    assert all("/" in row["style"] for row in truth.values())


def _product_rgb(path: Path) -> np.ndarray:
    """Mean RGB of the saturated (product) pixels; the background is a light grey."""
    a = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64) / 255.0
    sat = (a.max(-1) - a.min(-1)) / np.maximum(a.max(-1), 1e-6)
    px = a[sat > 0.3]
    assert len(px) > 20
    return px.mean(0)


def _nearest_centroid_accuracy(x: np.ndarray, y: np.ndarray) -> float:
    """Fit on even rows, score on odd rows."""
    train, test = np.arange(len(y)) % 2 == 0, np.arange(len(y)) % 2 == 1
    labels = np.unique(y[train])
    cents = np.stack([x[train][y[train] == c].mean(0) for c in labels])
    pred = labels[((x[test][:, None, :] - cents[None]) ** 2).sum(-1).argmin(1)]
    return float((pred == y[test]).mean())


def test_image_colour_depends_on_style_not_type(data):
    rows = [r for a, r in sorted(data["truth"].items()) if (data["out"] / "images" / f"{a}.jpg").exists()]
    x = np.stack([_product_rgb(data["out"] / "images" / f"{r['asin']}.jpg") for r in rows])
    style = np.array([r["style"] for r in rows])
    typ = np.array([r["type"] for r in rows])
    style_acc = _nearest_centroid_accuracy(x, style)
    type_acc = _nearest_centroid_accuracy(x, typ)
    assert style_acc > 0.7, style_acc  # chance 1/6
    assert type_acc < 1 / SMALL.n_types + 0.15, type_acc  # chance 1/5


def test_type_sequences_follow_the_chain(data):
    typ = {a: r["type"] for a, r in data["truth"].items()}
    names = sorted(set(typ.values()))
    trans = Counter()
    for seq in sequences(data["reviews"]).values():
        for (_, a), (_, b) in zip(seq, seq[1:]):
            trans[typ[a], typ[b]] += 1
    total = sum(trans.values())
    # Predicting the next type from the previous one alone: the chain makes it easy.
    best = sum(max(trans[p, n] for n in names) for p in names)
    assert best / total > 0.5  # chance about 1/5
    # The chain the library reports is the one in the data.
    p = type_transition_matrix(SMALL)
    order = type_names(SMALL)
    for i, prev in enumerate(order):
        assert max(names, key=lambda n: trans[prev, n]) == order[int(p[i].argmax())]
    top2 = sum(trans[order[i], order[j]] for i in range(len(order)) for j in np.argsort(-p[i])[:2])
    assert top2 / total > 0.8


def test_users_have_concentrated_styles(data):
    style = {a: r["style"] for a, r in data["truth"].items()}
    shares = [Counter(style[a] for _, a in seq).most_common(1)[0][1] / len(seq)
              for seq in sequences(data["reviews"]).values()]
    assert np.mean(shares) > 0.7  # about 0.35 if styles were uniform


def test_times_strictly_increase_per_user_and_items_do_not_repeat(data):
    by_user = defaultdict(list)
    for r in data["reviews"]:
        by_user[r["reviewerID"]].append(r["unixReviewTime"])
    for times in by_user.values():
        assert len(set(times)) == len(times), "no ties within a user, duplicates included"
    for seq in sequences(data["reviews"]).values():
        assert SMALL.min_len <= len(seq) <= SMALL.max_len
    pairs = Counter((r["reviewerID"], r["asin"]) for r in data["reviews"])
    assert sum(n - 1 for n in pairs.values()) == data["counts"]["duplicate_reviews"]


def test_counts_match_the_files(data):
    c, out = data["counts"], data["out"]
    assert c["reviews"] == len(data["reviews"])
    assert c["items"] == len(data["meta"]) == len(data["truth"])
    assert c["users"] == len({r["reviewerID"] for r in data["reviews"]}) == SMALL.n_users
    assert c["images"] == len(list((out / "images").glob("*.jpg")))
    assert c["interactions"] == len({(r["reviewerID"], r["asin"]) for r in data["reviews"]})
    assert c["reviewed_items"] == len({r["asin"] for r in data["reviews"]})
    per_item = Counter(a for seq in sequences(data["reviews"]).values() for _, a in seq)
    assert c["items_with_5_interactions"] == sum(n >= 5 for n in per_item.values())
    assert c["synthetic"] is True
    readme = (out / "README.md").read_text()
    assert "SYNTHETIC" in readme and "not real Amazon data" in readme


def test_deliberate_defects_are_present_at_the_configured_rates(data):
    c, out = data["counts"], data["out"]
    reviewed = {r["asin"] for r in data["reviews"]}
    meta_asins = {m["asin"] for m in data["meta"]}
    assert len(meta_asins - reviewed) == SMALL.n_unreviewed_items == c["unreviewed_items"]
    missing = {a for a in reviewed if not (out / "images" / f"{a}.jpg").exists()}
    assert len(missing) == c["missing_images"] == round(SMALL.p_missing_image * len(reviewed)) > 0
    assert all((out / "images" / f"{a}.jpg").exists() for a in meta_asins - reviewed)
    assert c["duplicate_reviews"] == round(SMALL.p_duplicate_review * c["interactions"]) > 0
    first = {}
    for r in sorted(data["reviews"], key=lambda r: r["unixReviewTime"]):
        key = (r["reviewerID"], r["asin"])
        if key in first:  # the duplicate comes later and repeats the review
            assert r["unixReviewTime"] > first[key]["unixReviewTime"]
            assert r["reviewText"] == first[key]["reviewText"]
        else:
            first[key] = r


def test_output_folder_is_replaced_whole(tmp_path):
    out = tmp_path / "syn"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    generate(SyntheticConfig(n_users=20, n_types=3, n_styles=3, items_per_cell=2, n_unreviewed_items=0), out)
    assert not (out / "stale.txt").exists()
    assert (out / "reviews_Synthetic_5.json.gz").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["syn"], "no temporary folders left behind"


@pytest.mark.parametrize(
    "bad, key",
    [({"n_users": 0}, "n_users"), ({"n_types": 17}, "n_types"), ({"max_len": 2}, "max_len"),
     ({"p_style_main": 1.5}, "p_style_main"), ({"name": "../x"}, "name"), ({"image_size": 8}, "image_size")],
)
def test_bad_config_is_a_pipeline_error_naming_the_setting(bad, key, tmp_path):
    with pytest.raises(PipelineError, match=key):
        generate(SyntheticConfig(**bad), tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_command_reads_params_and_names_the_bad_key(tmp_path):
    typer = pytest.importorskip("typer")
    from typer.testing import CliRunner

    from stages.generate import generate as command

    app = typer.Typer()
    app.command()(command)
    runner = CliRunner()
    params = tmp_path / "params.yaml"
    params.write_text("generate:\n  n_users: 30\n  n_types: 3\n  n_styles: 3\n  items_per_cell: 2\n  max_len: 99\n")
    res = runner.invoke(app, ["--out", str(tmp_path / "x"), "--params", str(params)])
    assert isinstance(res.exception, PipelineError)
    assert str(res.exception).startswith(f"{params}: generate.max_len must be <=")
    params.write_text("generate:\n  n_users: 30\n  n_types: 3\n  n_styles: 3\n  items_per_cell: 2\n  colour: red\n")
    res = runner.invoke(app, ["--out", str(tmp_path / "x"), "--params", str(params)])
    assert str(res.exception) == f"{params}: generate.colour: Unexpected keyword argument (got 'red')"
    params.write_text("generate:\n  n_users: 30\n  n_types: 3\n  n_styles: 3\n  items_per_cell: 2\n")
    res = runner.invoke(app, ["--out", str(tmp_path / "y"), "--params", str(params), "--seed", "5"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "y" / "meta_Synthetic.json.gz").exists()


def test_text_alone_or_image_alone_caps_recall_far_below_both(tmp_path):
    """The research question is testable on the data: an oracle that knows the true type (text)
    or style (image) of items reaches far less Recall@10 than one that knows both."""
    from pipeline.attribute_oracle import attribute_oracle
    from pipeline.ingest import ingest
    from pipeline.params import DataParams

    raw = tmp_path / "raw"
    generate(SyntheticConfig(n_users=1500, n_types=8, n_styles=6, items_per_cell=6), raw)
    cfg = DataParams(reviews=str(raw / "reviews_Synthetic_5.json.gz"), meta=str(raw / "meta_Synthetic.json.gz"),
                     images_dir=str(raw / "images"))
    ingest(cfg, tmp_path / "ingested", progress=False)
    recall = attribute_oracle(tmp_path / "ingested", raw / "ground_truth.csv")
    assert recall["text+image"] >= 1.5 * max(recall["text"], recall["image"])
    assert min(recall["text"], recall["image"]) > 1.5 * recall["popularity"]
