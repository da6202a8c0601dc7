"""Beam-search speed and rankings per decoding option, on the trained models of the embedded default.

    python bench/decode_options.py [--variants text,lfpp] [--batches 64,128,256] [--dtypes float32,bfloat16]
                                   [--workers 1] [--runs 3] [--out PATH]

For each variant, `seq2seq.recommend` (what `evaluate` runs) decodes every test user with the
model in models/recommender/ (run `dvc repro` first) at params.yaml's beam and top_k, for each
users-per-batch (`recommender.train.eval_batch`), network dtype (`decode_dtype`) and number of
batches decoded at once (`decode_workers`, e.g. `--workers 1,auto`). Rounds go over all settings
in turn, so that the machine's drift hits each alike; users/s is the median over `--runs` rounds,
and per setting the median of its per-round ratio to the first setting's. Per dtype and workers,
the test metrics and how far the lists agree with the first dtype's and workers' (same ordered
top-10, same top-10 set, same first item, largest score difference).
Writes `--out` (bench/results/decode_options.json), with the params the models were trained with.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from machine import machine  # noqa: E402
from pipeline.beam import ItemTrie  # noqa: E402
from pipeline.evaluate import load_recommender  # noqa: E402
from pipeline.examples import read_examples, read_items  # noqa: E402
from pipeline.metrics import evaluate_top  # noqa: E402
from pipeline.params import load_params  # noqa: E402
from pipeline.seq2seq import recommend  # noqa: E402

DTYPES = ("float32", "bfloat16")


def agreement(ref: tuple[np.ndarray, np.ndarray], other: tuple[np.ndarray, np.ndarray]) -> dict:
    (a, sa), (b, sb) = ref, other
    a, b, sa, sb = a[:, :10], b[:, :10], sa[:, :10], sb[:, :10]
    return {"same_top10_list": round(float((a == b).all(1).mean()), 3),
            "same_top10_set": round(float(np.mean([set(x) == set(y) for x, y in zip(a, b)])), 3),
            "same_first_item": round(float((a[:, 0] == b[:, 0]).mean()), 3),
            "max_abs_score_diff_top10": round(float(np.abs(sa - sb).max()), 3)}


def test_split(variant: str):
    """The variant's item trie and test examples (data/sequences/<variant>)."""
    seq = ROOT / "data" / "sequences" / variant
    item_idx, tokens = read_items(seq)
    return ItemTrie(tokens, item_idx), read_examples(seq / "test.parquet")


def rounded_metrics(top: np.ndarray, target: np.ndarray) -> dict:
    return {m: round(v, 4) for m, v in evaluate_top(top, target).items() if m != "mrr_depth"}


def bench_variant(variant: str, beam: int, k: int, batches: list[int], dtypes: list[str],
                  workers: list[int | str], runs: int) -> dict:
    model = load_recommender(ROOT / "models" / "recommender" / f"{variant}.pt")
    trie, ex = test_split(variant)
    settings = [(b, d, w) for d in dtypes for w in workers for b in batches]
    rates: dict[tuple, list[float]] = {s: [] for s in settings}
    lists = {}
    for _ in range(runs):
        for b, d, w in settings:
            t0 = time.perf_counter()
            top, scores = recommend(model, trie, ex.input_ids, beam, k, b, d, w)
            rates[(b, d, w)].append(len(ex.target) / (time.perf_counter() - t0))
            lists[d, w] = (top.numpy(), scores.numpy())
    out = {"users": len(ex.target), "users_per_s": {}}
    first = rates[settings[0]]
    for b, d, w in settings:
        r = rates[(b, d, w)]
        out["users_per_s"][f"{d}_batch{b}" + (f"_workers{w}" if len(workers) > 1 else "")] = {
            "median": round(statistics.median(r), 1), "runs": [round(x, 1) for x in r],
            "ratio_to_first": round(statistics.median([x / y for x, y in zip(r, first)]), 3)}
    ref = (dtypes[0], workers[0])
    for key in lists:
        name = key[0] + (f"_workers{key[1]}" if len(workers) > 1 else "")
        out[f"test_{name}"] = rounded_metrics(lists[key][0], ex.target)
        if key != ref:
            out[f"{name}_vs_first"] = agreement(lists[ref], lists[key])
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variants", default="text,lfpp")
    ap.add_argument("--batches", default="64,128,256")
    ap.add_argument("--dtypes", default=",".join(DTYPES))
    ap.add_argument("--workers", default="1", help="decode_workers values, e.g. 1,auto")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "decode_options.json")
    args = ap.parse_args()
    params = load_params(ROOT / "params.yaml")
    cfg = params.recommender.train
    batches = [int(b) for b in args.batches.split(",")]
    workers = [w if w == "auto" else int(w) for w in args.workers.split(",")]
    result = {
        "what": "beam search per eval_batch, decode_dtype and decode_workers, trained models, test users "
                "(bench/decode_options.py)",
        "date": dt.date.today().isoformat(),
        "machine": machine(),
        "runs": args.runs, "beam": cfg.beam, "top_k": cfg.top_k,
        "model": params.recommender.model.model_dump(), "lr": cfg.lr,
        "variants": {v: bench_variant(v, cfg.beam, cfg.top_k, batches, args.dtypes.split(","), workers, args.runs)
                     for v in args.variants.split(",")},
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
