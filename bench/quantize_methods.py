"""One variant of the embedded default with semantic IDs from another quantizer, next to the pipeline's.

    python bench/quantize_methods.py [--variant text] [--method rkmeans] [--work /tmp/quantize_methods]
                                     [--result bench/results/quantize_methods_<variant>_<method>.json]

Runs the stage commands a user runs, in a work folder, with params.yaml but
`quantize.<m>.method` set to `--method` for each modality the variant reads: `quantize`,
`sequences`, `train`, `evaluate`. The rest of params.yaml (model, training, seed, the item
vectors in data/embeddings) is the pipeline's, so the only difference from the pipeline's run is the
quantizer. Needs `dvc repro` done first: it reads data/embeddings, data/ingested and, for the
comparison, metrics/quantize_<m>.json and metrics/eval_<variant>.json. Stages whose outputs are
in the work folder are not rerun. The result holds the test metrics of both (the test split is
decoded once per model, by `evaluate`), the validation figures that selected each, and the code
statistics of both quantizers. One seed each: a difference below a few standard errors of R@10
(about 0.004 here, 3,997 test users) is not a finding.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from machine import machine  # noqa: E402
from real_beauty import run, set_key  # noqa: E402

CODE_STATS = ("collision_rate", "max_items_per_tuple", "unique_tuples", "recon_mse")


def code_stats(path: Path) -> dict:
    m = json.loads(path.read_text())
    return {k: m[k] for k in CODE_STATS} | {"entropy_normalized": [u["entropy_normalized"] for u in m["usage"].values()]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variant", default="text")
    ap.add_argument("--method", default="rkmeans")
    ap.add_argument("--work", type=Path, default=Path("/tmp/quantize_methods"))
    ap.add_argument("--result", type=Path, default=None)
    args = ap.parse_args()
    w, v = args.work, args.variant
    w.mkdir(parents=True, exist_ok=True)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    modalities = params["variants"][v]["modalities"]
    for m in modalities:
        set_key(params, f"quantize.{m}.method", args.method)
    p = w / "params.yaml"
    p.write_text(yaml.safe_dump(params, sort_keys=False))
    wall_file = w / "wall_s.json"
    wall: dict[str, float] = json.loads(wall_file.read_text()) if wall_file.exists() else {}
    for m in modalities:
        run(f"quantize_{m}", ["quantize", "--modality", m, "--params", str(p),
                              "--embeddings", str(ROOT / "data" / "embeddings" / f"{m}.parquet"),
                              "--out", str(w / "ids" / f"{m}.parquet"), "--model", str(w / f"rqvae_{m}.pt"),
                              "--metrics", str(w / f"quantize_{m}.json"), "--no-progress"],
            w / "ids" / f"{m}.parquet", wall, wall_file)
    seq = w / "seq" / v
    run("sequences", ["sequences", "--variant", v, "--params", str(p), "--ids-dir", str(w / "ids"),
                      "--splits", str(ROOT / "data" / "ingested" / "splits.parquet"), "--out", str(seq)],
        seq, wall, wall_file)
    run("train", ["train", "--variant", v, "--params", str(p), "--seq-dir", str(seq), "--model", str(w / f"{v}.pt"),
                  "--metrics", str(w / f"train_{v}.json"), "--live", str(w / "live" / v),
                  "--work-dir", str(w / "cache"), "--no-progress"], w / f"{v}.pt", wall, wall_file)
    run("evaluate", ["evaluate", "--variant", v, "--params", str(p), "--seq-dir", str(seq),
                     "--model", str(w / f"{v}.pt"), "--out", str(w / f"eval_{v}.json"),
                     "--curve", str(w / f"curve_{v}.csv"), "--per-user", str(w / f"per_user_{v}.parquet")],
        w / f"eval_{v}.json", wall, wall_file)
    sides = {args.method: (w / f"eval_{v}.json", w / f"train_{v}.json", w / "quantize_{}.json"),
             "pipeline": (ROOT / "metrics" / f"eval_{v}.json", ROOT / "metrics" / f"train_{v}.json",
                          ROOT / "metrics" / "quantize_{}.json")}
    result = {"what": f"variant {v} of the embedded default, quantize.method {args.method} against the pipeline's "
                      "(bench/quantize_methods.py)",
              "date": dt.date.today().isoformat(), "machine": machine(), "variant": v, "wall_s": wall}
    for name, (ev, tr, qz) in sides.items():
        result[name] = {"test": json.loads(ev.read_text())["test"], "valid": json.loads(tr.read_text())["valid"],
                        "codes": {m: code_stats(Path(str(qz).format(m))) for m in modalities}}
    out = args.result or ROOT / "bench" / "results" / f"quantize_methods_{v}_{args.method}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k]["test"] for k in sides}, indent=2))


if __name__ == "__main__":
    main()
