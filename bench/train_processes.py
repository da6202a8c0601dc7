"""`mgr train` as one process of 2 threads against torchrun's 2 processes of 1 thread, in turn.

    python bench/train_processes.py [--variant lfpp] [--epochs 1] [--runs 3]
                                    [--modes 1x2,2x1] [--dtype auto|float32|bfloat16] [--out PATH]

A mode `PxT` runs `mgr train` as P processes (P > 1: `torchrun --standalone --nproc_per_node P`,
DistributedDataParallel over gloo) with OMP_NUM_THREADS=T each. The global batch stays
`recommender.train.batch_size` (each process trains on its slice, README "Scaling up"), so the
modes take the same optimizer steps on the same batches and differ in how the cores share the
work: torch's threads inside each op, or processes that each run whole ops on one core and
average gradients once per step. Dropout draws differ between the modes (per rank), so their
models are not bit-identical (their validation metrics are recorded, though after one epoch
they say little).

Each round runs every mode in turn (params.yaml with recommender.train.max_epochs = --epochs
and, with --dtype, train_dtype = --dtype; outputs in a temporary folder, the embedded default's sequences from `dvc repro`). Per mode: the
median wall time (process start to exit, torchrun's start-up included) over --runs rounds, the
median of the rounds' ratios to the first mode, the training loop's own seconds
(`seconds_this_run` of the metrics file), the largest process's peak RSS, and the validation
metrics of the last round. Writes `--out` (bench/results/train_processes_<variant>[_<dtype>].json).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from machine import machine  # noqa: E402
from malloc_settings import env_for, run, stage_commands  # noqa: E402


def command(mode: str, variant: str, params: Path, out: Path) -> tuple[list[str], dict[str, str]]:
    procs, threads = (int(x) for x in mode.split("x"))
    train = stage_commands(variant, params, out)["train"][0]
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    launch = [torchrun, "--standalone", "--nproc_per_node", str(procs)] if procs > 1 else []
    env = dict(env_for("default"), OMP_NUM_THREADS=str(threads))
    return launch + train, env


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variant", default="lfpp")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--modes", default="1x2,2x1")
    ap.add_argument("--dtype", help="recommender.train.train_dtype (default: params.yaml's)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    modes = args.modes.split(",")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["recommender"]["train"]["max_epochs"] = args.epochs
    if args.dtype:
        params["recommender"]["train"]["train_dtype"] = args.dtype
    runs: dict[str, list[dict]] = {m: [] for m in modes}
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "params.yaml").write_text(yaml.safe_dump(params))
        for i in range(args.runs):
            for m in modes:
                out = Path(tmp) / f"{i}_{m}"
                cmd, env = command(m, args.variant, Path(tmp) / "params.yaml", out)
                facts = run(cmd, env)
                metrics = json.loads((out / "train.json").read_text())
                facts.update(loop_seconds=metrics["train"]["seconds_this_run"], dtype=metrics["train"]["dtype"],
                             valid=metrics["valid"])
                runs[m].append(facts)
                print(i, m, facts, file=sys.stderr, flush=True)
    first = runs[modes[0]]
    result = {
        "what": "mgr train, one process of 2 threads against 2 processes of 1 thread (bench/train_processes.py)",
        "date": dt.date.today().isoformat(), "machine": machine(), "variant": args.variant,
        "train_epochs": args.epochs, "runs": args.runs, "cpu_count": os.cpu_count(),
        "modes": {m: {"seconds_median": round(statistics.median(r["seconds"] for r in v), 2),
                      "seconds": [r["seconds"] for r in v],
                      "time_over_first_median": round(statistics.median(
                          r["seconds"] / f["seconds"] for r, f in zip(v, first)), 3),
                      "loop_seconds_median": round(statistics.median(r["loop_seconds"] for r in v), 1),
                      "largest_process_peak_rss_mib_median": round(statistics.median(r["peak_rss_mib"] for r in v)),
                      "dtype": v[-1]["dtype"], "valid_last_run": v[-1]["valid"]}
                  for m, v in runs.items()},
    }
    out = args.out or ROOT / "bench" / "results" / f"train_processes_{args.variant}{'_' + args.dtype if args.dtype else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
