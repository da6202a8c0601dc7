"""The recommender on a GPU: Beauty at TIGER's model size within a time budget, and the
embedded default's text and lfpp models.

    python bench/on_gpu.py --beauty-seq DIR [--budget-s 300] [--embedded data/sequences]
                           [--out bench/results/on_gpu.json]

Prepared on any machine (the data stages need no GPU): `python bench/real_beauty.py --no-train
--set "embed.text.fields=[title, categories]"` writes Beauty's text sequences
(`<work>/sequences/text`); `dvc repro sequences@text sequences@lfpp` the embedded default's.
MGR_DEVICE=auto (the default) trains and decodes on the GPU; `auto` dtypes resolve to bfloat16
there. Training writes no DVCLive curves, so no dvc is needed on the GPU machine.

1. The GPU, and its bfloat16 matmul rate (8192^3, mean of 10 after 3 warm-ups).
2. Beauty, text variant: params.yaml with bench/real_beauty.py's overrides, TIGER's model size
   (4+4 layers, d_model 128, 6 heads x 64, d_ff 1024, dropout 0.1), model selection on all
   validation users, and `--set` last. First a torch-profiler run of 30 training steps (wall
   against GPU kernel time). The epoch count is the one that fits `--budget-s`, from a timed probe of
   training steps and one validation pass, so that the cosine schedule ends where training does.
   The test split is decoded once, at the end.
3. The embedded default's text and lfpp variants with params.yaml as it is: training time,
   decoding users/s, test metrics.
`--dropout-ab` first times training steps with torch's fused dropout and SDPA on the GPU
against this project's CPU dropout code run there (pipeline/dropout.py).
--out is rewritten after each part, so a run cut short keeps what it finished.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
from machine import machine  # noqa: E402
from real_beauty import OVERRIDES, PUBLISHED, params_tree, parse_sets  # noqa: E402

from pipeline.evaluate import evaluate_variant  # noqa: E402
from pipeline.params import RecommenderParams, VariantParams, validate  # noqa: E402
from pipeline.train import Trainer, train_variant  # noqa: E402

TIGER_SIZE = {"recommender.model.encoder_layers": 4, "recommender.model.decoder_layers": 4,
              "recommender.model.d_model": 128, "recommender.model.heads": 6, "recommender.model.d_kv": 64,
              "recommender.model.d_ff": 1024, "recommender.model.dropout": 0.1}
PROBE_STEPS = 150  # the first 50 warm the GPU up (kernels, allocator); the next 100 are timed


def params_with(overrides: dict, variant: str = "text") -> tuple[RecommenderParams, VariantParams]:
    params = params_tree(overrides)
    return (validate(RecommenderParams, params["recommender"], "params.yaml", "recommender"),
            validate(VariantParams, params["variants"][variant], "params.yaml", f"variants.{variant}"))


def gpu_facts() -> dict:
    a, b = (torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(10):
        a @ b
    torch.cuda.synchronize()
    tflops = 10 * 2 * 8192 ** 3 / (time.perf_counter() - t0) / 1e12
    return {"gpu": torch.cuda.get_device_name(), "bf16_matmul_tflops": round(tflops, 1)}


def probe(seq: Path, rec: RecommenderParams, variant: VariantParams) -> dict:
    """Seconds per training step and per validation pass, on the run's own config."""
    trainer = Trainer(seq, variant, rec, None, None)
    trainer.run(PROBE_STEPS - 100)
    t0 = time.perf_counter()
    trainer.run(100)
    step_s = (time.perf_counter() - t0) / 100
    t0 = time.perf_counter()
    trainer.evaluate(trainer.valid)
    return {"step_s": step_s, "valid_s": time.perf_counter() - t0, "steps_per_epoch": trainer.steps_per_epoch,
            "valid_users": len(trainer.valid.target)}


def profile_steps(seq: Path, rec: RecommenderParams, variant: VariantParams, steps: int = 30) -> dict:
    """Where a training step's time goes: wall time against the GPU's kernel time, per step."""
    from torch.profiler import ProfilerActivity, profile
    trainer = Trainer(seq, variant, rec, None, None)
    trainer.run(20)  # warm-up
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        t0 = time.perf_counter()
        trainer.run(steps)
        torch.cuda.synchronize()
        wall = time.perf_counter() - t0
    stats = prof.key_averages()
    top = sorted(stats, key=lambda e: e.self_cpu_time_total, reverse=True)[:12]
    return {"steps": steps, "batch_size": rec.train.batch_size, "wall_ms_per_step": round(wall * 1e3 / steps, 2),
            "gpu_kernel_ms_per_step": round(sum(getattr(e, "self_device_time_total", 0) for e in stats) / 1e3 / steps, 2),
            "kernel_launches_per_step": sum(e.count for e in stats if "LaunchKernel" in e.key) / steps,
            "top_self_cpu_ms_per_step": {e.key: round(e.self_cpu_time_total / 1e3 / steps, 2) for e in top}}


