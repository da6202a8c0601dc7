"""Where trained recommenders differ: teacher-forced cross-entropy per ID position, train against validation.

    python bench/position_loss.py --seq-dir WORK/sequences/text --model small=WORK/text.pt --model big=OTHER/text.pt
                                  [--examples 20000] [--out bench/results/position_loss.json]

Two recommenders can end with the same training loss and rank items very differently: the loss
averages the ID's positions, and the first code, which picks the item's neighbourhood, weighs as
much as the dedup token, which the prefix nearly fixes. Per model (`mgr train` output files on
the same sequences) this reports the mean cross-entropy (nats) at each label position over a
seeded sample of `--examples` training prefixes and over the validation users, in float32 and
eval mode (no dropout), so the train column is what the model fits and the gap to validation
is what it does not carry over; and, as a floor, each position's training token frequencies
(`unigram`: popularity alone). Validation only: never the test split.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from machine import machine  # noqa: E402

from pipeline.evaluate import load_recommender  # noqa: E402
from pipeline.examples import read_examples  # noqa: E402
from pipeline.seq2seq import position_losses  # noqa: E402
from pipeline.train import trimmed  # noqa: E402


@torch.inference_mode()
def position_loss(model, input_ids: torch.Tensor, labels: torch.Tensor, batch: int = 512) -> list[float]:
    """Mean cross-entropy at each label position over all rows."""
    total = torch.zeros(labels.shape[1], dtype=torch.float64)
    for s in range(0, len(labels), batch):
        total += position_losses(model, trimmed(input_ids[s:s + batch]), labels[s:s + batch]).double().sum(0)
    return [round(v, 4) for v in (total / len(labels)).tolist()]


def unigram_loss(train_labels: torch.Tensor, labels: torch.Tensor) -> list[float]:
    """Per position, the cross-entropy of the training targets' token frequencies (add-one): what
    an ID's popularity alone gives, the floor a model's first code has to beat."""
    out = []
    for pos in range(labels.shape[1]):
        seen = torch.cat([train_labels[:, pos], labels[:, pos]])
        lo = int(seen.min())  # smoothed over the tokens seen at this position, not the whole vocabulary
        counts = torch.bincount(train_labels[:, pos] - lo, minlength=int(seen.max()) - lo + 1).double() + 1.0
        out.append(round(float(-(counts / counts.sum()).log()[labels[:, pos] - lo].mean()), 4))
    return out


def named_path(spec: str) -> tuple[str, Path]:
    name, sep, path = spec.partition("=")
    if not (sep and name and path):
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {spec!r}")
    return name, Path(path)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seq-dir", type=Path, required=True)
    ap.add_argument("--model", action="append", required=True, type=named_path, help="NAME=PATH, once per model")
    ap.add_argument("--examples", type=int, default=20000, help="training prefixes (a seeded sample)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "position_loss.json")
    args = ap.parse_args()
    train = read_examples(args.seq_dir / "train.parquet")
    valid = read_examples(args.seq_dir / "valid.parquet")
    n = min(args.examples, len(train.labels))
    rows = torch.randperm(len(train.labels), generator=torch.Generator().manual_seed(0))[:n]
    models = {"unigram": {"train": unigram_loss(train.labels, train.labels[rows]),
                          "valid": unigram_loss(train.labels, valid.labels)}}
    for name, path in args.model:
        model = load_recommender(path)
        per_split = {"train": position_loss(model, train.input_ids[rows], train.labels[rows]),
                     "valid": position_loss(model, valid.input_ids, valid.labels)}
        models[name] = {"path": str(path), "parameters": sum(p.numel() for p in model.parameters()),
                        **per_split, "mean": {k: round(sum(v) / len(v), 4) for k, v in per_split.items()}}
        print(name, json.dumps(models[name]), file=sys.stderr)
    result = {"what": "teacher-forced cross-entropy per ID position, train prefixes against validation users "
                      "(bench/position_loss.py)",
              "date": dt.date.today().isoformat(), "machine": machine(), "seq_dir": str(args.seq_dir),
              "train_examples": n, "valid_users": len(valid.labels), "models": models}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
