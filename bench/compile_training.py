"""Recommender training with and without `torch.compile`, on the CPU: is it worth compiling?

    python bench/compile_training.py [--variant lfpp] [--steps 40] [--runs 5] [--warmup 20]
                                     [--static] [--warm-cache] [--out bench/results/compile_training_<variant>.json]

Two copies of the variant's model, built from params.yaml (recommender.model, train.seed) and
trained as `mgr train` trains (its loss module in train_dtype as this machine resolves it, fused
AdamW at train.lr, gradient clipping, dropout), one eager and one through `torch.compile` (inductor;
`dynamic=True` unless `--static`: batches are bucketed by length, so their shapes vary). Both
first train `--warmup` batches, which for the compiled one includes compiling (the seconds are
recorded; inductor's on-disk cache is a fresh temporary folder, so this is a first run's compile,
unless `--warm-cache` keeps torch's default folder, where a later process finds earlier graphs).
Then they take turns, `--runs` rounds of `--steps` batches each on the same batches
(data/sequences/<variant>/train.parquet in `batch_order`, run `dvc repro` first). examples/s is
the median per side; the speed-up is the median of the rounds' paired ratios (compiled / eager).

Inductor draws dropout's masks with its own generator, so the two sides' losses are not the
same numbers; the last round's mean loss of each is recorded to show both still learn alike.
"""
from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from decode_revisions import recommender_params  # noqa: E402
from machine import machine  # noqa: E402
from train_revisions import train_steps  # noqa: E402


def trainer(variant: str, compiled: bool, dynamic: bool):
    """A function that trains the next `n` batches of its own copy of the model: (examples, losses)."""
    import torch

    from pipeline import precision
    from pipeline.layout import Layout
    from pipeline.optim import adamw, clip_grad_norm
    from pipeline.seq2seq import build_for_layout
    from pipeline.train import Objective, batch_order, read_examples

    rec = recommender_params()
    seq = ROOT / "data" / "sequences" / variant
    ex = read_examples(seq / "train.parquet")
    torch.manual_seed(rec.train.seed)
    model = build_for_layout(rec.model, Layout.load(seq / "layout.json"), rec.train.seed).train()
    objective = Objective(model, None, precision.resolve(rec.train.train_dtype, torch.device("cpu")))
    loss_fn = torch.compile(objective, dynamic=dynamic) if compiled else objective
    opt = adamw(model.parameters(), rec.train.lr, rec.train.weight_decay)
    batches = itertools.cycle(batch_order(ex.lengths, rec.train.batch_size, torch.Generator().manual_seed(rec.train.seed)))

    def train(n: int) -> tuple[int, list[float]]:
        return train_steps(loss_fn, model, opt, clip_grad_norm, rec.train.grad_clip, ex, batches, n)

    return train, objective.dtype


def timed(train, n: int) -> tuple[float, int, list[float]]:
    t0 = time.perf_counter()
    examples, losses = train(n)
    return time.perf_counter() - t0, examples, losses


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variant", default="lfpp")
    ap.add_argument("--steps", type=int, default=40, help="training batches per round")
    ap.add_argument("--runs", type=int, default=5, help="paired rounds after the warm-up")
    ap.add_argument("--warmup", type=int, default=20, help="batches before the rounds (the compiling)")
    ap.add_argument("--static", action="store_true", help="torch.compile(dynamic=False): a graph per shape")
    ap.add_argument("--warm-cache", action="store_true", help="keep inductor's default on-disk cache folder")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if not args.warm_cache:  # read when torch compiles, so setting it before the first compile suffices
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="inductor_")
    out = args.out or ROOT / "bench" / "results" / f"compile_training_{args.variant}.json"
    sides = {"eager": trainer(args.variant, False, False), "compiled": trainer(args.variant, True, not args.static)}
    warmup = {name: round(timed(train, args.warmup)[0], 1) for name, (train, _) in sides.items()}
    speed: dict[str, list[float]] = {name: [] for name in sides}
    last_loss: dict[str, float] = {}
    for r in range(args.runs):
        for name in (sides if r % 2 == 0 else reversed(list(sides))):
            seconds, examples, losses = timed(sides[name][0], args.steps)
            speed[name].append(examples / seconds)
            last_loss[name] = statistics.mean(losses)
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.0f} examples/s" for k, v in speed.items()), flush=True)
    ratios = [c / e for c, e in zip(speed["compiled"], speed["eager"])]
    result = {
        "what": "recommender training examples/s, eager against torch.compile (bench/compile_training.py)",
        "date": dt.date.today().isoformat(), "machine": machine(), "variant": args.variant,
        "train_dtype": sides["eager"][1], "dynamic": not args.static, "steps_per_round": args.steps,
        "runs": args.runs, "warmup_batches": args.warmup, "warmup_seconds": warmup,
        "inductor_cache": "warm (torch's default folder)" if args.warm_cache else "cold (a fresh folder)",
        "examples_per_s": {k: round(statistics.median(v), 1) for k, v in speed.items()},
        "examples_per_s_rounds": {k: [round(x, 1) for x in v] for k, v in speed.items()},
        "speedup_median": round(statistics.median(ratios), 3),
        "speedup_rounds": [round(x, 3) for x in ratios],
        "last_round_mean_loss": {k: round(v, 4) for k, v in last_loss.items()},
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))


if __name__ == "__main__":
    main()
