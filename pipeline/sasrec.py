"""SASRec: the classic ID-based sequential recommender, the baseline next to the generative models.

One item embedding per item, a causal transformer over a user's last `max_len` items, and the
next item scored as hidden @ item_embedding.T (tied weights), over every item.

Model: item i is token i + 1 (0 = padding); a learned positional embedding indexed by distance
from the end of the window, since sequences are left-padded (right-aligned): the most recent item
always sits at the last position, in training and in evaluation alike. `blocks` pre-LN blocks of
causal self-attention and a point-wise feed-forward (hidden -> hidden, as in the SASRec paper),
then a final LayerNorm. A query attends to itself and to the earlier non-pad positions only.

Loss: full-softmax cross-entropy over all items at every position of the training sequence
whose input is an item, predicting the item after it. (The paper's binary cross-entropy with one
sampled negative stays near random on Amazon Beauty; the full softmax is the variant that works.)

Data (leave-one-out splits): training sequence = the user's `train` list, last max_len + 1 items,
input = seq[:-1], labels = seq[1:]. Validation: input = train (last max_len), target = valid.
Test, once at the end with the best-on-validation weights: input = train + [valid], target = test.

Ranking: scores over all items, top_k by torch.topk, then `evaluate_top`. Items already in the
user's history are NOT masked out: the generative models do not mask either, and in Amazon data
a repeat purchase can be the target, so the comparison stays like for like.

Early stopping on valid `select_on` after `patience` epochs without improvement (checked every
`eval_every` epochs and at the last one). A checkpoint after every epoch in
`work_dir/sasrec-<fingerprint>/last.pt` (fingerprint: params + splits file content + item count)
resumes a killed run to exactly the same weights, metrics and curves as an uninterrupted one.

Same data and params give the same metrics (CPU, same torch thread count).
"""
from __future__ import annotations

import hashlib
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from pipeline import optim
from pipeline.artifacts import write_json
from pipeline.checkpoint import load_checkpoint, load_model, rng_state, save_checkpoint, save_model, set_rng_state
from pipeline.errors import PipelineError
from pipeline.metrics import evaluate_top
from pipeline.params import SASRecParams
from pipeline.recall_curve import write_recall_curve
from pipeline.tracking import Tracker

EVAL_BATCH = 1024
CHECKPOINT_VERSION = 2  # part of the fingerprint: a change to what a checkpoint holds never resumes an old one (2: fused AdamW)


@dataclass
class SASRecConfig:
    n_items: int
    hidden: int = 64
    blocks: int = 2
    heads: int = 1
    dropout: float = 0.2
    max_len: int = 20


def model_config(n_items: int, cfg: SASRecParams) -> SASRecConfig:
    if cfg.hidden % cfg.heads:
        raise PipelineError(f"sasrec.heads: {cfg.heads} does not divide sasrec.hidden {cfg.hidden}")
    return SASRecConfig(n_items=n_items, hidden=cfg.hidden, blocks=cfg.blocks, heads=cfg.heads,
                        dropout=cfg.dropout, max_len=cfg.max_len)


# ---------------------------------------------------------------------------------------------
# Model


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: SASRecConfig):
        super().__init__()
        self.heads, self.dropout = cfg.heads, cfg.dropout
        self.qkv = nn.Linear(cfg.hidden, 3 * cfg.hidden)
        self.proj = nn.Linear(cfg.hidden, cfg.hidden)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in self.qkv(x).split(c, dim=2))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.drop(self.proj(y.transpose(1, 2).reshape(b, t, c)))


class FeedForward(nn.Module):
    def __init__(self, cfg: SASRecConfig):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(cfg.hidden, cfg.hidden), nn.GELU(), nn.Linear(cfg.hidden, cfg.hidden),
                                 nn.Dropout(cfg.dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Block(nn.Module):
    """Pre-LN: x + attn(ln(x)), then x + ffn(ln(x)); trains stably without warm-up."""

    def __init__(self, cfg: SASRecConfig):
        super().__init__()
        self.ln1, self.attn = nn.LayerNorm(cfg.hidden), CausalSelfAttention(cfg)
        self.ln2, self.ffn = nn.LayerNorm(cfg.hidden), FeedForward(cfg)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), allowed)
        return x + self.ffn(self.ln2(x))


