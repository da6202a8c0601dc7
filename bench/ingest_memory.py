"""Peak memory of `mgr ingest` on a large generated review file (Amazon 2014 format), median of N.

    python bench/ingest_memory.py [--reviews 5000000] [--runs 3] [--work /tmp/ingest_memory]
                                  [--before COMMIT]

Writes (once, seeded) a gzipped 2014 reviews file of `--reviews` lines from 500k users (10 each)
over 100k items with Zipf-like popularity, plus a meta file naming every item, then runs
`mgr ingest --no-require-image` on them and reads the child's peak RSS. With `--before COMMIT`
it also runs that commit's code (a git worktree), for the before/after ratio. Writes
bench/results/ingest_memory.json.
"""
from __future__ import annotations

import argparse
import datetime as dt
import gzip
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from machine import machine  # noqa: E402


def write_data(work: Path, n_reviews: int, seed: int = 0) -> tuple[Path, Path]:
    reviews, meta = work / f"reviews_{n_reviews}.json.gz", work / "meta.json.gz"
    if reviews.exists() and meta.exists():
        return reviews, meta
    rng = np.random.default_rng(seed)
    n_users, n_items = n_reviews // 10, 100_000
    weights = 1.0 / np.arange(1, n_items + 1) ** 0.8
    items = rng.choice(n_items, size=n_reviews, p=weights / weights.sum())
    users = np.repeat(np.arange(n_users), 10)[:n_reviews]
    times = 1_300_000_000 + rng.integers(0, 10**8, size=n_reviews)
    tmp = reviews.with_suffix(".tmp")
    with gzip.open(tmp, "wt", compresslevel=1) as f:
        for start in range(0, n_reviews, 100_000):
            f.writelines(f'{{"reviewerID": "A{u:013d}", "asin": "B{i:09d}", "overall": 5.0, '
                         f'"unixReviewTime": {t}, "reviewText": "fine"}}\n'
                         for u, i, t in zip(users[start:start + 100_000].tolist(),
                                            items[start:start + 100_000].tolist(),
                                            times[start:start + 100_000].tolist()))
    tmp.rename(reviews)
    with gzip.open(meta, "wt", compresslevel=1) as f:
        f.writelines(f"{{'asin': 'B{i:09d}', 'title': 'Item {i}', 'description': 'A generated item.'}}\n"
                     for i in range(n_items))
    return reviews, meta


def peak_rss_run(code_root: Path, reviews: Path, meta: Path, out: Path, empty: Path) -> tuple[float, float]:
    """(peak RSS MiB, wall s) of one `mgr ingest` in a fresh process running the code in `code_root`."""
    script = "import sys; from stages.app import main; sys.argv[0] = 'mgr'; main()"
    args = [sys.executable, "-c", script, "ingest", "--reviews", str(reviews), "--meta", str(meta),
            "--no-require-image", "--images-dir", str(empty), "--out", str(out), "--no-progress"]
    t0 = time.perf_counter()
    res = subprocess.run(["/usr/bin/time", "-f", "%M", *args], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(code_root)}, cwd=code_root)
    wall = time.perf_counter() - t0
    if res.returncode:
        sys.exit(f"ingest failed:\n{res.stderr[-2000:]}")
    return int(res.stderr.strip().splitlines()[-1]) / 1024, wall


def measure(code_root: Path, data: tuple[Path, Path], work: Path, runs: int) -> dict:
    (work / "empty").mkdir(exist_ok=True)
    rss, wall = zip(*(peak_rss_run(code_root, *data, work / "out", work / "empty") for _ in range(runs)))
    report = json.loads((work / "out" / "ingest_report.json").read_text())
    return {"peak_rss_mib": round(statistics.median(rss)), "runs_mib": [round(r) for r in rss],
            "wall_s": round(statistics.median(wall), 1), "counts": report.get("counts", report.get("output"))}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reviews", type=int, default=5_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--work", type=Path, default=Path("/tmp/ingest_memory"))
    ap.add_argument("--before", default=None, help="a commit to measure too (checked out as a git worktree)")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    data = write_data(args.work, args.reviews)
    result = {
        "what": f"peak RSS of `mgr ingest` on {args.reviews:,} generated 2014-format reviews (bench/ingest_memory.py)",
        "date": dt.date.today().isoformat(),
        "machine": machine(),
        "reviews_file_mib": round(data[0].stat().st_size / 2**20), "data_written_s": round(time.perf_counter() - t0, 1),
        "runs": args.runs, "this": measure(ROOT, data, args.work, args.runs),
    }
    if args.before:
        old = args.work / "before"
        if not old.exists():
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(old), args.before], check=True)
        result["before"] = {"commit": args.before, **measure(old, data, args.work, args.runs)}
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old)], check=True)
    out = ROOT / "bench" / "results" / "ingest_memory.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