def dropout_ab(seq: Path, rec: RecommenderParams, variant: VariantParams, rounds: int = 5, steps: int = 40) -> dict:
    """Seconds per training step with torch's fused dropout and SDPA on the GPU (pipeline/dropout.py's
    NATIVE_ON_GPU) against the CPU's dropout code run there: one trainer each, alternating in one
    process, median of `rounds`; and the fused side's profile."""
    from pipeline import dropout
    trainers, times = {}, {True: [], False: []}
    for native in (True, False):
        dropout.NATIVE_ON_GPU = native
        trainers[native] = Trainer(seq, variant, rec, None, None)
        trainers[native].run(20)  # warm-up
    for r in range(rounds):
        for native in ((True, False) if r % 2 == 0 else (False, True)):
            dropout.NATIVE_ON_GPU = native
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            trainers[native].run(steps)
            torch.cuda.synchronize()
            times[native].append((time.perf_counter() - t0) / steps)
    dropout.NATIVE_ON_GPU = True
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    return {"rounds": rounds, "steps": steps, "batch_size": rec.train.batch_size,
            "fused_ms_per_step": round(med[True] * 1e3, 2), "cpu_code_ms_per_step": round(med[False] * 1e3, 2),
            "speedup": round(med[False] / med[True], 3),
            "per_round_ratios": [round(b / a, 3) for a, b in zip(times[True], times[False])],
            "fused_profile": profile_steps(seq, rec, variant)}


def beauty(seq: Path, budget_s: float, work: Path, extra: dict) -> dict:
    overrides = {**OVERRIDES, **TIGER_SIZE, "recommender.train.eval_users": 0, "recommender.train.patience": 100,
                 "recommender.train.eval_batch": 512, **extra, "recommender.train.max_epochs": 1}
    profiled = profile_steps(seq, *params_with(overrides))
    print(f"beauty: profile {profiled}", file=sys.stderr, flush=True)
    p = probe(seq, *params_with(overrides))
    epoch_s = p["steps_per_epoch"] * p["step_s"]  # training alone
    # Validation at most about a quarter of the time: every epoch where decoding is cheap.
    every = max(1, math.ceil(p["valid_s"] / (epoch_s / 3)))
    epochs = max(1, min(200, math.floor(budget_s / (epoch_s + p["valid_s"] / every))))
    overrides.update({"recommender.train.max_epochs": epochs, "recommender.train.eval_every": every})
    rec, variant = params_with(overrides)
    print(f"beauty: probe {p}, {epochs} epochs, validation every {every}", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    train = train_variant(seq, variant, rec, work / "beauty.pt", work / "beauty_train.json", None, work / "cache")
    train_s = time.perf_counter() - t0
    test = evaluate_variant(seq, work / "beauty.pt", rec.train)
    return {"overrides": overrides, "profile": profiled, "probe": p, "train_wall_s": round(train_s, 1), **train, **test,
            "published": PUBLISHED}


def embedded(seq_root: Path, variants: list[str], work: Path) -> dict:
    out = {}
    for name in variants:
        rec, variant = params_with({}, name)
        model = work / f"{name}.pt"
        t0 = time.perf_counter()
        train = train_variant(seq_root / name, variant, rec, model, work / f"{name}.json", None, work / "cache")
        train_s = time.perf_counter() - t0
        out[name] = {"train_wall_s": round(train_s, 1),
                     "train_examples_per_s": round(train["train"]["train_examples"] * train["train"]["epochs"]
                                                   / train_s, 1),
                     **train, **evaluate_variant(seq_root / name, model, rec.train)}
        print(f"embedded {name}: {out[name]['test']}", file=sys.stderr, flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--beauty-seq", type=Path, help="Beauty's text sequences (bench/real_beauty.py --no-train)")
    ap.add_argument("--budget-s", type=float, default=300, help="Beauty's training budget, seconds (0: no training)")
    ap.add_argument("--dropout-ab", action="store_true",
                    help="first time training steps with fused dropout/SDPA against the CPU code, at TIGER's size")
    ap.add_argument("--embedded", type=Path, help="the embedded default's data/sequences")
    ap.add_argument("--set", nargs="*", default=[], help="more params overrides for Beauty, key=value (YAML values)")
    ap.add_argument("--variants", default="text,lfpp", help="the embedded default's variants to run")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "on_gpu.json")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench/on_gpu.py: torch sees no GPU")
    result = {"what": "bench/on_gpu.py", "date": dt.date.today().isoformat(),
              "machine": {**machine(), **gpu_facts()}}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.beauty_seq and args.dropout_ab:
            result["dropout_ab"] = dropout_ab(args.beauty_seq, *params_with({**OVERRIDES, **TIGER_SIZE}))
            print(f"dropout A/B: {result['dropout_ab']}", file=sys.stderr, flush=True)
            args.out.write_text(json.dumps(result, indent=2) + "\n")
        if args.beauty_seq and args.budget_s > 0:
            result["beauty_text"] = beauty(args.beauty_seq, args.budget_s, work,
                                            parse_sets(args.set))
            args.out.write_text(json.dumps(result, indent=2) + "\n")
        if args.embedded:
            result["embedded"] = embedded(args.embedded, args.variants.split(","), work)
            args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