class SASRec(nn.Module):
    def __init__(self, cfg: SASRecConfig):
        super().__init__()
        self.cfg = cfg
        self.item_emb = nn.Embedding(cfg.n_items + 1, cfg.hidden, padding_idx=0)
        self.pos_emb = nn.Embedding(cfg.max_len, cfg.hidden)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.blocks))
        self.ln_f = nn.LayerNorm(cfg.hidden)
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        # Small weights (nanoGPT's 0.02): the tied output starts near a uniform softmax.
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)
        if isinstance(m, nn.Embedding) and m.padding_idx is not None:
            with torch.no_grad():
                m.weight[m.padding_idx].zero_()

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        """Hidden states (B, T, hidden) of left-padded token sequences (B, T), T <= max_len."""
        _, t = seq.shape
        pos = torch.arange(self.cfg.max_len - t, self.cfg.max_len, device=seq.device)  # right-aligned
        x = self.drop(self.item_emb(seq) + self.pos_emb(pos))
        # A query sees earlier non-pad keys and always itself, so a pad query never has an empty row
        # (softmax over nothing is NaN); real queries never see pads. Broadcast over heads.
        causal = torch.ones(t, t, dtype=torch.bool, device=seq.device).tril()
        allowed = (causal & (seq != 0)[:, None, :]) | torch.eye(t, dtype=torch.bool, device=seq.device)
        allowed = allowed[:, None]
        for block in self.blocks:
            x = block(x, allowed)
        return self.ln_f(x)

    def scores(self, h: torch.Tensor) -> torch.Tensor:
        """(..., n_items) scores of item_idx 0..n_items-1: tied output, the pad row left out."""
        return h @ self.item_emb.weight[1:].T


def n_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------------------------------
# Data


@dataclass
class Splits:
    """Everything training and evaluation read, as tensors of tokens (item_idx + 1, 0 = pad)."""

    n_items: int
    train: torch.Tensor         # (n, max_len + 1) training sequences, users with >= 2 train items
    valid_input: torch.Tensor   # (U, max_len)
    valid_target: np.ndarray    # (U,) item_idx
    test_input: torch.Tensor    # (U, max_len)
    test_target: np.ndarray     # (U,) item_idx


SPLIT_COLUMNS = ("train", "valid", "test")


def _schema(path: Path, needed: tuple[str, ...]) -> None:
    if not path.is_file():
        raise PipelineError(f"{path}: file not found")
    try:
        names = pl.read_parquet_schema(path)
    except Exception:  # polars raises several kinds for a file that is not Parquet
        raise PipelineError(f"{path}: not a readable Parquet file") from None
    for col in needed:
        if col not in names:
            raise PipelineError(f"{path}: missing column {col!r}")


def left_pad(lists: pl.Series, width: int) -> torch.Tensor:
    """(n, width) int64: each list's last `width` values + 1, right-aligned, 0 before them.

    Vectorised over the flat values: a value's column is width - (distance from its list's end).
    """
    lens = lists.list.len().to_numpy().astype(np.int64)
    flat = lists.explode().drop_nulls().to_numpy().astype(np.int64)
    start = np.cumsum(lens) - lens
    from_end = np.repeat(start + lens, lens) - np.arange(len(flat))  # 1 for a list's last value
    keep = from_end <= width
    rows = np.repeat(np.arange(len(lens)), lens)[keep]
    out = np.zeros((len(lens), width), dtype=np.int64)
    out[rows, width - from_end[keep]] = flat[keep] + 1
    return torch.from_numpy(out)


def read_splits(splits_path: Path, items_path: Path, max_len: int) -> Splits:
    """The splits as padded tensors, checked: present columns, no nulls, item_idx within the items file."""
    _schema(items_path, ("item_idx",))
    _schema(splits_path, SPLIT_COLUMNS)
    n_items = pl.scan_parquet(items_path).select(pl.len()).collect().item()
    df = pl.read_parquet(splits_path, columns=list(SPLIT_COLUMNS))
    if df.height == 0 or n_items == 0:
        raise PipelineError(f"{splits_path if df.height == 0 else items_path}: no rows")
    for col in SPLIT_COLUMNS:
        s = df[col].explode() if col == "train" else df[col]
        empty = int((df[col].list.len() == 0).sum()) if col == "train" else 0  # explode gives them a null
        if df[col].null_count() or s.null_count() > empty:
            raise PipelineError(f"{splits_path}: column {col!r} has null values")
        lo, hi = s.min(), s.max()
        if lo is not None and (lo < 0 or hi >= n_items):
            raise PipelineError(f"{splits_path}: column {col!r} has item_idx outside 0..{n_items - 1} "
                                f"(the rows of {items_path})")
    train_full = left_pad(df["train"], max_len + 1)
    return Splits(
        n_items=n_items,
        train=train_full[(train_full != 0).sum(1) >= 2],  # one item alone gives no (input, next) pair
        valid_input=left_pad(df["train"], max_len),
        valid_target=df["valid"].to_numpy().astype(np.int64),
        test_input=left_pad(df.select(pl.concat_list("train", "valid"))["train"], max_len),
        test_target=df["test"].to_numpy().astype(np.int64),
    )


