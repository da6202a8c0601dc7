"""Matrix-product FLOPs per training example and per decoded user, next to the committed run's rates.

    python bench/flops_per_example.py [--variants text,image,fused,lf,lfpp] [--rates-from REPO] [--out PATH]

Why evaluation is slower per example than training (issue 5 expects it not to be): the two do
different amounts of work per example. For each variant's trained model (models/recommender/,
run `dvc repro` first) it counts, with torch's FlopCounterMode, the FLOPs of the matrix
products (mm, bmm, attention) of
- one training epoch as the train stage runs it (params.yaml's batch size, length-bucketed
  batches, teacher-forced loss forward and backward, in train_dtype's autocast), plus the
  validation beam search the stage runs after each epoch (eval_users), per training example;
- the evaluate stage's beam search over every test user (beam, top_k, eval_batch, decode_dtype),
  per user.
Elementwise work (norms, softmax, the optimizer, the search's bookkeeping) is not counted.
With the rates in metrics/train_V.json and metrics/eval_V.json (the committed run: examples/s
and users/s, as `bench/pipeline_profile.py` reads them) it gives each side's achieved product GFLOP/s, so "slower per example" splits into
more work per example and less speed per FLOP.
Writes `--out` (bench/results/flops_per_example.json).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from decode_options import test_split  # noqa: E402
from machine import machine  # noqa: E402
from pipeline_profile import per_example  # noqa: E402
from pipeline import precision  # noqa: E402
from pipeline.evaluate import load_recommender  # noqa: E402
from pipeline.examples import Examples, read_examples  # noqa: E402
from pipeline.params import load_params  # noqa: E402
from pipeline.seq2seq import recommend, seq2seq_loss  # noqa: E402
from pipeline.train import batch_order, trimmed  # noqa: E402

aten = torch.ops.aten


def _cpu_sdpa(query_shape, key_shape, value_shape, *args, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


# torch registers the GPU attention kernels only; the CPU one is what inference calls here.
CUSTOM = {aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa}


def counted(fn) -> int:
    """Matrix-product FLOPs of fn() (run for real, on one thread: the counter's mode is per thread)."""
    with FlopCounterMode(display=False, custom_mapping=CUSTOM) as counter:
        fn()
    return counter.get_total_flops()


def train_epoch_flops(model, train: Examples, cfg, dtype: str) -> int:
    model.train()
    batches = batch_order(train.lengths, cfg.batch_size, torch.Generator().manual_seed(cfg.seed))

    def epoch() -> None:
        for b in batches:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bfloat16"):
                loss = seq2seq_loss(model, trimmed(train.input_ids[b]), train.labels[b], cfg.first_code_weight)
            loss.backward()
            model.zero_grad(set_to_none=True)

    return counted(epoch)


def decode_flops(model, trie, ex: Examples, cfg) -> int:
    model.eval()
    return counted(lambda: recommend(model, trie, ex.input_ids, cfg.beam, cfg.top_k, cfg.eval_batch,
                                     cfg.decode_dtype, workers=1))


def bench_variant(variant: str, cfg, rates: dict | None) -> dict:
    seq = ROOT / "data" / "sequences" / variant
    model = load_recommender(ROOT / "models" / "recommender" / f"{variant}.pt")
    trie, test = test_split(variant)
    train, valid = read_examples(seq / "train.parquet"), read_examples(seq / "valid.parquet")
    # the train stage's validation sample (Trainer._valid_sample)
    keep = torch.randperm(len(valid.target), generator=torch.Generator().manual_seed(cfg.seed + 1))[:cfg.eval_users]
    keep = keep.sort().values
    valid = Examples(valid.input_ids[keep], valid.labels[keep], valid.target[keep.numpy()])
    dtype = precision.resolve(cfg.train_dtype, torch.device("cpu"))
    n_train = len(train.target)
    train_flops = train_epoch_flops(model, train, cfg, dtype)
    valid_flops = decode_flops(model, trie, valid, cfg)
    test_flops = decode_flops(model, trie, test, cfg)
    per_train = (train_flops + valid_flops) / n_train
    per_user = test_flops / len(test.target)
    out = {"train_examples": n_train, "valid_users_per_epoch": len(valid.target), "test_users": len(test.target),
           "mean_history_tokens": {"train": round(float(train.lengths.float().mean()), 1),
                                   "test": round(float(test.lengths.float().mean()), 1)},
           "mflop_per_train_example": round(per_train / 1e6, 1),
           "mflop_per_train_example_without_validation": round(train_flops / n_train / 1e6, 1),
           "mflop_per_test_user": round(per_user / 1e6, 1),
           "work_ratio_eval_over_train": round(per_user / per_train, 2),
           "committed_rates": rates}
    if rates:
        train_gflops = per_train * rates["train_examples_per_s"] / 1e9
        eval_gflops = per_user * rates["eval_users_per_s"] / 1e9
        out |= {"train_product_gflop_per_s": round(train_gflops, 1), "eval_product_gflop_per_s": round(eval_gflops, 1),
                "speed_ratio_eval_over_train": round(eval_gflops / train_gflops, 2)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variants", default="text,image,fused,lf,lfpp")
    ap.add_argument("--rates-from", type=Path, default=ROOT, help="the checkout whose metrics/ give the rates")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "flops_per_example.json")
    args = ap.parse_args()
    torch.set_num_threads(1)  # the counts do not depend on it; the counter sees one thread's ops
    cfg = load_params(ROOT / "params.yaml").recommender.train
    rates = per_example(args.rates_from)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    result = {"what": "matrix-product FLOPs per training example and per test user (bench/flops_per_example.py)",
              "date": dt.date.today().isoformat(), "commit": commit, "machine": machine(),
              "beam": cfg.beam, "batch_size": cfg.batch_size, "eval_users": cfg.eval_users,
              "rates_from": str(args.rates_from),
              "variants": {v: bench_variant(v, cfg, rates.get(v)) for v in args.variants.split(",")}}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
