"""Beam-search speed of two trained checkpoints of one variant, decoded in turn on the same users.

    python bench/decode_models.py --variant lfpp --before OLD.pt [--after models/recommender/lfpp.pt]
                                  [--runs 5] [--out bench/results/decode_models.json]

For comparing models whose shape differs (e.g. `recommender.model.item_output`), where a ratio
between two separate runs would mostly measure the machine's drift: every round decodes all test
users of data/sequences/<variant> (run `dvc repro` first) with `--before`, then with `--after`,
through `seq2seq.recommend` at params.yaml's beam, top_k, eval_batch, decode_dtype and
decode_workers, as the evaluate stage does. An old checkpoint of the pipeline is in the DVC cache:
`git show REV:dvc.lock` gives its md5, the file is .dvc/cache/files/md5/<first 2>/<rest>.
users/s is the median over `--runs` rounds; the result also has the test metrics of each.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from decode_options import rounded_metrics, test_split  # noqa: E402
from machine import machine  # noqa: E402
from pipeline.evaluate import load_recommender  # noqa: E402
from pipeline.params import load_params  # noqa: E402
from pipeline.seq2seq import output_offset, recommend  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variant", default="lfpp")
    ap.add_argument("--before", type=Path, required=True)
    ap.add_argument("--after", type=Path, default=None, help="default models/recommender/<variant>.pt")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "decode_models.json")
    args = ap.parse_args()
    cfg = load_params(ROOT / "params.yaml").recommender.train
    trie, ex = test_split(args.variant)
    paths = {"before": args.before, "after": args.after or ROOT / "models" / "recommender" / f"{args.variant}.pt"}
    models = {k: load_recommender(p) for k, p in paths.items()}
    rates: dict[str, list[float]] = {k: [] for k in models}
    tops = {}
    for _ in range(args.runs):
        for name, model in models.items():
            t0 = time.perf_counter()
            tops[name], _ = recommend(model, trie, ex.input_ids, cfg.beam, cfg.top_k, cfg.eval_batch, cfg.decode_dtype,
                                      cfg.decode_workers)
            rates[name].append(len(ex.target) / (time.perf_counter() - t0))
    result = {
        "what": "beam search users/s of two checkpoints decoded in turn (bench/decode_models.py)",
        "date": dt.date.today().isoformat(), "machine": machine(), "variant": args.variant,
        "users": len(ex.target), "runs": args.runs, "beam": cfg.beam, "top_k": cfg.top_k,
        "eval_batch": cfg.eval_batch, "decode_dtype": cfg.decode_dtype, "decode_workers": cfg.decode_workers,
        "models": {k: {"path": str(paths[k]), "output_offset": output_offset(m),
                       "users_per_s": round(statistics.median(rates[k]), 1), "runs": [round(r, 1) for r in rates[k]],
                       "test": rounded_metrics(tops[k].numpy(), ex.target)}
                   for k, m in models.items()},
    }
    result["after_over_before"] = round(result["models"]["after"]["users_per_s"]
                                        / result["models"]["before"]["users_per_s"], 2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