# ---------------------------------------------------------------------------------------------
# Training and evaluation


def make_optimizer(model: SASRec, cfg: SASRecParams) -> torch.optim.Optimizer:
    # Decay matrices and embeddings only: decaying LayerNorm gains and biases only hurts (nanoGPT).
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    return optim.adamw([{"params": decay, "weight_decay": cfg.weight_decay},
                        {"params": rest, "weight_decay": 0.0}], cfg.lr)


def train_epoch(model: SASRec, opt: torch.optim.Optimizer, train: torch.Tensor, batch_size: int,
                gen: torch.Generator) -> float:
    """One pass over shuffled users; mean cross-entropy per predicted position."""
    model.train()
    total, count = 0.0, 0
    for idx in torch.randperm(len(train), generator=gen).split(batch_size):
        seq = train[idx]
        width = int((seq != 0).sum(1).max())
        seq = seq[:, -width:]  # drop columns that are pad in every row: same result, less work
        inp, labels = seq[:, :-1], seq[:, 1:]
        mask = inp != 0  # left padding: where the input is an item, the label is one too
        h = model(inp)[mask]
        loss = F.cross_entropy(model.scores(h), labels[mask] - 1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += loss.item() * len(h)
        count += len(h)
    return total / max(count, 1)


@torch.no_grad()
def rank(model: SASRec, inputs: torch.Tensor, top_k: int) -> np.ndarray:
    """(U, top_k) item_idx by descending score after each user's last input item."""
    model.eval()
    k = min(top_k, model.cfg.n_items)
    tops = [model.scores(model(x)[:, -1]).topk(k, dim=1).indices for x in inputs.split(EVAL_BATCH)]
    return torch.cat(tops).numpy()


def evaluate(model: SASRec, inputs: torch.Tensor, target: np.ndarray, top_k: int) -> dict[str, float]:
    return evaluate_top(rank(model, inputs, top_k), target)


def _r(v: float) -> float:
    """6 significant digits: the metrics file stays the same when the last float bits wobble."""
    return v if isinstance(v, int) else float(f"{v:.6g}")


def fingerprint(cfg: SASRecParams, splits_path: Path, n_items: int) -> str:
    """Short hash of everything a checkpoint depends on: a changed input or param never resumes it."""
    h = hashlib.sha256()
    h.update(f"v{CHECKPOINT_VERSION} items={n_items} ".encode())
    h.update(cfg.model_dump_json().encode())
    with open(splits_path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


@dataclass
class TrainResult:
    model: SASRec              # holding the best-on-validation weights
    valid: dict[str, float]    # at the best epoch
    best_epoch: int
    epochs: int                # epochs trained in all (across resumes)
    seconds: float             # training wall time, across resumes
    history: list[dict[str, Any]]


def train_sasrec(data: Splits, cfg: SASRecParams, checkpoint: Path | None = None, live_dir: Path | None = None,
                 progress: bool = False, stop_after: int | None = None) -> TrainResult | None:
    """Train with early stopping on valid `select_on`; resume from `checkpoint` when it exists.

    `stop_after`: return None after that many epochs of this call, as a kill would (for tests).
    """
    with torch.random.fork_rng(devices=[]):  # seeded init and dropout, the caller's global RNG untouched
        torch.manual_seed(cfg.seed)
        model = SASRec(model_config(data.n_items, cfg))
        opt = make_optimizer(model, cfg)
        gen = torch.Generator().manual_seed(cfg.seed)  # batch order
        state: dict[str, Any] = {"epoch": 0, "best_score": -math.inf, "best_epoch": 0, "best_state": None,
                                 "best_valid": {}, "since_best": 0, "done": False, "seconds": 0.0, "history": []}
        ckpt = load_checkpoint(checkpoint) if checkpoint is not None else None
        if ckpt is not None:
            model.load_state_dict(ckpt.pop("model"))
            opt.load_state_dict(ckpt.pop("optimizer"))
            set_rng_state(ckpt.pop("rng"), {"shuffle": gen})
            state.update(ckpt)
        tracker = Tracker(live_dir, state["history"])
        try:
            done = _fit(model, opt, gen, data, cfg, state, tracker, checkpoint, progress, stop_after)
        finally:
            tracker.close()
        if not done:
            return None
    model.load_state_dict(state["best_state"])
    model.eval()
    return TrainResult(model=model, valid=state["best_valid"], best_epoch=state["best_epoch"],
                       epochs=state["epoch"], seconds=state["seconds"], history=tracker.history)


def _fit(model: SASRec, opt: torch.optim.Optimizer, gen: torch.Generator, data: Splits, cfg: SASRecParams,
         state: dict[str, Any], tracker: Tracker, checkpoint: Path | None, progress: bool,
         stop_after: int | None) -> bool:
    """The epoch loop, from `state["epoch"]` on; updates `state`; False when stopped by `stop_after`."""
    bar = tqdm(total=cfg.epochs, initial=state["epoch"], desc="sasrec", unit="epoch", disable=not progress,
               file=sys.stderr)
    ran = 0
    while not state["done"]:
        if stop_after is not None and ran >= stop_after:
            bar.close()
            return False
        t0 = time.perf_counter()
        epoch = state["epoch"] + 1
        loss = train_epoch(model, opt, data.train, cfg.batch_size, gen)
        if not math.isfinite(loss):
            raise PipelineError(f"sasrec: training diverged at epoch {epoch} (loss {loss}); try a lower sasrec.lr")
        logged: dict[str, float] = {"train/loss": loss}
        if epoch % cfg.eval_every == 0 or epoch == cfg.epochs:
            valid = evaluate(model, data.valid_input, data.valid_target, cfg.top_k)
            logged |= {f"valid/{k}": v for k, v in valid.items() if k != "mrr_depth"}
            if valid[cfg.select_on] > state["best_score"]:
                state.update(best_score=valid[cfg.select_on], best_epoch=epoch, best_valid=valid,
                             best_state={k: v.clone() for k, v in model.state_dict().items()})
            state["since_best"] = epoch - state["best_epoch"]
            bar.set_postfix({"loss": f"{loss:.4f}", cfg.select_on: f"{valid[cfg.select_on]:.4f}",
                             "best": state["best_epoch"]}, refresh=False)
        tracker.log(epoch, **logged)
        state.update(epoch=epoch, done=epoch >= cfg.epochs or state["since_best"] >= cfg.patience,
                     seconds=state["seconds"] + time.perf_counter() - t0, history=tracker.history)
        if checkpoint is not None:
            save_checkpoint({**state, "model": model.state_dict(), "optimizer": opt.state_dict(),
                             "rng": rng_state({"shuffle": gen})}, checkpoint)
        bar.update(1)
        ran += 1
    bar.close()
    return True


# ---------------------------------------------------------------------------------------------
# The stage


def save_sasrec(model: SASRec, cfg: SASRecParams, dest: Path) -> None:
    save_model(asdict(model.cfg), model.state_dict(), dest, params=cfg.model_dump())


def load_sasrec(path: str | Path) -> SASRec:
    """The model of a file written by `run_sasrec`, in eval mode (plain tensors: weights_only)."""
    return load_model(path, lambda config: SASRec(SASRecConfig(**config)),
                      "SASRec checkpoint not found (run `mgr sasrec` first)")


def run_sasrec(splits_path: Path, items_path: Path, cfg: SASRecParams, model_out: Path, metrics_out: Path,
               live_dir: Path | None, work_dir: Path, progress: bool = True,
               stop_after: int | None = None, curve_out: Path | None = None) -> dict | None:
    """Train (or resume), test once with the best weights, write model, metrics JSON and curves.

    Returns the metrics dict; None when `stop_after` stopped training first (nothing written).
    """
    splits_path, items_path = Path(splits_path), Path(items_path)
    data = read_splits(splits_path, items_path, cfg.max_len)
    checkpoint = Path(work_dir) / f"sasrec-{fingerprint(cfg, splits_path, data.n_items)}" / "last.pt"
    result = train_sasrec(data, cfg, checkpoint, live_dir, progress, stop_after)
    if result is None:
        return None
    top = rank(result.model, data.test_input, cfg.top_k)
    test = evaluate_top(top, data.test_target)
    if curve_out is not None:
        write_recall_curve(top, data.test_target, curve_out)
    metrics = {
        "valid": {k: _r(v) for k, v in result.valid.items()},
        "test": {k: _r(v) for k, v in test.items()},
        "train": {"epochs": result.epochs, "best_epoch": result.best_epoch, "seconds": round(result.seconds, 1),
                  "parameters": n_parameters(result.model)},
    }
    save_sasrec(result.model, cfg, Path(model_out))
    write_json(metrics, metrics_out)
    print(f"sasrec: {len(data.test_target)} users, {data.n_items} items, best epoch {result.best_epoch}/"
          f"{result.epochs} in {result.seconds:.1f} s; valid {cfg.select_on} {result.valid[cfg.select_on]:.4f}, "
          f"test recall@10 {test['recall@10']:.4f} ndcg@10 {test['ndcg@10']:.4f} -> {metrics_out}", file=sys.stderr)
    return metrics
