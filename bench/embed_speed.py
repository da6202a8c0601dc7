"""Embedding throughput (items/s) on the embedded default dataset, median of N runs.

    python bench/embed_speed.py [--runs 3] [--items data/ingested/items.parquet] [--dtypes float32,bfloat16] [--out PATH]

Runs `pipeline.embed.embed_items` with this repo's `embed.text` and `embed.image` params on
every item: text through the tokenizer and encoder, images decoded by the worker threads
and encoded. The encoder is loaded once per modality and not timed (it loads in a few
seconds whatever the data size); each run starts with an empty resume folder, so every
item is encoded. `--dtypes` runs each listed `embed.<m>.dtype` in turn (the first alternating by
run), one loaded encoder each. Writes bench/results/embed_speed.json (or `--out`).
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


def one_run(modality: str, items: pl.DataFrame, cfg, encoder) -> float:
    """items/s of one embed_items call with `encoder` already loaded (only encoding is timed)."""
    embed._load_encoder = lambda m, c: encoder
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        report = embed.embed_items(modality, items, cfg, Path(tmp) / "out.parquet", Path(tmp), progress=False)
        return round(report["items_out"] / (time.perf_counter() - t0), 1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--items", type=Path, default=ROOT / "data" / "ingested" / "items.parquet")
    ap.add_argument("--dtypes", default="", help="comma list of embed.<m>.dtype values to run in turn "
                    "(e.g. float32,bfloat16); default: params.yaml's")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "embed_speed.json")
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
        base = getattr(params, modality)
        cfgs = {d: base.model_copy(update={"dtype": d}) for d in (args.dtypes.split(",") if args.dtypes else [base.dtype])}
        encoders = {d: load(modality, c) for d, c in cfgs.items()}
        rates: dict[str, list[float]] = {d: [] for d in cfgs}
        for r in range(args.runs):  # the dtypes in turn, the first alternating by run
            for d in (list(cfgs) if r % 2 == 0 else list(cfgs)[::-1]):
                rates[d].append(one_run(modality, items, cfgs[d], encoders[d]))
        result[modality] = {"encoder": base.encoder, "model": base.model, "weights": base.weights,
                            "batch_size": base.batch_size}
        for d, rs in rates.items():
            key = "" if len(cfgs) == 1 else f"_{encoders[d].dtype}"
            result[modality] |= {f"items_per_s_median{key}": statistics.median(rs), f"items_per_s_all{key}": rs}
        print(modality, rates, file=sys.stderr)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
