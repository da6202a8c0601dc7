"""Every stage of `dvc repro` on the embedded default, one at a time: wall time and peak RSS.

    python bench/pipeline_profile.py [--repo .] [--noop-runs 3] [--only STAGE ...] [--out PATH]

Runs the stages in the order `dvc repro --dry --force` lists them, each as
`dvc repro --single-item --force <stage>` under /usr/bin/time, whose peak RSS is the largest
of dvc's process and the stage's command (the kernel reports the maximum over a process and
the children it waited for). So a stage's figure is at least dvc's own (at most 78 MiB: the
compare stage, which loads no torch, measured that on 2026-12-06), and its time includes
dvc's start-up (about a second). Then the median of `--noop-runs` no-op `dvc repro` runs.
This reruns the whole pipeline in `--repo` (about 20 minutes on 2 cores) and leaves its
outputs and dvc.lock updated, as `dvc repro --force` would. `data/cache` (the
resumable state of unfinished, and the checkpoints of finished, training runs) is deleted first:
a stage that finds its finished checkpoint there returns at once, which is not a fresh run.
`--only` re-measures the named stages (or all of a kind, `--only train evaluate`) and replaces their rows in the results file;
`--noop-only` the no-op runs alone. A "no-op" run that runs a stage is an error, not a figure.
Each no-op run is paired with one that hides ruamel's C YAML parser (`ruamel.yaml.clib`, which
dvc uses for params.yaml, dvc.yaml and dvc.lock when it is installed), so the results also hold
the no-op time with the pure-Python parser, measured interleaved on the same machine.
Also records, per variant, training examples/s against evaluation users/s from the run's metrics
files (`per_example`). Writes `--out`, by default bench/results/pipeline_profile_<today>.json
(`--only` and `--noop-only` update the `--out` file of an earlier run).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from machine import machine  # noqa: E402


def stage_order(repo: Path) -> list[str]:
    out = subprocess.run(["dvc", "repro", "--dry", "--force"], cwd=repo, capture_output=True, text=True, check=True)
    return re.findall(r"Running stage '([^']+)'", out.stdout)


def timed(cmd: list[str], repo: Path, noop: bool = False, env: dict | None = None) -> tuple[float, float]:
    """(wall seconds, peak RSS in MiB) of `cmd`, which must succeed (and, with `noop`, run no stage)."""
    res = subprocess.run(["/usr/bin/time", "-f", "%e %M", *cmd], cwd=repo, capture_output=True, text=True, env=env)
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{res.stderr[-3000:]}")
    ran = re.findall(r"Running stage '([^']+)'", res.stdout)
    if noop and ran:  # a changed param or code file: that run timed the stages, not dvc's check
        raise SystemExit(f"the no-op `dvc repro` ran {', '.join(ran)}: commit or repro first")
    seconds, kib = res.stderr.strip().splitlines()[-1].split()
    return float(seconds), int(kib) / 1024


def noop_runs(repo: Path, n: int) -> dict:
    """Median of `n` no-op `dvc repro` runs, each followed by one with the C YAML parser hidden."""
    with tempfile.TemporaryDirectory() as shadow:
        # ruamel imports its C parser as the top-level module `_ruamel_yaml`; one that fails to
        # import, first on the path, makes it fall back to the pure-Python parser.
        (Path(shadow) / "_ruamel_yaml.py").write_text("raise ImportError('hidden by pipeline_profile.py')\n")
        pure_env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [shadow, os.environ.get("PYTHONPATH")]))}
        runs, pure = [], []
        for _ in range(n):
            runs.append(timed(["dvc", "repro"], repo, noop=True)[0])
            pure.append(timed(["dvc", "repro"], repo, noop=True, env=pure_env)[0])
    return {"noop_repro_seconds": round(statistics.median(runs), 2), "noop_repro_runs": [round(x, 2) for x in runs],
            "noop_repro_pure_python_yaml_seconds": round(statistics.median(pure), 2),
            "noop_repro_pure_python_yaml_runs": [round(x, 2) for x in pure]}


def per_example(repo: Path) -> dict:
    """Per trained variant: training examples/s (epochs x prefixes over the training loop's seconds,
    its validation decodes included; a full run, which the deleted `data/cache` ensures) and the
    evaluate stage's test users/s, from `metrics/train_V.json` and `metrics/eval_V.json`: the goal
    is evaluation no slower per example than training (README "Performance"). With alignment on,
    the seconds include its epochs too, so the training rate reads low."""
    rates = {}
    for train_file in sorted((repo / "metrics").glob("train_*.json")):
        variant = train_file.stem.removeprefix("train_")
        eval_file = repo / "metrics" / f"eval_{variant}.json"
        if not eval_file.exists():
            continue
        t = json.loads(train_file.read_text())["train"]
        d = json.loads(eval_file.read_text())["decoding"]
        train_rate = t["epochs"] * t["train_examples"] / t["seconds_this_run"]
        rates[variant] = {"train_examples_per_s": round(train_rate), "train_dtype": t.get("dtype"),
                          "eval_users_per_s": d["users_per_s"], "decode_dtype": d.get("dtype"),
                          "eval_over_train": round(d["users_per_s"] / train_rate, 2)}
    return rates


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repo", type=Path, default=ROOT)
    ap.add_argument("--noop-runs", type=int, default=3)
    ap.add_argument("--only", nargs="*", help="re-measure these stages (names, or kinds such as `train`) only, "
                                              "updating the results file")
    ap.add_argument("--noop-only", action="store_true", help="re-measure the no-op `dvc repro` only")
    ap.add_argument("--out", type=Path, help="results file (default bench/results/pipeline_profile_<today>.json)")
    args = ap.parse_args()
    repo = args.repo.resolve()
    out = args.out or ROOT / "bench" / "results" / f"pipeline_profile_{dt.date.today().isoformat()}.json"
    if (args.only or args.noop_only) and not out.exists():
        sys.exit(f"--out {out}: no results file to update (name the earlier run's)")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True,
                            text=True).stdout.strip()
    if subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo, capture_output=True,
                      text=True).stdout.strip():
        commit += " + uncommitted changes"
    if args.noop_only:
        result = json.loads(out.read_text())
        noop = noop_runs(repo, args.noop_runs)
        result.update(noop, noop_remeasured={"date": dt.date.today().isoformat(), "commit": commit,
                                             "machine": machine()})
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps({k: result[k] for k in [*noop, "noop_remeasured"]}, indent=2))
        return
    old = {s["stage"]: s for s in json.loads(out.read_text())["stages"]} if args.only else {}
    order = stage_order(repo)
    if args.only:
        unknown = [o for o in args.only if not any(o in (n, n.split("@")[0]) for n in order)]
        if unknown:
            sys.exit(f"--only: no stage named or of kind {', '.join(unknown)} (stages: {', '.join(order)})")
    shutil.rmtree(repo / "data" / "cache", ignore_errors=True)
    stages = []
    for name in order:
        if args.only and name not in args.only and name.split("@")[0] not in args.only:
            stages.append(old[name])
            continue
        seconds, rss = timed(["dvc", "repro", "--single-item", "--force", name], repo)
        stages.append({"stage": name, "seconds": round(seconds, 1), "peak_rss_mib": round(rss)})
        if args.only:
            stages[-1]["remeasured"] = dt.date.today().isoformat()
        print(f"{name:20s} {seconds:8.1f} s {rss:8.0f} MiB", flush=True)
    total = sum(s["seconds"] for s in stages)
    noop = noop_runs(repo, args.noop_runs)
    by_kind: dict[str, float] = {}
    for s in stages:
        kind = s["stage"].split("@")[0]
        by_kind[kind] = round(by_kind.get(kind, 0.0) + s["seconds"], 1)
    result = {
        "what": "dvc repro of the embedded default, stage by stage (bench/pipeline_profile.py)",
        "date": dt.date.today().isoformat(), "commit": commit,
        "machine": machine(),
        "runs": 1, "end_to_end_seconds": round(total, 1),  # the stages' sum, dvc start-ups included
        "peak_rss_mib": max(s["peak_rss_mib"] for s in stages),
        "seconds_by_kind": by_kind, "stages": stages,
        "per_example": per_example(repo),
        **noop,
    }
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "stages"}, indent=2))


if __name__ == "__main__":
    main()
