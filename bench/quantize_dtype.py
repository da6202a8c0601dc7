"""RQ-VAE training in float32 against bfloat16 (`quantize.<m>.dtype`), per modality, on the embedded default.

    python bench/quantize_dtype.py [--modalities text,image,fused] [--seeds 0,1,2] [--out PATH]

For each modality and seed, trains the modality's RQ-VAE (params.yaml's quantize.<m>, its seed
replaced) once in each dtype, in turn in one process (the first alternates by seed), on
data/embeddings/<m>.parquet (`dvc repro embed_fused` first). Records the training's wall time and
the statistics of the codes the trained model assigns (always in float32): collision rate,
reconstruction MSE, per-level usage entropy. The speed-up is the median of the per-seed paired
ratios; whether bfloat16 costs code quality is read against the spread over seeds within float32.
bfloat16 pays only where the CPU multiplies it natively (precision.native_bfloat16); elsewhere
autocast emulates it and it is slower.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from machine import machine  # noqa: E402

from pipeline import precision  # noqa: E402
from pipeline.params import load_params  # noqa: E402
from pipeline.quantize import assign_codes, code_metrics, dedup_codes, read_item_vectors, reconstruction_mse, train_rqvae  # noqa: E402

DTYPES = ("float32", "bfloat16")


def one_run(x, cfg) -> dict:
    t0 = time.perf_counter()
    model, history = train_rqvae(x, cfg)
    seconds = time.perf_counter() - t0
    codes = assign_codes(model, x)
    m = code_metrics(codes, dedup_codes(codes), reconstruction_mse(model, x), cfg.codebook_size)
    return {"seconds": round(seconds, 2), "final_loss": round(history[-1]["loss"], 5),
            "collision_rate": m["collision_rate"], "recon_mse": m["recon_mse"],
            "entropy_normalized": [u["entropy_normalized"] for u in m["usage"].values()]}


def summary(runs: list[dict]) -> dict:
    by = {d: [r[d] for r in runs] for d in DTYPES}
    return {
        "seconds_median": {d: statistics.median(r["seconds"] for r in by[d]) for d in DTYPES},
        "speedup_median": statistics.median(a["seconds"] / b["seconds"] for a, b in zip(by["float32"], by["bfloat16"])),
        "collision_rate": {d: [r["collision_rate"] for r in by[d]] for d in DTYPES},
        "recon_mse": {d: [r["recon_mse"] for r in by[d]] for d in DTYPES},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--modalities", default="text,image,fused")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "quantize_dtype.json")
    args = ap.parse_args()
    params = load_params(ROOT / "params.yaml")
    seeds = [int(s) for s in args.seeds.split(",")]
    result = {"what": "RQ-VAE training, float32 against bfloat16 autocast (bench/quantize_dtype.py)",
              "date": dt.date.today().isoformat(), "machine": machine(), "threads": torch.get_num_threads(),
              "native_bfloat16": precision.native_bfloat16(torch.device("cpu")), "seeds": seeds, "modalities": {}}
    for m in args.modalities.split(","):
        _, x = read_item_vectors(ROOT / "data" / "embeddings" / f"{m}.parquet")
        runs = []
        for i, seed in enumerate(seeds):
            order = DTYPES if i % 2 == 0 else DTYPES[::-1]
            pair = {d: one_run(x, getattr(params.quantize, m).model_copy(update={"seed": seed, "dtype": d})) for d in order}
            runs.append({"seed": seed, **pair})
            print(m, seed, {d: pair[d]["seconds"] for d in DTYPES}, file=sys.stderr)
        result["modalities"][m] = {"items": len(x), "dim": x.shape[1], "epochs": getattr(params.quantize, m).epochs,
                                   **summary(runs), "runs": runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({m: {k: v for k, v in r.items() if k != "runs"} for m, r in result["modalities"].items()}, indent=2))


if __name__ == "__main__":
    main()
