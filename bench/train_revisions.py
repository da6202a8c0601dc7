"""Recommender training speed of two revisions of the code, trained in turn on the same batches.

    python bench/train_revisions.py --before REV [--variant lfpp] [--steps 40] [--runs 7] [--out PATH]
                                    [--set recommender.model.dropout=0 ...]

For a change to the training code (dropout, attention, the loss), where a ratio between two
separate runs would mostly measure the machine's drift. As `bench/decode_revisions.py`: one worker
process imports `pipeline` from `git archive REV pipeline`, another from this checkout's working
tree, and they take turns (the first alternates by round), `--runs` rounds after a warm-up round.
Each builds the variant's model from params.yaml (recommender.model, train.seed; `--set` overrides
keys of that section on both sides) and trains it as `mgr train` does at its revision (its
optimizer step at train.lr, weight_decay and grad_clip, its dropout, in train_dtype as this
machine resolves it: bfloat16 autocast where `auto` says so), `--steps`
batches of data/sequences/<variant>/train.parquet per round, in the order `batch_order` gives for
train.seed, from the same global seed. examples/s is the median, the speed-up the median of the
rounds' paired ratios. Both sides see the same batches and dropout draws, so equal per-step losses
show that a change left training's arithmetic as it was.
"""
from __future__ import annotations

import datetime as dt
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from decode_revisions import foreign_modules, paired_rounds, paired_summary, process_at_end, process_facts  # noqa: E402
from decode_revisions import recommender_params, revision_parser, short_rev  # noqa: E402
from machine import machine  # noqa: E402
from real_beauty import parse_sets  # noqa: E402


def train_steps(loss_fn, model, opt, clip_grad_norm, grad_clip: float, ex, batches, steps: int) -> tuple[int, list[float]]:
    """`steps` optimizer steps on the next batches, as `mgr train` takes them: (examples, losses)."""
    examples, losses = 0, []
    for _, b in zip(range(steps), batches):
        loss = loss_fn("train", ex.input_ids[b], ex.labels[b])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip:
            clip_grad_norm(model.parameters(), grad_clip)
        opt.step()
        losses.append(float(loss.detach()))
        examples += len(b)
    return examples, losses


def worker(code: Path, variant: str, steps: int, overrides: dict) -> None:
    """Train `steps` batches once per line read from stdin; answer examples/s and the losses."""
    sys.path.insert(0, str(code))
    import torch

    from pipeline import precision
    from pipeline.layout import Layout
    from pipeline.seq2seq import build_for_layout
    # read_examples from pipeline.train works at every revision (it re-exports pipeline/examples.py's)
    from pipeline.train import Objective, batch_order, read_examples
    if (code / "pipeline" / "optim.py").exists():  # the optimizer step as `mgr train` takes it at this revision
        from pipeline.optim import adamw, clip_grad_norm
    else:  # before pipeline/optim.py (2026-12-06): torch's per-parameter loops
        def adamw(params, lr, weight_decay):
            return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
        clip_grad_norm = torch.nn.utils.clip_grad_norm_
    if foreign_modules(code):
        sys.exit(f"{code}: pipeline modules loaded from elsewhere: {foreign_modules(code)}")

    rec = recommender_params(overrides)
    seq = ROOT / "data" / "sequences" / variant
    ex = read_examples(seq / "train.parquet")
    torch.manual_seed(rec.train.seed)
    model = build_for_layout(rec.model, Layout.load(seq / "layout.json"), rec.train.seed).train()
    objective = Objective(model, None, precision.resolve(rec.train.train_dtype, torch.device("cpu")))
    opt = adamw(model.parameters(), rec.train.lr, rec.train.weight_decay)
    # the same epoch over again past its end, so that rounds x steps may exceed one epoch
    batches = itertools.cycle(batch_order(ex.lengths, rec.train.batch_size, torch.Generator().manual_seed(rec.train.seed)))
    for _ in sys.stdin:
        t0 = time.perf_counter()
        n, losses = train_steps(objective, model, opt, clip_grad_norm, rec.train.grad_clip, ex, batches, steps)
        print(json.dumps({"examples_per_s": n / (time.perf_counter() - t0), "losses": losses, "train_dtype": objective.dtype,
                          "machine": machine(), **process_facts()}), flush=True)


def main() -> None:
    ap = revision_parser("train_revisions.json", runs=7)
    ap.add_argument("--steps", type=int, default=40, help="training batches per round")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="recommender.* overrides, both sides")
    args = ap.parse_args()
    overrides = parse_sets(args.set)
    if args.worker:
        return worker(args.worker, args.variant, args.steps, overrides)
    if not args.before:
        ap.error("--before REV is required")
    rev = short_rev(args.before)
    with tempfile.TemporaryDirectory() as tmp:
        answers = paired_rounds(__file__, rev, args.runs, ["--variant", args.variant, "--steps", str(args.steps),
                                                           *(["--set", *args.set] if args.set else [])], Path(tmp))
    losses = {k: [x for a in v for x in a["losses"]] for k, v in answers.items()}
    result = {
        "what": "recommender training examples/s of two code revisions, trained in turn (bench/train_revisions.py)",
        "date": dt.date.today().isoformat(), "machine": answers["after"][-1]["machine"], "variant": args.variant,
        "steps_per_round": args.steps, "runs": args.runs, "overrides": overrides, "train_dtype": answers["after"][-1]["train_dtype"],
        "revisions": {"before": rev, "after": "working tree of " + short_rev("HEAD")},
        "same_losses": losses["before"] == losses["after"],
        "max_abs_loss_diff": max(abs(a - b) for a, b in zip(losses["before"], losses["after"])),
        "last_loss": {k: v[-1] for k, v in losses.items()},
        **paired_summary(answers, "examples_per_s"),
        "process_at_end": process_at_end(answers),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))


if __name__ == "__main__":
    main()
