"""Do the modalities' semantic IDs say the same thing? (the research's modality-dominance analysis)

Adjusted mutual information (AMI) between two code assignments of the same items: 0 when
they are as related as chance, 1 when one determines the other. Low text~image AMI means
the two IDs carry different information, which is what late fusion counts on; the fused
(early-fusion) codes agreeing far more with one modality than the other shows that
modality dominating the joint ID.

With the embedded dataset's ground truth (product type lives only in the text, visual style
only in the image) the report also scores each modality's codes against type and style.
"""
from __future__ import annotations

from itertools import combinations

import polars as pl


def _ami(a: pl.Series, b: pl.Series) -> float:
    # Imported here: sklearn takes ~0.8 s to load.
    from sklearn.metrics import adjusted_mutual_info_score

    return round(float(adjusted_mutual_info_score(a.to_numpy(), b.to_numpy())), 4)


def _labels(name: str, ids: pl.DataFrame) -> pl.DataFrame:
    """item_id, `<name>:1` (first code) and, with two or more levels, `<name>:12` (first two codes)."""
    cols = [pl.col("code_1").alias(f"{name}:1")]
    if "code_2" in ids.columns:
        cols.append(pl.concat_str("code_1", "code_2", separator="-").alias(f"{name}:12"))
    return ids.select("item_id", *cols)


def modality_agreement(ids: dict[str, pl.DataFrame], ground_truth: pl.DataFrame | None = None) -> dict:
    """AMI between every pair of modalities (first code, first two codes), on the items all share.

    `ground_truth`: optional frame with `item_id` (or `asin`) and label columns (the embedded
    data's `type`, `style`); each modality's first-level codes are scored against each label.
    """
    order = ("text", "image", "fused")
    names = sorted(ids, key=lambda m: (order.index(m) if m in order else len(order), m))
    joined = _labels(names[0], ids[names[0]])
    for name in names[1:]:
        joined = joined.join(_labels(name, ids[name]), on="item_id", how="inner")
    report: dict = {"items": joined.height, "modalities": names, "level_1": {}, "levels_1_2": {}}
    for a, b in combinations(names, 2):
        report["level_1"][f"{a}~{b}"] = _ami(joined[f"{a}:1"], joined[f"{b}:1"])
        if f"{a}:12" in joined.columns and f"{b}:12" in joined.columns:
            report["levels_1_2"][f"{a}~{b}"] = _ami(joined[f"{a}:12"], joined[f"{b}:12"])
    if "fused" in names and {"text", "image"} <= set(names):
        t, i = report["level_1"]["text~fused"], report["level_1"]["image~fused"]
        report["fused_dominated_by"] = "text" if t > i else "image" if i > t else "neither"
    if ground_truth is not None:
        report["ground_truth"] = _against_truth(joined, names, ground_truth)
    return report


def _against_truth(joined: pl.DataFrame, names: list[str], truth: pl.DataFrame) -> dict:
    labels = [c for c in truth.columns if c not in ("item_id", "asin")]
    key = "item_id" if "item_id" in truth.columns else "asin"
    both = joined.join(truth.rename({key: "item_id"}).with_columns(pl.col(labels).cast(pl.String)),
                       on="item_id", how="inner")
    return {"items": both.height,
            **{m: {lab: _ami(both[f"{m}:1"], both[lab]) for lab in labels} for m in names}}
