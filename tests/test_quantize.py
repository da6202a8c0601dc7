"""Semantic IDs: training, k-means init, dead-code re-seeding, dedup, metrics, the stage end to end."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
import typer
import yaml

from pipeline import precision
from pipeline.errors import PipelineError
from pipeline.params import QuantizeParams
from pipeline.quantize import (assign_codes, code_metrics, dedup_codes, kmeans, kmeans_init, load_rqvae,
                               quantize, reseed_dead_codes, train_rqvae)
from pipeline.rqvae import RQVAE, RQVAEConfig
from pipeline.vectors import write_vectors
from stages.quantize import quantize as quantize_stage

CLUSTERS, DIM, PER = 8, 16, 75


pytestmark = pytest.mark.usefixtures("one_thread")


def clusters(seed: int = 0, spread: float = 0.05) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x (600, 16), true means (8, 16), label per row): 8 well-separated gaussian clusters, shuffled."""
    rng = np.random.default_rng(seed)
    means = rng.normal(scale=2.0, size=(CLUSTERS, DIM))
    label = rng.permutation(np.repeat(np.arange(CLUSTERS), PER))
    x = means[label] + rng.normal(scale=spread, size=(len(label), DIM))
    return x.astype(np.float32), means.astype(np.float32), label


def small(**kw) -> QuantizeParams:
    base = dict(levels=2, codebook_size=8, code_dim=8, hidden=[32], epochs=60, lr=3e-3, batch_size=128,
                reseed_every=5, seed=0)
    return QuantizeParams(**{**base, **kw})


def identity_model(levels: int, k: int) -> RQVAE:
    """An RQ-VAE whose encoder is the identity, so codebooks live in the input space."""
    return RQVAE(RQVAEConfig(in_dim=DIM, code_dim=DIM, levels=levels, codebook_size=k, autoencoder=False))


def write_clusters(path: Path, x: np.ndarray) -> Path:
    n = len(x)
    order = np.arange(n)[::-1]  # rows in the file not in item_idx order: the output must be sorted anyway
    write_vectors(path, order, [f"I{i:04d}" for i in order], x[order])
    return path


def run(tmp: Path, emb: Path, cfg: QuantizeParams, tag: str) -> tuple[dict, dict[str, Path]]:
    out = {"ids": tmp / f"{tag}.parquet", "model": tmp / f"{tag}.pt", "metrics": tmp / f"{tag}.json"}
    metrics = quantize(emb, cfg, out["ids"], out["model"], out["metrics"], "text", progress=False)
    return metrics, out


# training

def test_loss_falls_and_history_has_one_entry_per_epoch():
    x, _, _ = clusters()
    _, history = train_rqvae(x, small())
    assert [h["epoch"] for h in history] == list(range(1, 61))
    assert set(history[0]) == {"epoch", "loss", "recon", "quant", "usage", "reseeded"}
    first, last = history[0]["loss"], np.mean([h["loss"] for h in history[-5:]])
    assert last < 0.2 * first
    assert all(len(h["usage"]) == 2 and 0 < min(h["usage"]) <= max(h["usage"]) <= 1 for h in history)


def test_bfloat16_training_still_gives_every_cluster_its_own_first_code(tmp_path):
    x, _, label = clusters()
    metrics, out = run(tmp_path, write_clusters(tmp_path / "v.parquet", x), small(epochs=100, dtype="bfloat16"), "b")
    assert metrics["dtype"] == "bfloat16"
    first = pl.read_parquet(out["ids"]).sort("item_idx")["code_1"].to_numpy()
    assert len(np.unique(first)) == CLUSTERS
    for c in range(CLUSTERS):
        assert len(np.unique(first[label == c])) == 1
    auto, _ = run(tmp_path, tmp_path / "v.parquet", small(epochs=2, dtype="auto"), "a")
    assert auto["dtype"] == precision.resolve("auto", torch.device("cpu"))  # reports name what ran


