"""Generative recommender speed on the embedded default: training and constrained beam search.

    python bench/recommender_speed.py [--runs 3] [--variants text,lfpp] [--steps 40] [--users 512]

Per variant (sequences from `dvc repro`, model sizes from params.yaml, fresh seeded weights:
speed does not depend on what the weights learned):
- training: optimizer steps over real length-bucketed batches, as the train stage runs them;
  tokens/s (encoder + decoder tokens) and achieved FLOP/s, from torch's FlopCounterMode on one
  step, as a fraction of the matmul peak measured in the same run (a 2048^2 fp32 matmul);
- the same with torch's own dropout (`F.dropout`, and SDPA's for the attention weights) instead
  of pipeline/dropout.py's, for the before/after ratio;
- beam search: users/s at the params' beam and top_k over `--users` validation users, with the
  one-token cached decoder and with the plain full forward pass per step (the reference), both
  on batches of users sorted by history length (as `seq2seq.recommend` decodes), and the
  decoder's FLOP/s (FlopCounterMode on one batch) as a fraction of the matmul peak.
Median of `--runs` runs each. Writes bench/results/recommender_speed.json.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import time
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from machine import machine  # noqa: E402

from pipeline.beam import ItemTrie, constrained_beam_search  # noqa: E402
from pipeline.examples import read_examples, read_items  # noqa: E402
from pipeline.layout import PAD, Layout  # noqa: E402
from pipeline.params import load_params  # noqa: E402
from pipeline import dropout, t5  # noqa: E402
from pipeline.seq2seq import build_for_layout, output_offset, seq2seq_loss, step_function  # noqa: E402
from pipeline.train import batch_order, trimmed  # noqa: E402


def matmul_peak(runs: int, n: int = 2048) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    rates = []
    for _ in range(runs):
        t0 = time.perf_counter()
        for _ in range(10):
            a @ b
        rates.append(10 * 2 * n ** 3 / (time.perf_counter() - t0))
    return statistics.median(rates)


@contextmanager
def torch_dropout():
    """The model's dropout as torch's own: `F.dropout`, and SDPA's dropout on the attention weights."""
    ours, attend = dropout.dropout, t5.attend
    dropout.dropout = lambda x, p, training: torch.nn.functional.dropout(x, p, training)
    t5.attend = lambda q, k, v, bias, p, training: torch.nn.functional.scaled_dot_product_attention(
        q, k, v, bias.to(q.dtype), dropout_p=p if training else 0.0, scale=1.0)
    try:
        yield
    finally:
        dropout.dropout, t5.attend = ours, attend


def train_speed(model, ex, batch_size: int, steps: int, runs: int) -> dict:
    batches = batch_order(ex.lengths, batch_size, torch.Generator().manual_seed(0))[: steps + 1]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()

    def step(b):
        loss = seq2seq_loss(model, trimmed(ex.input_ids[b]), ex.labels[b])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    with FlopCounterMode(display=False) as counter:
        step(batches[0])
    flops_per_token = counter.get_total_flops() / _tokens(ex, batches[0])
    rates = []
    for _ in range(runs):
        t0 = time.perf_counter()
        tokens = 0
        for b in batches[1:]:
            step(b)
            tokens += _tokens(ex, b)
        rates.append(tokens / (time.perf_counter() - t0))
    tps = statistics.median(rates)
    return {"tokens_per_s": round(tps), "runs": [round(r) for r in rates],
            "flop_per_s": tps * flops_per_token}


def _tokens(ex, b) -> int:
    return int(trimmed(ex.input_ids[b]).numel() + ex.labels[b].numel())


def full_forward_step(model, input_ids, beam):
    """Reference step: the whole decoder over the whole prefix, every beam its own encoder copy."""
    input_ids = input_ids.repeat_interleave(beam, 0)
    enc, mask = model.encode(input_ids), model.padding_mask(input_ids)

    def step(prefix, parent, last=1):
        dec = torch.cat([torch.full((len(prefix), 1), PAD), prefix.long()], 1)
        logits = model.head(model.decoder(model.shared(dec), memory=enc, memory_mask=mask))
        return logits[:, -last:] if last > 1 else logits[:, -1]
    return step


