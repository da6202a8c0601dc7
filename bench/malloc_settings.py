"""Train and evaluate stages under glibc malloc settings, run in turn: wall time, page faults, peak RSS.

    python bench/malloc_settings.py [--variant lfpp] [--epochs 1] [--runs 3]
                                    [--settings default,32M:1G,4M:256M] [--out PATH]

torch's CPU tensors come from malloc. glibc maps a block above its mmap threshold afresh
(128 KiB at first, raised as such blocks are freed) and gives free memory at the top of its
heap back to the kernel beyond its trim threshold, so a process that frees a step's activations
and asks for the same sizes again can fault in and zero the same pages step after step. Both
thresholds are environment variables (MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_), so
a setting costs no code to try: `M:T` here sets them to M and T bytes (K, M, G suffixes), and
`default` runs with neither (nor GLIBC_TUNABLES).

Each round runs, per setting in turn, `mgr train` for the variant (params.yaml with
recommender.train.max_epochs = --epochs, a fresh checkpoint folder, outputs in a temporary
folder) and `mgr evaluate` on the committed model (models/recommender/<variant>.pt, from
`dvc repro`). Per stage and setting: the median wall time over --runs rounds and the median of
the rounds' ratios to the first setting, the child's minor page faults and peak RSS, and
whether its model / per-user lists are bit-identical to the first setting's.
Writes `--out` (bench/results/malloc_settings.json).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from machine import machine  # noqa: E402

UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def size(text: str) -> int:
    return int(text[:-1]) * UNITS[text[-1].upper()] if text[-1].upper() in UNITS else int(text)


def env_for(setting: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    if setting != "default":
        mmap, trim = setting.split(":")
        env.update(MALLOC_MMAP_THRESHOLD_=str(size(mmap)), MALLOC_TRIM_THRESHOLD_=str(size(trim)))
    return env


def run(cmd: list[str], env: dict[str, str]) -> dict:
    """Wall seconds, minor page faults and peak RSS of one child process (its own rusage)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, use = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.read().decode()[-2000:]}")
    return {"seconds": round(wall, 2), "minor_faults": use.ru_minflt, "peak_rss_mib": round(use.ru_maxrss / 1024)}


def stage_commands(variant: str, params: Path, out: Path) -> dict[str, tuple[list[str], Path]]:
    """Per stage, its command (outputs under `out`) and the output compared across settings."""
    mgr = str(Path(sys.executable).with_name("mgr"))
    train = [mgr, "train", "--variant", variant, "--params", str(params), "--model", str(out / "model.pt"),
             "--metrics", str(out / "train.json"), "--live", str(out / "live"), "--work-dir", str(out / "ckpt"),
             "--no-progress"]
    evaluate = [mgr, "evaluate", "--variant", variant, "--out", str(out / "eval.json"),
                "--curve", str(out / "curve.csv"), "--per-user", str(out / "per_user.parquet")]
    return {"train": (train, out / "model.pt"), "evaluate": (evaluate, out / "per_user.parquet")}


def summary(runs: dict[str, list[dict]], first: str) -> dict:
    ratios = {s: [r["seconds"] / f["seconds"] for r, f in zip(v, runs[first])] for s, v in runs.items()}
    return {s: {"seconds_median": round(statistics.median(r["seconds"] for r in v), 2),
                "seconds": [r["seconds"] for r in v],
                "time_over_first_median": round(statistics.median(ratios[s]), 3),
                "minor_faults_median": round(statistics.median(r["minor_faults"] for r in v)),
                "peak_rss_mib_median": round(statistics.median(r["peak_rss_mib"] for r in v))}
            for s, v in runs.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variant", default="lfpp")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--settings", default="default,32M:1G,4M:256M")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "malloc_settings.json")
    args = ap.parse_args()
    settings = args.settings.split(",")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["recommender"]["train"]["max_epochs"] = args.epochs
    runs: dict[str, dict[str, list[dict]]] = {"train": {s: [] for s in settings}, "evaluate": {s: [] for s in settings}}
    same: dict[str, dict[str, bool]] = {stage: {} for stage in runs}
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "params.yaml").write_text(yaml.safe_dump(params))
        for i in range(args.runs):
            for s in settings:
                out = Path(tmp) / f"{i}_{settings.index(s)}"
                for stage, (cmd, product) in stage_commands(args.variant, Path(tmp) / "params.yaml", out).items():
                    runs[stage][s].append(run(cmd, env_for(s)))
                    ref = (Path(tmp) / f"{i}_0" / product.name).read_bytes()
                    same[stage][s] = same[stage].get(s, True) and product.read_bytes() == ref
                print(i, s, {st: runs[st][s][-1] for st in runs}, file=sys.stderr, flush=True)
    result = {
        "what": "mgr train / evaluate under glibc malloc settings, in turn (bench/malloc_settings.py)",
        "date": dt.date.today().isoformat(), "machine": machine(), "variant": args.variant,
        "train_epochs": args.epochs, "runs": args.runs,
        "settings": {s: {k: v for k, v in env_for(s).items() if k.startswith("MALLOC_")} for s in settings},
        **{stage: summary(v, settings[0]) for stage, v in runs.items()},
        "bit_identical_to_first": same,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
