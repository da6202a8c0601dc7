"""Ceilings for the embedded dataset: how well next-item prediction can go knowing each item's
true type (text), true style (image), or both.

The oracle scores every unseen item by popularity x P(type | previous item's type) (the type
chain, counted on training sequences) x P(style | the user's history), keeping only the factors
its modalities reveal. It shows, on the data itself, that the text alone or the image alone
caps Recall@K well below what both together allow: the gap a multimodal recommender can close.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl


def _codes(values: np.ndarray) -> np.ndarray:
    _, codes = np.unique(values, return_inverse=True)
    return codes


def attribute_oracle(ingested: Path, ground_truth: Path, k: int = 10) -> dict[str, float]:
    """Recall@k on the test targets of `ingested` (history = train + valid) for each oracle."""
    items = pl.read_parquet(Path(ingested) / "items.parquet").sort("item_idx")
    truth = pl.read_csv(ground_truth).rename({"asin": "item_id"})
    items = items.join(truth, on="item_id", how="left", maintain_order="left")
    typ, sty = _codes(items["type"].to_numpy()), _codes(items["style"].to_numpy())
    splits = pl.read_parquet(Path(ingested) / "splits.parquet")
    trains = splits["train"].to_list()
    histories = [tr + [va] for tr, va in zip(trains, splits["valid"].to_list())]

    pop = np.bincount(splits["train"].explode().drop_nulls().to_numpy(), minlength=items.height).astype(float)
    trans = np.ones((typ.max() + 1, typ.max() + 1))  # add-one smoothing
    for tr in trains:
        np.add.at(trans, (typ[tr[:-1]], typ[tr[1:]]), 1)
    trans /= trans.sum(axis=1, keepdims=True)

    hits = dict.fromkeys(("popularity", "text", "image", "text+image"), 0)
    for hist, target in zip(histories, splits["test"].to_list()):
        p_type = trans[typ[hist[-1]]][typ]
        style_counts = np.bincount(sty[hist], minlength=sty.max() + 1) + 0.5
        p_style = (style_counts / style_counts.sum())[sty]
        for name, score in (("popularity", pop), ("text", p_type * pop), ("image", p_style * pop),
                            ("text+image", p_type * p_style * pop)):
            score = score.copy()
            score[hist] = -1.0  # a user's next item is one not seen before (the data has no repeats)
            hits[name] += int(target in np.argpartition(-score, k)[:k])
    return {name: round(h / len(histories), 4) for name, h in hits.items()}