@torch.inference_mode()
def beam_speed(model, trie, ids, beam, k, batch, runs, make_step, peak: float, sort: bool = True) -> dict:
    model.eval()
    if sort:  # longest first, as recommend() decodes
        ids = ids[(ids != PAD).sum(1).argsort(descending=True, stable=True)]

    def decode(users):
        for s in range(0, len(users), batch):
            b = users[s:s + batch]
            b = b[:, : int((b != PAD).sum(1).max())]
            constrained_beam_search(make_step(model, b, beam), trie, len(b), beam, k, output_offset(model))

    with FlopCounterMode(display=False) as counter:
        decode(ids)
    flops_per_user = counter.get_total_flops() / len(ids)
    rates = []
    for _ in range(runs):
        t0 = time.perf_counter()
        decode(ids)
        rates.append(len(ids) / (time.perf_counter() - t0))
    users_per_s = statistics.median(rates)
    return {"users_per_s": round(users_per_s, 1), "runs": [round(r, 1) for r in rates],
            "mflop_per_user": round(flops_per_user / 1e6, 1),
            "fraction_of_matmul_peak": round(users_per_s * flops_per_user / peak, 3)}


def bench_variant(name: str, params, args, peak: float) -> dict:
    seq_dir = ROOT / "data" / "sequences" / name
    layout = Layout.load(seq_dir / "layout.json")
    rec = params.recommender
    model = build_for_layout(rec.model, layout, rec.train.seed)
    ex = read_examples(seq_dir / "train.parquet")
    out = {"item_len": layout.item_len, "vocab": layout.vocab_size}
    ours = train_speed(model, ex, rec.train.batch_size, args.steps, args.runs)
    with torch_dropout():
        theirs = train_speed(model, ex, rec.train.batch_size, args.steps, args.runs)
    for key, r in (("train", ours), ("train_torch_dropout", theirs)):
        r["fraction_of_matmul_peak"] = round(r.pop("flop_per_s") / peak, 3)
        out[key] = r
    out["train_speedup"] = round(ours["tokens_per_s"] / theirs["tokens_per_s"], 2)
    item_idx, tokens = read_items(seq_dir)
    trie = ItemTrie(tokens, item_idx)
    ids = read_examples(seq_dir / "valid.parquet").input_ids[: args.users]
    cfg = rec.train
    speed = partial(beam_speed, trie=trie, beam=cfg.beam, k=cfg.top_k, runs=args.runs, peak=peak)
    out["beam"] = speed(model, ids=ids, batch=cfg.eval_batch, make_step=step_function)
    # Before/after: users in file order (no length sorting); the output layer over item tokens only.
    out["beam_unsorted"] = speed(model, ids=ids, batch=cfg.eval_batch, make_step=step_function, sort=False)
    other = rec.model.model_copy(update={"item_output": not rec.model.item_output})
    other_head = build_for_layout(other, layout, rec.train.seed)
    out[f"beam_item_output_{other.item_output}"] = speed(other_head, ids=ids, batch=cfg.eval_batch,
                                                         make_step=step_function)
    ref_ids = ids[: max(args.users // 8, 32)]  # the reference is slow: fewer users
    out["beam_full_forward"] = speed(model, ids=ref_ids, batch=32, make_step=full_forward_step)
    out["beam_speedup"] = round(out["beam"]["users_per_s"] / out["beam_full_forward"]["users_per_s"], 2)
    for before in ("beam_unsorted", f"beam_item_output_{other.item_output}"):
        out[f"beam_speedup_over_{before[5:]}"] = round(out["beam"]["users_per_s"] / out[before]["users_per_s"], 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--variants", default="text,lfpp")
    ap.add_argument("--steps", type=int, default=40, help="training steps per timed run")
    ap.add_argument("--users", type=int, default=512, help="validation users per beam-search run")
    args = ap.parse_args()
    params = load_params(ROOT / "params.yaml")
    peak = matmul_peak(args.runs)
    result = {
        "what": "recommender training and constrained beam search on the embedded default (bench/recommender_speed.py)",
        "date": dt.date.today().isoformat(),
        "machine": machine(),
        "runs": args.runs, "matmul_peak_gflop_per_s": round(peak / 1e9, 1),
        "model": params.recommender.model.model_dump(),
        "batch_size": params.recommender.train.batch_size, "beam": params.recommender.train.beam,
        "variants": {v: bench_variant(v, params, args, peak) for v in args.variants.split(",")},
    }
    out = ROOT / "bench" / "results" / "recommender_speed.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
