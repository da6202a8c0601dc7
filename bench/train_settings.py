"""Recommender training speed under two settings of params.yaml, trained in turn on the same batches.

    python bench/train_settings.py --a KEY=VALUE [...] --b KEY=VALUE [...] [--variants text,lfpp]
                                   [--rounds 5] [--steps 40] [--batch-size N] [--out PATH]

For a params change whose cost is the question (dropout, widths, heads), where the ratio of two
separate runs would mostly measure the machine's drift (`bench/train_revisions.py` does the same
for two revisions of the code). Per variant (sequences from `dvc repro`), each side builds the
seeded model from params.yaml with its overrides and trains it as `mgr train` does
(`train_revisions.train_steps`: its `Objective` in the train_dtype this machine resolves, with the
first-code weight, fused AdamW, gradient clipping). Both sides take the same length-bucketed batches (the a side's batch
size, or `--batch-size`); rounds alternate them, `--steps` optimizer steps each, after one warm-up
step per side. examples/s is the median over rounds, `b_speedup` the median of the rounds' paired
ratios (a's time / b's). Writes bench/results/train_settings.json (or `--out`).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from machine import machine  # noqa: E402
from real_beauty import params_tree, parse_sets  # noqa: E402
from train_revisions import train_steps  # noqa: E402

from pipeline import precision  # noqa: E402
from pipeline.examples import read_examples  # noqa: E402
from pipeline.layout import Layout  # noqa: E402
from pipeline.optim import adamw, clip_grad_norm  # noqa: E402
from pipeline.params import Params, validate  # noqa: E402
from pipeline.seq2seq import build_for_layout  # noqa: E402
from pipeline.train import Objective, batch_order  # noqa: E402

SIDES = ("a", "b")


def recommender_with(overrides: dict):
    """params.yaml's recommender section with `overrides` applied, validated as `mgr train` would."""
    return validate(Params, params_tree(overrides), "params.yaml").recommender


def bench_variant(name: str, recs: dict, args) -> dict:
    seq_dir = ROOT / "data" / "sequences" / name
    layout = Layout.load(seq_dir / "layout.json")
    ex = read_examples(seq_dir / "train.parquet")
    batch = args.batch_size or recs["a"].train.batch_size
    batches = batch_order(ex.lengths, batch, torch.Generator().manual_seed(0))[: args.steps + 1]
    sides = {}
    for s, rec in recs.items():
        model = build_for_layout(rec.model, layout, rec.train.seed).train()
        dtype = precision.resolve(rec.train.train_dtype, torch.device("cpu"))
        sides[s] = (Objective(model, None, dtype, rec.train.first_code_weight), model, adamw(model.parameters(), rec.train.lr, rec.train.weight_decay),
                    rec.train.grad_clip, dtype)

    def steps(s: str, bs: list[torch.Tensor]) -> list[float]:
        objective, model, opt, grad_clip, _ = sides[s]
        return train_steps(objective, model, opt, clip_grad_norm, grad_clip, ex, bs, len(bs))[1]

    for s in SIDES:
        steps(s, batches[:1])
    seconds, last_loss = {s: [] for s in SIDES}, {}
    for r in range(args.rounds):
        for s in (SIDES if r % 2 == 0 else SIDES[::-1]):
            t0 = time.perf_counter()
            last_loss[s] = statistics.fmean(steps(s, batches[1:]))
            seconds[s].append(time.perf_counter() - t0)
    examples = sum(len(b) for b in batches[1:])
    ratios = [a / b for a, b in zip(seconds["a"], seconds["b"])]
    return {"batch_size": batch, "steps_per_round": len(batches) - 1,
            **{s: {"examples_per_s": round(examples / statistics.median(seconds[s]), 1), "train_dtype": sides[s][4],
                   "rounds_s": [round(x, 2) for x in seconds[s]], "mean_loss_last_round": round(last_loss[s], 4)}
               for s in SIDES},
            "b_speedup_per_round": [round(x, 3) for x in ratios], "b_speedup_median": round(statistics.median(ratios), 3)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--a", nargs="*", default=[], help="the first side's params overrides, key=value (YAML values)")
    ap.add_argument("--b", nargs="*", default=[], help="the second side's")
    ap.add_argument("--variants", default="text,lfpp")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=40, help="optimizer steps per round and side")
    ap.add_argument("--batch-size", type=int, default=0, help="0: the a side's recommender.train.batch_size")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "train_settings.json")
    args = ap.parse_args()
    overrides = {"a": parse_sets(args.a), "b": parse_sets(args.b)}
    recs = {s: recommender_with(overrides[s]) for s in SIDES}
    result = {"what": "recommender training under two params settings, in turn (bench/train_settings.py)",
              "date": dt.date.today().isoformat(), "machine": machine(), "rounds": args.rounds,
              "a": overrides["a"], "b": overrides["b"],
              "variants": {v: bench_variant(v, recs, args) for v in args.variants.split(",")}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["variants"], indent=1))


if __name__ == "__main__":
    main()
