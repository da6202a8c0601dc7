"""Embedding throughput (items/s) on the embedded default dataset, median of N runs.

    python bench/embed_speed.py [--runs 3] [--items data/ingested/items.parquet]

Runs `pipeline.embed.embed_items` with this repo's `embed.text` and `embed.image` params on
every item: text through the tokenizer and encoder, images decoded by the worker threads
and encoded. The encoder is loaded once per modality and not timed (it loads in a few
seconds whatever the data size); each run starts with an empty resume folder, so every
item is encoded. Writes bench/results/embed_speed.json.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from machine import machine  # noqa: E402

from pipeline import embed  # noqa: E402
from pipeline.params import load_params  # noqa: E402


def time_runs(modality: str, items: pl.DataFrame, cfg, runs: int) -> list[float]:
    encoder = embed._load_encoder(modality, cfg)
    embed._load_encoder = lambda m, c: encoder  # reuse the loaded model: only encoding is timed
    rates = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            report = embed.embed_items(modality, items, cfg, Path(tmp) / "out.parquet", Path(tmp), progress=False)
            rates.append(round(report["items_out"] / (time.perf_counter() - t0), 1))
    return rates


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--items", type=Path, default=ROOT / "data" / "ingested" / "items.parquet")
    args = ap.parse_args()
    params = load_params(ROOT / "params.yaml").embed
    items = pl.read_parquet(args.items)
    result = {
        "what": "embed_items on the embedded default items (encoder load not timed)",
        "date": dt.date.today().isoformat(),
        "machine": machine(),
        "items": items.height, "runs": args.runs,
    }
    load = embed._load_encoder
    for modality in ("text", "image"):
        cfg = getattr(params, modality)
        embed._load_encoder = load
        rates = time_runs(modality, items, cfg, args.runs)
        result[modality] = {"encoder": cfg.encoder, "model": cfg.model, "weights": cfg.weights,
                            "batch_size": cfg.batch_size, "items_per_s_median": statistics.median(rates),
                            "items_per_s_all": rates}
        print(modality, rates, file=sys.stderr)
    out = ROOT / "bench" / "results" / "embed_speed.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
