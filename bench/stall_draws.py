"""Several draws (seed x thread count) of next-item training per variant on the embedded default:
does a variant leave the first code's unigram level, and does the variants' order hold?

    python bench/stall_draws.py [--variants text,lf,lfpp] [--seeds 0,1] [--threads 1]
                                [--set recommender.model.embedding_init=scaled ...]

Trains each variant with `pipeline.train.train_variant` on data/sequences/<variant> (run
`dvc repro` first) and params.yaml plus the overrides, in a scratch folder; validation only,
the test split is not touched. Writes bench/results/stall_draws.json: per draw, the best
validation metrics and recall@10 after every epoch. The thread count is part of the draw:
torch's float sums run in another order, and that alone decided whether lf learned (README:
"Stalls at the first code").
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from machine import machine  # noqa: E402
from pipeline.params import Params, validate  # noqa: E402
from pipeline.train import train_variant  # noqa: E402
from real_beauty import params_tree, parse_sets  # noqa: E402


def params_with(overrides: list[str], seed: int):
    return validate(Params, params_tree({**parse_sets(overrides), "recommender.train.seed": seed}), "params.yaml")


def draw(variant: str, seed: int, overrides: list[str], scratch: Path) -> dict:
    params = params_with(overrides, seed)
    out = scratch / f"{variant}-{seed}"
    report = train_variant(ROOT / "data" / "sequences" / variant, params.variants[variant], params.recommender,
                           out / "model.pt", out / "metrics.json", out / "live", out / "work")
    curve = (out / "live" / "plots" / "metrics" / "valid" / "recall@10.tsv").read_text().split("\n")[1:]
    return {"variant": variant, "seed": seed, "threads": torch.get_num_threads(),
            "valid_recall@10_per_epoch": [float(line.split("\t")[-1]) for line in curve if line],
            "valid": report["valid"], "train": report["train"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variants", default="text,lf,lfpp")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--set", nargs="*", default=[], help="params overrides, key=value (YAML values)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "stall_draws.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        draws = [draw(v, int(s), args.set, Path(tmp)) for v in args.variants.split(",") for s in args.seeds.split(",")]
    result = {"what": "training draws per variant and seed on the embedded default (bench/stall_draws.py)",
              "date": dt.date.today().isoformat(),
              "machine": machine(),
              "overrides": args.set, "draws": draws}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps([{k: d[k] for k in ("variant", "seed", "threads", "valid_recall@10_per_epoch")} for d in draws]))


if __name__ == "__main__":
    main()
