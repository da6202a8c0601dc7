"""Attention kernels at the beam decoder's shapes: torch's fused kernel against plain tensor ops.

    python bench/attention_kernels.py [--runs 7] [--calls 30] [--out bench/results/attention_kernels.json]
    python bench/attention_kernels.py --training [--out bench/results/attention_kernels_training.json]

The cached decoder (`pipeline/seq2seq.py`, BeamDecoder) calls attention with shapes unlike a
training batch: 1,280 rows (64 users x beam 20) of 4 heads x 32, each with one or two new
queries over a prefix of 2-8 keys (self-attention), and per user 20 queries (its beams) over a
history of 40-160 encoder states (cross-attention). For each shape and kernel, a round times
`--calls` calls and keeps the median; kernels alternate within a round and the result is the
median over `--runs` rounds, so that the machine's drift hits all kernels alike.

`--training` times forward and backward at a training batch's shapes instead (`attend` in
`pipeline/t5.py`: 256 prefixes, the encoder's self-attention over 40-160 tokens, the decoder's
over its 8, its cross-attention over 160), in float32 and under bfloat16 autocast, the fused
kernel and the written-out products only, no dropout.
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
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from machine import machine  # noqa: E402
from pipeline.seq2seq import _prefix_attention as broadcast  # noqa: E402  (the decoder's own kernel)


def fused(q, k, v, bias):
    return F.scaled_dot_product_attention(q, k, v, bias, scale=1.0)


def matmul(q, k, v, bias):
    return (q @ k.transpose(-1, -2) + bias).softmax(-1) @ v


KERNELS = {"fused (torch sdpa)": fused, "matmul": matmul, "broadcast": broadcast}


def shapes() -> list[tuple[str, tuple, tuple, tuple]]:
    """(name, query shape, key shape, bias shape) as the decoder calls attention."""
    rows, heads, d = 64 * 20, 4, 32
    out = [(f"self, {n} new over {t} keys", (rows, heads, n, d), (rows, heads, t, d), (1, heads, n, t))
           for n, t in [(1, 2), (1, 7), (2, 5), (3, 5)]]
    out += [(f"cross, 20 beams over {L} states", (64, heads, 20, d), (64, heads, L, d), (64, 1, 1, L))
            for L in (44, 107, 160)]
    return out


def training_shapes() -> list[tuple[str, tuple, tuple, tuple]]:
    """(name, query shape, key shape, bias shape) as a training batch of 256 calls attention."""
    n, heads, d = 256, 4, 32
    out = [(f"encoder self, {t} tokens", (n, heads, t, d), (n, heads, t, d), (n, heads, t, t)) for t in (40, 80, 160)]
    return out + [("decoder self, 8 tokens", (n, heads, 8, d), (n, heads, 8, d), (1, heads, 8, 8)),
                  ("cross, 8 over 160 states", (n, heads, 8, d), (n, heads, 160, d), (n, 1, 1, 160))]


def forward_backward(fn, dtype: torch.dtype | None):
    """fn's forward and backward (into q, k, v) as training takes them, under autocast to `dtype`."""
    def call(q, k, v, bias):
        with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            q2, k2, v2 = (x.to(dtype) if dtype else x for x in (q, k, v))
            out = fn(q2, k2, v2, bias.to(q2.dtype))
        out.float().sum().backward()
    return call


def time_training(runs: int, calls: int, gen: torch.Generator) -> list[dict]:
    results = []
    for name, qs, ks, bs in training_shapes():
        # scores of unit variance, as T5's initialisation gives: unscaled ones saturate the softmax,
        # whose gradients then fall to float32 denormals, which the CPU handles slowly
        q, k, v = (torch.randn(s, generator=gen) for s in (qs, ks, ks))
        q, k, v = ((q * qs[-1] ** -0.5).requires_grad_(), k.requires_grad_(), v.requires_grad_())
        bias = torch.randn(bs, generator=gen)
        for label, dtype in (("float32", None), ("bfloat16 autocast", torch.bfloat16)):
            kernels = {"fused (torch sdpa)": forward_backward(fused, dtype), "matmul": forward_backward(matmul, dtype)}
            rounds = {kn: [] for kn in kernels}
            for _ in range(runs + 1):  # the first round warms up
                for kn, fn in kernels.items():
                    rounds[kn].append(time_call(fn, (q, k, v, bias), calls))
            ms = {kn: round(statistics.median(r[1:]) * 1e3, 3) for kn, r in rounds.items()}
            results.append({"shape": name, "dtype": label, "q": list(qs), "k": list(ks), "ms_per_forward_backward": ms,
                            "fused_over_matmul": round(ms["fused (torch sdpa)"] / ms["matmul"], 2)})
            print(json.dumps(results[-1]), flush=True)
    return results


def time_call(fn, args, calls: int) -> float:
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def time_decoder(runs: int, calls: int, gen: torch.Generator) -> list[dict]:
    results = []
    with torch.inference_mode():
        for name, qs, ks, bs in shapes():
            q, k, v = torch.randn(qs, generator=gen), torch.randn(ks, generator=gen), torch.randn(ks, generator=gen)
            bias = torch.randn(bs, generator=gen)
            ref = fused(q, k, v, bias)
            rounds = {kn: [] for kn in KERNELS}
            for _ in range(runs + 1):  # the first round warms up
                for kn, fn in KERNELS.items():
                    rounds[kn].append(time_call(fn, (q, k, v, bias), calls))
            ms = {kn: round(statistics.median(r[1:]) * 1e3, 3) for kn, r in rounds.items()}
            diff = {kn: float((fn(q, k, v, bias) - ref).abs().max()) for kn, fn in KERNELS.items()}
            results.append({"shape": name, "q": list(qs), "k": list(ks), "ms_per_call": ms,
                            "max_abs_diff_vs_fused": diff,
                            "fused_over_best_other": round(ms["fused (torch sdpa)"] / min(
                                v for kn, v in ms.items() if kn != "fused (torch sdpa)"), 2)})
            print(json.dumps(results[-1]), flush=True)
    return results


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--calls", type=int, default=30)
    ap.add_argument("--training", action="store_true", help="forward and backward at a training batch's shapes")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    gen = torch.Generator().manual_seed(0)
    if args.training:
        what, name = "attention forward + backward at a training batch's shapes", "attention_kernels_training.json"
        facts = {"results": time_training(args.runs, args.calls, gen)}
    else:
        what, name = "attention kernels at the beam decoder's shapes", "attention_kernels.json"
        facts = {"dtype": "float32", "results": time_decoder(args.runs, args.calls, gen)}
    result = {"what": f"{what} (bench/attention_kernels.py{' --training' if args.training else ''})",
              "date": dt.date.today().isoformat(), "machine": machine(), "runs": args.runs,
              "calls_per_round": args.calls, **facts}
    out = args.out or ROOT / "bench" / "results" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
