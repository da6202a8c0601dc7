"""Wall time of `mgr ingest` on the real Amazon 2014 Beauty files (../shared/data), median of N runs.

    python bench/ingest_beauty.py [--runs 5] [--data ../shared/data/amazon2014/Beauty]

Two cases:
- `5core`: the real reviews and the real meta of the 12,101 5-core items;
- `full_meta`: the same reviews with a meta file of the size of the real full
  `meta_Beauty.json.gz` (259,204 records): the 12,101 real records plus made-up records of
  unreviewed items in the 2014 Python-literal format with `related`/`salesRank` lists, as the
  full file has. Only the records some review needs are parsed; the rest must be skipped fast.

Writes bench/results/ingest_beauty.json. Wall time includes interpreter start-up: it is
what a user waits for. Peak RSS is the largest maximum resident set size of any child run so far.
"""
from __future__ import annotations

import argparse
import datetime as dt
import gzip
import json
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from machine import machine  # noqa: E402


FULL_META_RECORDS = 259_204


def write_full_meta(data: Path, dest: Path) -> None:
    rng = random.Random(0)
    real = [json.loads(line) for line in gzip.open(data / "meta_Beauty.json.gz")]
    with gzip.open(dest, "wt") as f:
        for i in range(FULL_META_RECORDS):
            rec = dict(real[i % len(real)])
            if i >= len(real):
                rec["asin"] = f"Z{i:09d}"  # an item no review mentions
            rec["related"] = {"also_bought": [f"B{rng.randrange(10**9):09d}" for _ in range(30)],
                              "also_viewed": [f"B{rng.randrange(10**9):09d}" for _ in range(20)]}
            rec["salesRank"] = {"Beauty": rng.randrange(200_000)}
            f.write(repr(rec) + "\n")


def one_run(reviews: Path, meta: Path, out: Path) -> tuple[float, int, dict]:
    cmd = [str(Path(sys.executable).parent / "mgr"), "ingest", "--reviews", str(reviews),
           "--meta", str(meta), "--no-require-image", "--images-dir", str(out.parent),
           "--out", str(out), "--no-progress"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    wall = time.perf_counter() - t0
    rss_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return wall, rss_kib, json.loads((out / "ingest_report.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "amazon2014" / "Beauty")
    args = ap.parse_args()
    reviews = args.data / "reviews_Beauty_5.json.gz"
    result = {
        "what": "mgr ingest, Amazon 2014 Beauty 5-core reviews (real interactions and titles), --no-require-image",
        "date": dt.date.today().isoformat(),
        "machine": machine(),
        "runs": args.runs,
    }
    with tempfile.TemporaryDirectory() as tmp:
        full_meta = Path(tmp) / "meta_full.json.gz"
        write_full_meta(args.data, full_meta)
        for case, meta in (("5core", args.data / "meta_Beauty.json.gz"), ("full_meta", full_meta)):
            walls, report, rss = [], {}, 0
            for _ in range(args.runs):
                wall, rss, report = one_run(reviews, meta, Path(tmp) / "out")
                walls.append(wall)
            result[case] = {
                "meta_lines": report["read"]["meta_lines"],
                "wall_s_median": round(statistics.median(walls), 2),
                "wall_s_all": [round(w, 2) for w in walls],
                "peak_rss_mib": round(rss / 1024, 1),
                "output": {k: report["output"][k] for k in ("users", "items", "interactions")},
            }
    dest = ROOT / "bench" / "results" / "ingest_beauty.json"
    dest.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