def test_kmeans_init_puts_the_first_codebook_on_the_cluster_centres():
    x, means, _ = clusters()
    model = identity_model(levels=2, k=CLUSTERS)
    kmeans_init(model, torch.from_numpy(x[:256]), seed=0)
    book = model.codebooks[0].detach().numpy()
    dist = np.linalg.norm(means[:, None] - book[None], axis=2)
    assert sorted(dist.argmin(1)) == list(range(CLUSTERS))  # one code per centre
    assert dist.min(1).max() < 0.05
    # the second level is fitted to what the first leaves over: small vectors around the origin
    assert np.linalg.norm(model.codebooks[1].detach().numpy(), axis=1).max() < 0.3  # centres: norm ~8


def test_trained_first_level_uses_every_code_one_per_cluster():
    x, _, label = clusters()
    model, _ = train_rqvae(x, small(epochs=100))
    first = assign_codes(model, x)[:, 0]
    assert len(np.unique(first)) == CLUSTERS
    for c in range(CLUSTERS):  # every cluster has a single first-level code of its own
        assert len(np.unique(first[label == c])) == 1


def test_kmeans_with_fewer_points_than_codes_fills_the_rest_with_distinct_codes():
    pts = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    cent = kmeans(pts, 8, seed=0)
    assert cent.shape == (8, 4) and cent.dtype == np.float32
    assert len(np.unique(cent.round(6), axis=0)) == 8
    # each extra code sits next to one of the points
    assert np.linalg.norm(cent[5:, None] - pts[None], axis=2).min(1).max() < 0.05


def test_reseed_moves_dead_codes_onto_items_of_crowded_codes():
    x, _, _ = clusters()
    model = identity_model(levels=1, k=CLUSTERS)
    with torch.no_grad():  # code 0 takes every item; the others are far from all data
        model.codebooks[0] = 100.0
        model.codebooks[0, 0] = torch.from_numpy(x.mean(0))
    xt = torch.from_numpy(x)
    assert len(np.unique(assign_codes(model, x))) == 1
    moved = reseed_dead_codes(model, xt, torch.Generator().manual_seed(0))
    assert moved == CLUSTERS - 1
    book = model.codebooks[0, 1:].detach().numpy()
    assert np.linalg.norm(book[:, None] - x[None], axis=2).min(1).max() < 1e-5  # each on an item
    assert len(np.unique(assign_codes(model, x))) == CLUSTERS


def test_reseeding_raises_usage_over_no_reseeding():
    x, _, _ = clusters(spread=0.3)
    cfg = small(kmeans_init=False, codebook_size=32, epochs=40, reseed_every=4)
    usage = {}
    for every in (0, 4):
        model, history = train_rqvae(x, cfg.model_copy(update={"reseed_every": every}))
        codes = assign_codes(model, x)
        usage[every] = [len(np.unique(codes[:, level])) / 32 for level in range(2)]
        assert (sum(h["reseeded"] for h in history) > 0) == (every > 0)
    assert min(usage[4]) >= 0.9
    assert max(usage[0]) < 0.5
    # no re-seeding after reseed_until x epochs
    _, history = train_rqvae(x, cfg.model_copy(update={"reseed_until": 0.5}))
    assert all(h["reseeded"] == 0 for h in history[20:])


# dedup and metrics

def test_dedup_numbers_identical_tuples_in_item_order():
    codes = np.array([[1, 2], [1, 2], [0, 0], [1, 2], [0, 0], [3, 3]])
    assert dedup_codes(codes).tolist() == [0, 1, 0, 2, 1, 0]
    assert dedup_codes(np.zeros((0, 3), dtype=np.int64)).tolist() == []


def test_dedup_makes_random_codes_unique_and_is_vectorised():
    codes = np.random.default_rng(0).integers(0, 4, size=(200_000, 3))
    t0 = time.perf_counter()
    dedup = dedup_codes(codes)
    assert time.perf_counter() - t0 < 2.0  # a Python loop per item takes far longer
    full = np.column_stack([codes, dedup])
    assert len(np.unique(full, axis=0)) == len(codes)
    df = pl.DataFrame({"a": codes[:, 0], "b": codes[:, 1], "c": codes[:, 2], "d": dedup})
    per_group = df.group_by(["a", "b", "c"], maintain_order=True).agg("d")["d"].to_list()
    assert all(d == list(range(len(d))) for d in per_group)  # 0, 1, 2, ... in item order


