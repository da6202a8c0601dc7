"""Recommender training in float32 against bfloat16 autocast (`recommender.train.train_dtype`).

    python bench/train_dtype.py [--rounds 5] [--variants text,lfpp] [--steps 40] [--batch-size N]

Per variant (sequences from `dvc repro`, model sizes from params.yaml): two copies of the same
seeded model, each with its own optimizer, train on the same length-bucketed batches as `mgr train`
takes its steps (its `Objective`, fused AdamW, gradient clipping: `train_revisions.train_steps`),
one in float32 and one under bfloat16 autocast. Rounds alternate the two (`--steps` optimizer steps
each), so both see the same machine; each round's ratio is float32 time / bfloat16 time. The mean
loss of each side's last round shows whether the two still train alike. The same run measures the
float32 and the bfloat16 matmul peaks (2048^2) and the achieved FLOP/s (FlopCounterMode on one
step) against each. Median over rounds. With `--profile-steps N`, after the rounds each side runs
N more steps under torch's profiler, and the result lists the ops with the most self CPU time
(per step, and as a share of the profiled time), so the two precisions can be compared op by op.
Writes bench/results/train_dtype.json (or `--out`).
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
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from machine import machine  # noqa: E402
from train_revisions import train_steps  # noqa: E402

from pipeline.examples import read_examples  # noqa: E402
from pipeline.layout import Layout  # noqa: E402
from pipeline.optim import adamw, clip_grad_norm  # noqa: E402
from pipeline.params import load_params  # noqa: E402
from pipeline.seq2seq import build_for_layout  # noqa: E402
from pipeline.train import Objective, batch_order, trimmed  # noqa: E402

DTYPES = ("float32", "bfloat16")


def matmul_peak(dtype: torch.dtype, rounds: int, n: int = 2048) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    rates = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(10):
            a @ b
        rates.append(10 * 2 * n ** 3 / (time.perf_counter() - t0))
    return statistics.median(rates)


def bench_variant(name: str, params, args, peaks: dict) -> dict:
    seq_dir = ROOT / "data" / "sequences" / name
    layout = Layout.load(seq_dir / "layout.json")
    rec = params.recommender
    ex = read_examples(seq_dir / "train.parquet")
    batch = args.batch_size or rec.train.batch_size
    batches = batch_order(ex.lengths, batch, torch.Generator().manual_seed(0))[: args.steps + 1]
    tokens = sum(int(trimmed(ex.input_ids[b]).numel() + ex.labels[b].numel()) for b in batches[1:])
    sides = {}
    for dtype in DTYPES:
        model = build_for_layout(rec.model, layout, rec.train.seed).train()
        sides[dtype] = (Objective(model, None, dtype), model,
                        adamw(model.parameters(), rec.train.lr, rec.train.weight_decay))

    def steps(dtype: str, bs: list[torch.Tensor]) -> list[float]:
        objective, model, opt = sides[dtype]
        return train_steps(objective, model, opt, clip_grad_norm, rec.train.grad_clip, ex, bs, len(bs))[1]

    flops = {}
    for dtype in DTYPES:  # the first step also warms each side up
        with FlopCounterMode(display=False) as counter:
            steps(dtype, batches[:1])
        flops[dtype] = counter.get_total_flops() / int(trimmed(ex.input_ids[batches[0]]).numel()
                                                       + ex.labels[batches[0]].numel())
    seconds, last_loss = {d: [] for d in DTYPES}, {}
    for r in range(args.rounds):
        for dtype in (DTYPES if r % 2 == 0 else DTYPES[::-1]):
            t0 = time.perf_counter()
            losses = steps(dtype, batches[1:])
            seconds[dtype].append(time.perf_counter() - t0)
            last_loss[dtype] = statistics.fmean(losses)
    out = {"batch_size": batch, "steps_per_round": len(batches) - 1, "tokens_per_round": tokens}
    for dtype in DTYPES:
        tps = tokens / statistics.median(seconds[dtype])
        out[dtype] = {"tokens_per_s": round(tps), "rounds_s": [round(s, 2) for s in seconds[dtype]],
                      "mean_loss_last_round": round(last_loss[dtype], 4),
                      **{f"fraction_of_{p}_matmul_peak": round(tps * flops[dtype] / peaks[p], 3) for p in DTYPES}}
    ratios = [a / b for a, b in zip(seconds["float32"], seconds["bfloat16"])]
    out["speedup_per_round"] = [round(x, 3) for x in ratios]
    out["speedup_median"] = round(statistics.median(ratios), 3)
    if args.profile_steps:
        bs = batch_order(ex.lengths, batch, torch.Generator().manual_seed(1))[: args.profile_steps]
        out["profile"] = {dtype: op_profile(lambda: steps(dtype, bs), len(bs)) for dtype in DTYPES}
    return out


def op_profile(run, n_steps: int, top: int = 15) -> dict:
    """The ops with the most self CPU time over `run` (n_steps steps): ms per step, share, calls per step."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run()
    ops = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in ops)
    return {"steps": n_steps, "self_ms_per_step": round(total / 1e3 / n_steps, 2),
            "ops": [{"op": e.key, "ms_per_step": round(e.self_cpu_time_total / 1e3 / n_steps, 2),
                     "share": round(e.self_cpu_time_total / total, 3), "calls_per_step": round(e.count / n_steps, 1)}
                    for e in ops[:top]]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--variants", default="text,lfpp")
    ap.add_argument("--steps", type=int, default=40, help="optimizer steps per round and side")
    ap.add_argument("--batch-size", type=int, default=0, help="0: params.yaml's recommender.train.batch_size")
    ap.add_argument("--profile-steps", type=int, default=0, help="steps per side under torch's profiler (0: none)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "train_dtype.json")
    args = ap.parse_args()
    params = load_params(ROOT / "params.yaml")
    peaks = {d: matmul_peak(getattr(torch, d), args.rounds) for d in DTYPES}
    result = {
        "what": "recommender training, float32 against bfloat16 autocast, embedded default (bench/train_dtype.py)",
        "date": dt.date.today().isoformat(),
        "machine": machine(),
        "rounds": args.rounds,
        "matmul_peak_gflop_per_s": {d: round(p / 1e9, 1) for d, p in peaks.items()},
        "model": params.recommender.model.model_dump(),
        "variants": {v: bench_variant(v, params, args, peaks) for v in args.variants.split(",")},
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
