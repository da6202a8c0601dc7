"""Semantic IDs: fit one quantizer per modality on the item vectors, then give every item a unique ID.

An item's ID is its L codes (one per level, each in 0..K-1) plus a `dedup` number: items
whose L-tuples collide get 0, 1, 2, ... in item_idx order, so (codes, dedup) is unique.

Training (`train_rqvae`):
- `standardize`: inputs centred and scaled to unit total variance (rqvae.py says why).
- Shuffled mini-batches from a generator seeded with `seed`; AdamW with `lr` and
  `weight_decay` (never on the codebooks: decay would pull unused codes towards the origin
  whatever the data says).
- `kmeans_init`: on the first batch, before the first step, level by level, k-means of that
  level's residuals (k-means++ seeds, then 20 faiss Lloyd iterations; fixed seed) gives its
  codebook; the residuals then subtract their assigned centroids before the next level. A
  first batch with fewer points than K gives as many centroids as points; the other codes are
  random points of the batch plus 1e-3 x their spread of noise, so that no two coincide.
- Dead-code re-seeding: every `reseed_every` epochs, while the epoch is below
  `reseed_until` x epochs, all items are assigned with the current model, level by level, and
  every code that no item uses is moved onto the residual of an item drawn at random (seeded)
  from the codes holding at least two items, with probability proportional to the size of its
  code; the next level is then re-assigned with the updated codebook. `reseed_every: 0`
  disables it. Why: a pass with the current model finds the codes that are really dead and
  gives later levels the residuals the moved codes produce (K=1024 on 2.5k items, 200 epochs,
  two seeds: 58-68% level-3 usage, against 48-59% drawing from one batch's residuals); drawing
  only from shared codes never spends a code on a lone item (that would just leave the item's
  old code dead) and aims the new codes at items that would otherwise collide. At K=256 on
  2.5k and 12k MiniLM item vectors every code ended up used with either draw.

`method: rkmeans` (`fit_rkmeans`) fits no network: the RQ-VAE model with identity encoder and
decoder, whose codebooks are k-means of every item's residual, level by level (k-means++ seeds,
then `RKMEANS_ITERS` faiss Lloyd iterations over all items; the same level-by-level fit that
`kmeans_init` does on the RQ-VAE's first batch). The codes then quantize the standardized vectors
themselves rather than a learned 32-d latent. GRID (snap-research) makes this its default semantic-ID
step; here it takes seconds where the RQ-VAE's 500 epochs take minutes.

`dtype` (auto: bfloat16 where the CPU multiplies it natively, pipeline/precision.py) is the
precision of the encoder's and decoder's products in training only; the code search, the losses
and the final assignment of codes run in float32 (rqvae.py says why).

Same data and params give the same model, codes and files, byte for byte (CPU, same torch
thread count, same dtype once `auto` is resolved).
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict
from pathlib import Path

import faiss
import numpy as np
import polars as pl
import torch
from tqdm import tqdm

from pipeline import optim, precision
from pipeline.artifacts import write_json, write_parquet
from pipeline.checkpoint import load_model, save_model
from pipeline.errors import PipelineError
from pipeline.params import QuantizeParams
from pipeline.rqvae import RQVAE, RQVAEConfig, nearest
from pipeline.summary import level_usage
from pipeline.vectors import read_vectors

KMEANS_ITERS = 20
RKMEANS_ITERS = 50  # all items, once: more Lloyd iterations cost little (faiss' default is 25)
INFER_BATCH = 4096


def model_config(in_dim: int, cfg: QuantizeParams) -> RQVAEConfig:
    if cfg.method == "rkmeans":
        return RQVAEConfig(in_dim=in_dim, hidden=[], code_dim=in_dim, levels=cfg.levels,
                           codebook_size=cfg.codebook_size, beta=cfg.beta, autoencoder=False)
    return RQVAEConfig(in_dim=in_dim, hidden=list(cfg.hidden), code_dim=cfg.code_dim, levels=cfg.levels,
                       codebook_size=cfg.codebook_size, beta=cfg.beta)


def as_tensor(x: np.ndarray) -> torch.Tensor:
    """A float32 copy: vectors read from Parquet are read-only views, which torch must not write through."""
    return torch.from_numpy(np.array(x, dtype=np.float32, order="C"))


def kmeans_pp(points: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeds: each next one drawn with probability proportional to its squared distance
    to the nearest seed so far. Plain random seeds often put two on one cluster and none on another,
    a local optimum Lloyd iterations do not leave."""
    points = points.astype(np.float64)  # the draw needs probabilities that sum to 1 in float64
    seeds = [points[rng.integers(len(points))]]
    d2 = ((points - seeds[0]) ** 2).sum(1)
    for _ in range(1, k):
        total = d2.sum()
        i = rng.choice(len(points), p=d2 / total) if total > 0 else rng.integers(len(points))
        seeds.append(points[i])
        d2 = np.minimum(d2, ((points - points[i]) ** 2).sum(1))
    return np.stack(seeds).astype(np.float32)