def test_code_metrics_on_a_hand_example():
    codes = np.array([[0, 1], [0, 1], [0, 2], [1, 3]])
    m = code_metrics(codes, dedup_codes(codes), 0.123456789, codebook_size=4)
    h1 = -(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25))
    assert m["recon_mse"] == 0.123457
    assert m["usage"]["level_1"] == {"used": 2, "used_fraction": 0.5, "entropy_bits": round(h1, 6),
                                     "entropy_normalized": round(h1 / 2, 6)}
    assert m["usage"]["level_2"] == {"used": 3, "used_fraction": 0.75, "entropy_bits": 1.5,
                                     "entropy_normalized": 0.75}
    assert (m["collision_rate"], m["max_items_per_tuple"], m["first_code_shared"]) == (0.5, 2, 0.75)
    assert (m["unique_tuples"], m["dedup_levels"]) == (3, 2)
    assert json.loads(json.dumps(m)) == m


# the quantize step end to end

def test_quantize_writes_unique_sorted_ids_and_is_byte_for_byte_deterministic(tmp_path):
    x, _, _ = clusters()
    emb = write_clusters(tmp_path / "text.parquet", x)
    cfg = small()
    m1, a = run(tmp_path, emb, cfg, "a")
    m2, b = run(tmp_path, emb, cfg, "b")
    for key in ("ids", "metrics", "model"):
        assert a[key].read_bytes() == b[key].read_bytes(), key
    ids = pl.read_parquet(a["ids"])
    assert ids.columns == ["item_idx", "item_id", "code_1", "code_2", "dedup"]
    assert [str(t) for t in ids.dtypes] == ["Int32", "String", "Int32", "Int32", "Int32"]
    assert ids["item_idx"].to_list() == list(range(600))
    assert ids["item_id"][3] == "I0003"
    assert ids.select("code_1", "code_2", "dedup").n_unique() == 600
    assert m1 == m2 == json.loads(a["metrics"].read_text())
    assert (m1["modality"], m1["items"], m1["dim"], m1["levels"], m1["codebook_size"]) == ("text", 600, 16, 2, 8)
    assert m1["usage"]["level_1"]["used_fraction"] == 1.0 and m1["epochs"] == 60
    assert m1["dedup_levels"] == ids["dedup"].max() + 1
    _, c = run(tmp_path, emb, cfg.model_copy(update={"seed": 1}), "c")
    assert c["model"].read_bytes() != a["model"].read_bytes()
    assert not pl.read_parquet(c["ids"]).equals(ids)


def test_checkpoint_loads_with_weights_only_and_gives_the_same_codes(tmp_path):
    x, _, _ = clusters()
    emb = write_clusters(tmp_path / "text.parquet", x)
    cfg = small(hidden=[])  # no hidden layer: a linear encoder is allowed
    _, out = run(tmp_path, emb, cfg, "a")
    ckpt = torch.load(out["model"], weights_only=True)
    assert ckpt["config"]["in_dim"] == DIM and ckpt["params"] == cfg.model_dump()
    model = load_rqvae(out["model"])
    ids = pl.read_parquet(out["ids"])
    assert np.array_equal(assign_codes(model, x), ids.select("code_1", "code_2").to_numpy())


def test_fewer_items_than_codes_runs_with_a_note(tmp_path, capsys):
    x, _, _ = clusters()
    emb = write_clusters(tmp_path / "few.parquet", x[:20])
    m, _ = run(tmp_path, emb, small(codebook_size=32, epochs=10, batch_size=16), "few")
    assert "20 items < codebook_size 32" in capsys.readouterr().err
    assert m["items"] == 20 and m["usage"]["level_1"]["used"] <= 20


def test_nan_vectors_are_one_line_errors_naming_the_file(tmp_path):
    x, _, _ = clusters()
    x[5, 3] = np.nan
    emb = write_clusters(tmp_path / "bad.parquet", x)
    with pytest.raises(PipelineError, match=r"bad\.parquet: 1 item vectors contain NaN or inf") as err:
        run(tmp_path, emb, small(), "bad")
    assert "\n" not in str(err.value)
    with pytest.raises(PipelineError, match="missing.parquet: embeddings file not found"):
        run(tmp_path, tmp_path / "missing.parquet", small(), "bad")


