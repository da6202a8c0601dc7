"""Wall time of `mgr ingest` on the real Amazon 2014 Beauty files (../shared/data), median of N runs.

    python bench/ingest_beauty.py [--runs 5] [--data ../shared/data/amazon2014/Beauty]

Writes bench/results/ingest_beauty.json. Wall time includes interpreter start-up: it is
what a user waits for. Peak RSS is the child's maximum resident set size.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def one_run(data: Path, out: Path) -> tuple[float, int, dict]:
    cmd = [str(Path(sys.executable).parent / "mgr"), "ingest", "--reviews", str(data / "reviews_Beauty_5.json.gz"),
           "--meta", str(data / "meta_Beauty.json.gz"), "--no-require-image", "--images-dir", str(out.parent),
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
    walls, report, rss = [], {}, 0
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.runs):
            wall, rss, report = one_run(args.data, Path(tmp) / "out")
            walls.append(wall)
    result = {
        "what": "mgr ingest, Amazon 2014 Beauty 5-core (real interactions and titles), --no-require-image",
        "date": dt.date.today().isoformat(),
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version()},
        "runs": args.runs,
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