def kmeans(points: np.ndarray, k: int, seed: int, iters: int = KMEANS_ITERS) -> np.ndarray:
    """k centroids (k, d) of points (n, d); with n < k, the n points plus noisy copies of random ones."""
    points = np.ascontiguousarray(points, dtype=np.float32)
    n, d = points.shape
    m = min(k, n)
    rng = np.random.default_rng(seed)
    # min_points_per_centroid=1: a first batch of ~4 points per code is normal here, not a problem
    # to warn about; max_points_per_centroid=n: use every point, no sub-sampling.
    km = faiss.Kmeans(d, m, niter=iters, seed=seed, min_points_per_centroid=1,
                      max_points_per_centroid=max(n, 1), verbose=False)
    km.train(points, init_centroids=kmeans_pp(points, m, rng))
    cent = km.centroids
    if m < k:
        extra = points[rng.integers(0, n, k - m)]
        cent = np.concatenate([cent, extra + rng.normal(scale=1e-3 * (points.std() + 1e-8), size=extra.shape)])
    return cent.astype(np.float32)


@torch.no_grad()
def kmeans_init(model: RQVAE, xb: torch.Tensor, seed: int, iters: int = KMEANS_ITERS) -> None:
    """Codebooks from k-means of each level's residuals on the rows xb, level by level."""
    r = model.encoder(model.standardize(xb))
    for level in range(model.cfg.levels):
        book = torch.from_numpy(kmeans(r.numpy(), model.cfg.codebook_size, seed + level, iters))
        model.codebooks[level] = book
        r = r - book[nearest(r, book)]


