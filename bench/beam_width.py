"""Does the beam limit a trained model's quality? Validation metrics of one model per beam width.

    python bench/beam_width.py --seq-dir data/sequences/text --model models/recommender/text.pt
                               [--beams 20,40,80] [--params params.yaml] [--out PATH]

Decodes every validation user (the held-out `valid` item, never the test split, so that the
answer cannot pick a setting on test) with `seq2seq.recommend`, as the evaluate stage does, at
each beam width and params.yaml's top_k, eval_batch, decode_dtype and decode_workers. A beam
search keeps only `beam` prefixes per step, so an item whose ID starts with a code the model
ranks low is never reached; if metrics rise with the beam, decoding is part of the gap to a
published number, if they stay flat, the model is. Writes `--out` with metrics, users/s and,
per beam, how many users' top-10 lists equal the first beam's.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from decode_options import rounded_metrics  # noqa: E402
from machine import machine  # noqa: E402
from pipeline.beam import ItemTrie  # noqa: E402
from pipeline.evaluate import load_recommender  # noqa: E402
from pipeline.examples import read_examples, read_items  # noqa: E402
from pipeline.params import load_params  # noqa: E402
from pipeline.seq2seq import recommend  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seq-dir", type=Path, required=True)
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--beams", default="20,40,80")
    ap.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "beam_width.json")
    args = ap.parse_args()
    cfg = load_params(args.params).recommender.train
    item_idx, tokens = read_items(args.seq_dir)
    trie, ex = ItemTrie(tokens, item_idx), read_examples(args.seq_dir / "valid.parquet")
    model = load_recommender(args.model)
    rows, first = {}, None
    for beam in [int(b) for b in args.beams.split(",")]:
        t0 = time.perf_counter()
        top, _ = recommend(model, trie, ex.input_ids, beam, cfg.top_k, cfg.eval_batch, cfg.decode_dtype,
                           cfg.decode_workers)
        seconds = time.perf_counter() - t0
        top = top.numpy()
        first = top if first is None else first
        rows[beam] = {"valid": rounded_metrics(top, ex.target), "users_per_s": round(len(ex.target) / seconds, 1),
                      "same_top10_as_first": round(float((top[:, :10] == first[:, :10]).all(1).mean()), 3)}
        print(beam, json.dumps(rows[beam]), flush=True)
    result = {"what": "validation metrics of one model per beam width (bench/beam_width.py)",
              "date": dt.date.today().isoformat(), "machine": machine(), "seq_dir": str(args.seq_dir),
              "model": str(args.model), "users": len(ex.target), "top_k": cfg.top_k,
              "decode_dtype": cfg.decode_dtype, "beams": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
