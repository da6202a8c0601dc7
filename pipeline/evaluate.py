"""Test-set evaluation of a trained variant (the comparison across variants: pipeline/compare.py).

Validation picks the epoch during training; the test targets are decoded once, here, with the
best weights. Every model is scored by the same code (pipeline/metrics.py) over all items.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import polars as pl
import torch

from pipeline import distributed, precision
from pipeline.artifacts import atomic_path
from pipeline.beam import ItemTrie
from pipeline.checkpoint import load_model
from pipeline.examples import read_examples, read_items
from pipeline.metrics import evaluate_top, target_ranks
from pipeline.params import TrainParams
from pipeline.recall_curve import write_recall_curve
from pipeline.seq2seq import model_from_config, recommend


def load_recommender(path: Path, device: torch.device | str = "cpu"):
    return load_model(path, model_from_config, "model not found (run the train stage)").to(device)


def evaluate_variant(seq_dir: Path, model_path: Path, cfg: TrainParams, split: str = "test",
                     curve_out: Path | None = None, per_user_out: Path | None = None) -> dict[str, Any]:
    """Constrained beam search for every user of `split`; metrics plus decoding facts. Optionally
    the Recall@1..top_k curve (CSV) and per user the target, its rank (0 = not in the list) and
    the top list (Parquet, for the notebooks: they never decode again)."""
    model = load_recommender(model_path, distributed.device())
    item_idx, tokens = read_items(seq_dir)
    trie = ItemTrie(tokens, item_idx)
    ex = read_examples(seq_dir / f"{split}.parquet")
    t0 = time.perf_counter()
    top, _ = recommend(model, trie, ex.input_ids, cfg.beam, cfg.top_k, cfg.eval_batch, cfg.decode_dtype,
                       cfg.decode_workers)
    seconds = time.perf_counter() - t0
    top = top.numpy()
    if curve_out is not None:
        write_recall_curve(top, ex.target, curve_out)
    if per_user_out is not None:
        users = pl.read_parquet(seq_dir / f"{split}.parquet", columns=["user_idx"])["user_idx"]
        frame = pl.DataFrame({"user_idx": users, "target": ex.target, "rank": target_ranks(top, ex.target),
                              "top": top.tolist()}, schema_overrides={"top": pl.List(pl.Int64)})
        with atomic_path(per_user_out) as tmp:
            frame.write_parquet(tmp)
    dtype = precision.resolve(cfg.decode_dtype, distributed.device())
    return {split: evaluate_top(top, ex.target),
            "decoding": {"users": len(ex.target), "beam": cfg.beam, "top_k": cfg.top_k, "dtype": dtype,
                         "seconds": round(seconds, 2), "users_per_s": round(len(ex.target) / seconds, 1),
                         "unfilled_slots": int((top < 0).sum())}}