@torch.no_grad()
def all_residuals(model: RQVAE, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(residuals (n, L, D), codes (n, L)) of every item, in batches."""
    parts = [model.residuals(xb) for xb in x.split(INFER_BATCH)]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


@torch.no_grad()
def reseed_dead_codes(model: RQVAE, x: torch.Tensor, gen: torch.Generator) -> int:
    """Move codes no item uses onto residuals of items in crowded codes (rule: module docstring)."""
    k, moved = model.cfg.codebook_size, 0
    for level in range(model.cfg.levels):
        # Recomputed per level: moving codes at level l changes every later level's residuals.
        res, codes = all_residuals(model, x)
        c = codes[:, level]
        count = torch.bincount(c, minlength=k)
        dead = (count == 0).nonzero().squeeze(1)
        size = count[c].double()
        weight = torch.where(size > 1, size, torch.zeros_like(size))  # a singleton has nothing to split
        m = min(len(dead), int((weight > 0).sum()))
        if m == 0:
            continue
        pick = torch.multinomial(weight, m, replacement=False, generator=gen)
        model.codebooks[level, dead[:m]] = res[pick, level]
        moved += m
    return moved


def code_counts(codes: torch.Tensor, k: int) -> torch.Tensor:
    """(L, K) number of rows assigned to each code of each level."""
    levels = codes.shape[1]
    flat = codes + torch.arange(levels) * k
    return torch.bincount(flat.reshape(-1), minlength=levels * k).view(levels, k)


def make_optimizer(model: RQVAE, cfg: QuantizeParams) -> torch.optim.Optimizer:
    nets = [p for name, p in model.named_parameters() if name != "codebooks"]
    return optim.adamw([{"params": nets, "weight_decay": cfg.weight_decay},
                        {"params": [model.codebooks], "weight_decay": 0.0}], cfg.lr)


def train_epoch(model: RQVAE, opt: torch.optim.Optimizer, xt: torch.Tensor, cfg: QuantizeParams,
                gen: torch.Generator, first: bool, bfloat16: bool = False) -> dict:
    """One pass over shuffled mini-batches: mean losses per item and the fraction of each codebook used."""
    model.train()
    counts = torch.zeros(cfg.levels, cfg.codebook_size, dtype=torch.long)
    sums = {"loss": 0.0, "recon": 0.0, "quant": 0.0}
    for i, idx in enumerate(torch.randperm(len(xt), generator=gen).split(cfg.batch_size)):
        xb = xt[idx]
        if first and i == 0 and cfg.kmeans_init:
            kmeans_init(model, xb, cfg.seed)
        _, codes, losses = model(xb, bfloat16)
        opt.zero_grad(set_to_none=True)
        losses["total"].backward()
        opt.step()
        counts += code_counts(codes, cfg.codebook_size)
        for key, name in (("loss", "total"), ("recon", "recon"), ("quant", "quant")):
            sums[key] += losses[name].item() * len(idx)
    usage = ((counts > 0).sum(1).double() / cfg.codebook_size).tolist()
    return {key: v / len(xt) for key, v in sums.items()} | {"usage": usage}


def new_model(xt: torch.Tensor, cfg: QuantizeParams) -> RQVAE:
    """The untrained model for `cfg.method`, standardized on xt if `cfg.standardize`."""
    with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's global RNG
        torch.manual_seed(cfg.seed)
        model = RQVAE(model_config(xt.shape[1], cfg))
    if cfg.standardize:
        model.fit_standardization(xt)
    return model


def train_rqvae(x: np.ndarray, cfg: QuantizeParams, progress: bool = False) -> tuple[RQVAE, list[dict]]:
    """Train an RQ-VAE on x (n, d) float32; history has one dict per epoch."""
    xt = as_tensor(x)
    model = new_model(xt, cfg)
    gen = torch.Generator().manual_seed(cfg.seed)  # batches and re-seeding draws
    opt = make_optimizer(model, cfg)
    bfloat16 = precision.resolve(cfg.dtype, xt.device) == "bfloat16"
    history: list[dict] = []
    bar = tqdm(range(cfg.epochs), desc="rqvae", unit="epoch", disable=not progress, file=sys.stderr)
    for epoch in bar:
        stats = train_epoch(model, opt, xt, cfg, gen, first=epoch == 0, bfloat16=bfloat16)
        reseed = cfg.reseed_every and (epoch + 1) % cfg.reseed_every == 0 and epoch < cfg.reseed_until * cfg.epochs
        history.append({"epoch": epoch + 1, **stats, "reseeded": reseed_dead_codes(model, xt, gen) if reseed else 0})
        bar.set_postfix(loss=f"{stats['loss']:.4g}", usage="/".join(f"{u:.0%}" for u in stats["usage"]), refresh=False)
    model.eval()
    return model, history


def fit_rkmeans(x: np.ndarray, cfg: QuantizeParams) -> RQVAE:
    """Residual k-means on x (n, d) float32 (`method: rkmeans`, module docstring)."""
    xt = as_tensor(x)
    model = new_model(xt, cfg)
    kmeans_init(model, xt, cfg.seed, RKMEANS_ITERS)
    return model.eval()


@torch.no_grad()
def assign_codes(model: RQVAE, x: np.ndarray) -> np.ndarray:
    """Codes (n, L) int64 of each row of x, in inference mode."""
    model.eval()
    xt = as_tensor(x)
    return all_residuals(model, xt)[1].numpy()


@torch.no_grad()
def reconstruction_mse(model: RQVAE, x: np.ndarray) -> float:
    """Mean squared error per element of the decoder's output from the quantized latents."""
    model.eval()
    xt = as_tensor(x)
    sq = sum(float((model.reconstruct(xb) - xb).double().pow(2).sum()) for xb in xt.split(INFER_BATCH))
    return sq / max(xt.numel(), 1)


def dedup_codes(codes: np.ndarray) -> np.ndarray:
    """(n,) 0, 1, 2, ... among items with the same L-tuple, in row order: (codes, dedup) is unique."""
    n = len(codes)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    _, group, size = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    order = np.argsort(group.reshape(-1), kind="stable")  # rows grouped by tuple, row order within
    start = np.cumsum(size) - size
    dedup = np.empty(n, dtype=np.int64)
    dedup[order] = np.arange(n) - np.repeat(start, size)
    return dedup


def _r(v: float) -> float:
    """6 significant digits: the metrics file stays the same when the last float bits wobble."""
    return float(f"{v:.6g}")


def code_metrics(codes: np.ndarray, dedup: np.ndarray, recon_mse: float, codebook_size: int) -> dict:
    """Usage and collision figures of a set of semantic IDs (method.md section 3), JSON-ready.

    Per level: codes used, their fraction of K, the entropy of the code distribution in bits and
    over log2 K. collision_rate: share of items whose L-tuple another item has too (before dedup);
    first_code_shared: the same for the level-1 code alone; dedup_levels: max dedup + 1.
    """
    n = len(codes)
    usage = {}
    for level, u in enumerate(level_usage(codes, codebook_size), start=1):
        usage[f"level_{level}"] = {
            "used": u["used"],
            "used_fraction": _r(u["used"] / codebook_size),
            "entropy_bits": _r(u["entropy_bits"]),
            "entropy_normalized": _r(u["entropy_bits"] / math.log2(codebook_size)),
        }
    _, group, size = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    shared_tuple = size[group.reshape(-1)] > 1
    first = np.bincount(codes[:, 0], minlength=codebook_size)[codes[:, 0]] > 1 if n else np.zeros(0, bool)
    return {
        "recon_mse": _r(recon_mse),
        "usage": usage,
        "collision_rate": _r(shared_tuple.mean() if n else 0.0),
        "max_items_per_tuple": int(size.max(initial=0)),
        "first_code_shared": _r(first.mean() if n else 0.0),
        "unique_tuples": int(len(size)),
        "dedup_levels": int(dedup.max(initial=-1) + 1),
    }


def save_rqvae(model: RQVAE, cfg: QuantizeParams, dest: Path) -> None:
    save_model(asdict(model.cfg), model.state_dict(), dest, params=cfg.model_dump())


def load_rqvae(path: str | Path) -> RQVAE:
    """The model of a checkpoint written by `quantize`, in eval mode (plain tensors: weights_only)."""
    return load_model(path, lambda config: RQVAE(RQVAEConfig(**config)),
                      "quantizer checkpoint not found (run `mgr quantize` first)")


def read_item_vectors(path: Path) -> tuple[pl.DataFrame, np.ndarray]:
    """Keys and vectors sorted by item_idx (so results do not depend on the file's row order), checked."""
    keys, x = read_vectors(path)
    if len(x) == 0:
        raise PipelineError(f"{path}: no item vectors")
    bad = ~np.isfinite(x).all(1)
    if bad.any():
        first = keys["item_idx"][int(np.argmax(bad))]
        raise PipelineError(f"{path}: {int(bad.sum())} item vectors contain NaN or inf (first: item_idx {first})")
    if keys["item_idx"].n_unique() != keys.height:
        raise PipelineError(f"{path}: duplicate item_idx values")
    order = np.argsort(keys["item_idx"].to_numpy(), kind="stable")
    return keys[order], x[order]


def ids_frame(keys: pl.DataFrame, codes: np.ndarray, dedup: np.ndarray) -> pl.DataFrame:
    # int32 codes: downstream token arithmetic (offset + level * K + code) cannot overflow.
    cols = {f"code_{level + 1}": pl.Series(codes[:, level], dtype=pl.Int32) for level in range(codes.shape[1])}
    return keys.select(pl.col("item_idx").cast(pl.Int32), pl.col("item_id")).with_columns(
        **cols, dedup=pl.Series(dedup, dtype=pl.Int32)
    ).sort("item_idx")


def quantize(embeddings: Path, cfg: QuantizeParams, out_ids: Path, out_model: Path, out_metrics: Path,
             modality: str, progress: bool = True) -> dict:
    """Fit the quantizer (`cfg.method`) on one modality's vectors; write semantic IDs, checkpoint and metrics."""
    keys, x = read_item_vectors(embeddings)
    n, d = x.shape
    if n < cfg.codebook_size:
        print(f"quantize[{modality}]: note: {n} items < codebook_size {cfg.codebook_size}, "
              f"at most {n / cfg.codebook_size:.0%} of each codebook can be used", file=sys.stderr)
    t0 = time.perf_counter()
    if cfg.method == "rkmeans":
        model, fit = fit_rkmeans(x, cfg), {"kmeans_iters": RKMEANS_ITERS}
        how = f"residual k-means, {RKMEANS_ITERS} iterations per level"
    else:
        model, history = train_rqvae(x, cfg, progress=progress)
        if not math.isfinite(history[-1]["loss"]):
            raise PipelineError(f"{embeddings}: RQ-VAE training diverged (loss {history[-1]['loss']}); "
                                f"try a lower quantize.{modality}.lr")
        dtype = precision.resolve(cfg.dtype, torch.device("cpu"))
        fit = {"final_loss": _r(history[-1]["loss"]), "epochs": cfg.epochs, "dtype": dtype,
               "reseeded_codes": sum(h["reseeded"] for h in history)}
        how = f"RQ-VAE, {cfg.epochs} epochs in {dtype}"
    print(f"quantize[{modality}]: fitted on {n} x {d} ({how}) in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    codes = assign_codes(model, x)
    dedup = dedup_codes(codes)
    metrics = {"modality": modality, "method": cfg.method, "items": n, "dim": d, "levels": cfg.levels,
               "codebook_size": cfg.codebook_size,
               **code_metrics(codes, dedup, reconstruction_mse(model, x), cfg.codebook_size), **fit}
    write_parquet(ids_frame(keys, codes, dedup), out_ids)
    save_rqvae(model, cfg, out_model)
    write_json(metrics, out_metrics)
    usage = "/".join(f"{u['used_fraction']:.0%}" for u in metrics["usage"].values())
    print(f"quantize[{modality}]: {n} items, usage {usage}, collisions {metrics['collision_rate']:.1%} "
          f"(max {metrics['max_items_per_tuple']} per tuple), recon mse {metrics['recon_mse']:.3g} -> {out_ids}",
          file=sys.stderr)
    return metrics