def test_stage_reads_its_modality_section_and_rejects_unknown_ones(tmp_path):
    x, _, _ = clusters()
    emb = write_clusters(tmp_path / "image.parquet", x)
    params = tmp_path / "params.yaml"
    section = {**small(epochs=3).model_dump(), "codebook_size": 4}
    params.write_text(yaml.safe_dump({"quantize": {"image": section, "text": {"levels": 0}}}))
    out = {k: tmp_path / f"o.{k}" for k in ("parquet", "pt", "json")}
    kw = dict(params=params, embeddings=emb, out=out["parquet"], model=out["pt"], metrics=out["json"], progress=False)
    quantize_stage(modality="image", **kw)
    m = json.loads(out["json"].read_text())
    assert (m["modality"], m["codebook_size"], m["epochs"]) == ("image", 4, 3)
    with pytest.raises(PipelineError, match=r"params\.yaml: quantize\.text\.levels: .*greater than or equal to 1"):
        quantize_stage(modality="text", **kw)
    with pytest.raises(typer.BadParameter, match="unknown modality 'audio'"):
        quantize_stage(modality="audio", **kw)


def test_standardization_makes_codes_independent_of_offset_and_spread():
    x, _, _ = clusters()
    cfg = small()
    base = assign_codes(train_rqvae(x, cfg)[0], x)
    shifted = (x * 1e-3 + 10.0).astype(np.float32)  # a low-spread encoder far from the origin
    model = train_rqvae(shifted, cfg)[0]
    np.testing.assert_allclose(model.shift.numpy(), shifted.mean(0), rtol=1e-5)
    from sklearn.metrics import adjusted_rand_score  # the same partition, whatever the code numbers
    assert adjusted_rand_score(assign_codes(model, shifted)[:, 0], base[:, 0]) > 0.95


# residual k-means (method: rkmeans)

def test_rkmeans_gives_one_first_code_per_cluster_and_reloads_to_the_same_codes(tmp_path):
    x, _, label = clusters()
    emb = write_clusters(tmp_path / "text.parquet", x)
    cfg = small(method="rkmeans")
    m1, a = run(tmp_path, emb, cfg, "a")
    _, b = run(tmp_path, emb, cfg, "b")
    for key in ("ids", "metrics", "model"):  # deterministic, as the RQ-VAE
        assert a[key].read_bytes() == b[key].read_bytes(), key
    ids = pl.read_parquet(a["ids"])
    first = ids["code_1"].to_numpy()
    for c in range(CLUSTERS):  # rows of ids are item_idx order, as x
        assert len(np.unique(first[label == c])) == 1
    assert len(np.unique(first)) == CLUSTERS
    assert m1["method"] == "rkmeans" and "epochs" not in m1 and m1["kmeans_iters"] > 0
    model = load_rqvae(a["model"])
    assert isinstance(model.encoder, torch.nn.Identity) and model.codebooks.shape == (2, 8, DIM)
    assert np.array_equal(assign_codes(model, x), ids.select("code_1", "code_2").to_numpy())


def test_rkmeans_second_level_lowers_the_reconstruction_error():
    x, _, _ = clusters(spread=0.5)
    from pipeline.quantize import fit_rkmeans, reconstruction_mse
    one, two = (fit_rkmeans(x, small(method="rkmeans", levels=n)) for n in (1, 2))
    assert reconstruction_mse(two, x) < 0.8 * reconstruction_mse(one, x)
    # each level's codebook is the k-means of what the levels before it left over: near the origin
    book = two.codebooks.detach()
    assert float(book[1].norm(dim=1).max()) < float(book[0].norm(dim=1).max())


def test_rkmeans_needs_no_network_params_and_unknown_methods_are_errors(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"quantize": {"text": {"method": "pq"}}}))
    x, _, _ = clusters()
    emb = write_clusters(tmp_path / "text.parquet", x)
    kw = dict(params=params, embeddings=emb, out=tmp_path / "o.parquet", model=tmp_path / "o.pt",
              metrics=tmp_path / "o.json", progress=False)
    with pytest.raises(PipelineError, match=r"quantize\.text\.method: .*'rqvae' or 'rkmeans'"):
        quantize_stage(modality="text", **kw)
    with pytest.raises(ValueError, match="code_dim must be in_dim"):
        RQVAE(RQVAEConfig(in_dim=DIM, code_dim=8, autoencoder=False))
