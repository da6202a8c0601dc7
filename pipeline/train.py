"""Training the generative recommender: optional modality alignment, then next-item prediction.

Phases (method.md sections 5 and 6):
- `align` (MGR-LF++, when `align.epochs` > 0): over all items, translate the text ID into the
  image ID and back, optionally plus in-batch InfoNCE between the pooled encoder states of the
  two IDs of an item. It teaches the decoder which image codes go with which text codes, the
  step late fusion alone cannot learn from next-item data.
- `train`: every training prefix predicts the next item; validation Recall/NDCG@10 through
  constrained beam search selects the best epoch and stops early.

Batches are bucketed by length (shuffle, sort within windows of 50 batches, shuffle the
batches), so little of the encoder's work goes to padding. The loop checkpoints every
`checkpoint_every` steps and after every evaluation into `work_dir`: a killed run picks up
from the last checkpoint and ends with the same weights and curves as an uninterrupted run,
because the checkpoint holds the RNG states and the epoch's batch order is re-drawn from the
generator state saved at the epoch's start. Under torchrun the same loop runs data-parallel
(pipeline/distributed.py), on the device that `distributed.device()` names (MGR_DEVICE).
The data stay on the CPU; each batch moves to the device as it is used.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from pipeline import distributed, optim, precision
from pipeline.beam import ItemTrie
from pipeline.checkpoint import load_checkpoint, rng_state, save_checkpoint, save_model, set_rng_state
from pipeline.examples import Examples, read_examples, read_items
from pipeline.layout import PAD, Layout
from pipeline.metrics import evaluate_top
from pipeline.params import AlignParams, RecommenderParams, TrainParams, VariantParams
from pipeline.seq2seq import build_for_layout, info_nce, pooled, recommend, seq2seq_loss
from pipeline.tracking import Tracker

CHECKPOINT_VERSION = 4  # 2: the output layer follows tie_embeddings and item_output; 3: fused AdamW; 4: pipeline/t5.py
WINDOW = 50  # batches per length-sorting window


def batch_order(lengths: torch.Tensor, batch_size: int, gen: torch.Generator) -> list[torch.Tensor]:
    """Shuffled batches of similar length: sorted within windows, then the batches shuffled."""
    perm = torch.randperm(len(lengths), generator=gen)
    batches = []
    window = batch_size * WINDOW
    for start in range(0, len(perm), window):
        chunk = perm[start:start + window]
        chunk = chunk[torch.argsort(lengths[chunk], stable=True)]
        batches.extend(chunk.split(batch_size))
    order = torch.randperm(len(batches), generator=gen)
    return [batches[i] for i in order.tolist()]


def trimmed(ids: torch.Tensor) -> torch.Tensor:
    return ids[:, : max(int((ids != PAD).sum(1).max()), 1)]


def lr_factor(cfg: TrainParams, total_steps: int) -> Callable[[int], float]:
    warm = max(cfg.warmup_steps, 1)

    def factor(step: int) -> float:
        step = step + 1
        if cfg.schedule == "constant":
            return min(1.0, step / warm)
        if cfg.schedule == "inverse_sqrt":
            return min(step / warm, math.sqrt(warm / step))
        progress = min(max(step - warm, 0) / max(total_steps - warm, 1), 1.0)
        return min(1.0, step / warm) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


# --- alignment ---------------------------------------------------------------------------------

def alignment_pairs(layout: Layout, tokens: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Each item's token spans of its first and second modality (dedup and transition excluded)."""
    a, b = (layout.spans[m] for m in layout.modalities[:2])
    return torch.from_numpy(tokens[:, a[0]:a[1]]).long(), torch.from_numpy(tokens[:, b[0]:b[1]]).long()


def alignment_loss(model, first: torch.Tensor, second: torch.Tensor, cfg: AlignParams) -> torch.Tensor:
    """Translate first -> second (and back), plus the optional contrastive term."""
    loss = seq2seq_loss(model, first, second)
    if cfg.both_directions:
        loss = loss + seq2seq_loss(model, second, first)
    if cfg.contrastive_weight > 0:
        za = pooled(model.encode(first), first)
        zb = pooled(model.encode(second), second)
        loss = loss + cfg.contrastive_weight * info_nce(za, zb, cfg.temperature)
    return loss


class Objective(torch.nn.Module):
    """Both phases' losses as one module, so that DistributedDataParallel sees every forward."""

    def __init__(self, model, align: AlignParams, dtype: str = "float32", first_code_weight: float = 1.0):
        super().__init__()
        self.model, self.align, self.dtype, self.first_code_weight = model, align, dtype, first_code_weight

    def forward(self, phase: str, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        # Autocast inside the module, so that DistributedDataParallel's forward gets it too.
        with torch.autocast(a.device.type, dtype=torch.bfloat16, enabled=self.dtype == "bfloat16"):
            if phase == "align":
                return alignment_loss(self.model, a, b, self.align)
            return seq2seq_loss(self.model, trimmed(a), b, self.first_code_weight)


# --- the loop ----------------------------------------------------------------------------------

def fingerprint(seq_dir: Path, variant: VariantParams, rec: RecommenderParams) -> str:
    """Params + the sequences' bytes: a checkpoint resumes only the run it was written by."""
    h = hashlib.sha256()
    run = {"v": CHECKPOINT_VERSION, "variant": variant.model_dump(), "rec": rec.model_dump()}
    if distributed.world_size() > 1:  # a slice of each batch per rank: not the single-process run
        run["world"] = distributed.world_size()
    if distributed.device().type != "cpu":  # other kernels, and the RNG states are the device's
        run["device"] = distributed.device().type
    # "auto" is not a dtype: what it resolves to on this machine is what the run trains with.
    run["dtypes"] = [precision.resolve(d, distributed.device()) for d in (rec.train.train_dtype, rec.train.decode_dtype)]
    h.update(json.dumps(run, sort_keys=True).encode())
    for name in ("layout.json", "items.parquet", "train.parquet", "valid.parquet"):
        h.update((seq_dir / name).read_bytes())
    return h.hexdigest()[:16]


class Trainer:
    """Holds the model, the data and the resumable loop state of one variant's training."""

    def __init__(self, seq_dir: Path, variant: VariantParams, rec: RecommenderParams,
                 checkpoint: Path | None, live_dir: Path | None, progress: bool = False):
        self.cfg, self.variant = rec.train, variant
        self.rank, self.world = distributed.init()
        self.layout = Layout.load(seq_dir / "layout.json")
        item_idx, self.tokens = read_items(seq_dir)
        self.trie = ItemTrie(self.tokens, item_idx)
        self.train = read_examples(seq_dir / "train.parquet")
        self.valid = self._valid_sample(read_examples(seq_dir / "valid.parquet"))
        self.device = distributed.device()
        self.model = build_for_layout(rec.model, self.layout, self.cfg.seed).to(self.device)
        if self.world > 1:
            torch.manual_seed(self.cfg.seed + 1 + self.rank)  # each rank its own dropout draws
        self.train_dtype = precision.resolve(self.cfg.train_dtype, self.device)
        objective = Objective(self.model, variant.align, self.train_dtype, self.cfg.first_code_weight)
        if self.world > 1:
            on_gpu = [self.device.index] if self.device.type == "cuda" else None
            objective = DistributedDataParallel(objective, device_ids=on_gpu)
        self.objective = objective
        self.gen = torch.Generator().manual_seed(self.cfg.seed)
        self.checkpoint, self.progress = checkpoint, progress
        self.steps_per_epoch = math.ceil(len(self.train.labels) / self.cfg.batch_size)
        self.state: dict[str, Any] = {"phase": "align", "epoch": 0, "batch": 0, "step": 0, "best": -1.0,
                                      "best_epoch": -1, "bad_evals": 0, "best_state": None, "done": False,
                                      "loss_sum": 0.0, "loss_n": 0}
        self.epoch_gen = self.gen.get_state()
        self._new_optimizer("align")
        saved = load_checkpoint(checkpoint) if checkpoint else None
        history = self._restore(saved) if saved else []
        self.tracker = Tracker(live_dir if self.rank == 0 else None, history)

    def _valid_sample(self, ex: Examples) -> Examples:
        n = self.cfg.eval_users
        if not n or n >= len(ex.target):
            return ex
        keep = torch.randperm(len(ex.target), generator=torch.Generator().manual_seed(self.cfg.seed + 1))[:n]
        keep = keep.sort().values
        return Examples(ex.input_ids[keep], ex.labels[keep], ex.target[keep.numpy()])

    def _new_optimizer(self, phase: str) -> None:
        lr = self.variant.align.lr if phase == "align" else self.cfg.lr
        self.opt = optim.adamw(self.model.parameters(), lr, self.cfg.weight_decay)
        total = self.cfg.max_epochs * self.steps_per_epoch
        factor = (lambda s: 1.0) if phase == "align" else lr_factor(self.cfg, total)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, factor)

    # checkpoints

    def _save(self) -> None:
        if self.checkpoint is None:
            return
        rank_rng = distributed.gather(distributed.rng_state().cpu())  # collective: every rank calls _save
        if self.rank != 0:
            return
        save_checkpoint({"rank_rng": rank_rng, "state": {k: v for k, v in self.state.items() if k != "best_state"},
                         "best_state": self.state["best_state"], "model": cpu_state(self.model),
                         "opt": self.opt.state_dict(), "sched": self.sched.state_dict(),
                         "rng": rng_state({"gen": self.gen}), "epoch_gen": self.epoch_gen,
                         "history": self.tracker.history}, self.checkpoint)

    def _restore(self, saved: dict[str, Any]) -> list[dict[str, Any]]:
        self.state = dict(saved["state"], best_state=saved["best_state"])
        self.model.load_state_dict(saved["model"])
        self._new_optimizer(self.state["phase"])
        self.opt.load_state_dict(saved["opt"])
        self.sched.load_state_dict(saved["sched"])
        set_rng_state(saved["rng"], {"gen": self.gen})
        if len(saved.get("rank_rng", [])) == self.world > 1 or self.device.type == "cuda":
            distributed.set_rng_state(saved["rank_rng"][self.rank])
        self.epoch_gen = saved["epoch_gen"]
        return saved["history"]

    # phases

    def run(self, stop_after_steps: int | None = None) -> bool:
        """Train to the end (True) or until `stop_after_steps` optimizer steps in this call (False)."""
        self.budget = stop_after_steps
        if self.state["phase"] == "align":
            if self.variant.align.epochs and not self._align():
                return False
            self.state.update(phase="train", epoch=0, batch=0)
            self._new_optimizer("train")
        if not self.state["done"] and not self._recommend():
            return False
        self.state["done"] = True
        self._save()
        self.tracker.close()
        return True

    def _epochs(self, n_epochs: int, n_examples: int, lengths: torch.Tensor | None):
        """Yield (epoch, batch indices) from the loop state on; resumes mid-epoch exactly."""
        while self.state["epoch"] < n_epochs:
            if self.state["batch"] == 0:
                self.epoch_gen = self.gen.get_state()
            gen = torch.Generator()
            gen.set_state(self.epoch_gen)
            if lengths is None:
                batches = list(torch.randperm(n_examples, generator=gen).split(self.cfg.batch_size))
            else:
                batches = batch_order(lengths, self.cfg.batch_size, gen)
            self.gen.set_state(gen.get_state())
            for b in range(self.state["batch"], len(batches)):
                yield batches[b]
                self.state["batch"] = b + 1
                if self._tick():
                    return
            self.state.update(epoch=self.state["epoch"] + 1, batch=0)
            yield None  # end of epoch

    def _tick(self) -> bool:
        """Count a step; checkpoint on schedule; True when this call's step budget is spent."""
        self.state["step"] += 1
        if self.state["step"] % self.cfg.checkpoint_every == 0:
            self._save()
        if self.budget is not None:
            self.budget -= 1
            if self.budget <= 0:
                self._save()
                return True
        return False

    def _step(self, loss: torch.Tensor) -> None:
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.grad_clip:
            optim.clip_grad_norm(self.model.parameters(), self.cfg.grad_clip)
        self.opt.step()
        self.sched.step()
        self.state["loss_sum"] += distributed.mean(float(loss.detach()))
        self.state["loss_n"] += 1

    def _epoch_loss(self) -> float:
        """Mean loss of the epoch's steps (kept in the state, so it survives a resume)."""
        mean = self.state["loss_sum"] / max(self.state["loss_n"], 1)
        self.state.update(loss_sum=0.0, loss_n=0)
        return mean

    def _align(self) -> bool:
        first, second = alignment_pairs(self.layout, self.tokens)
        self.model.train()
        for batch in self._epochs(self.variant.align.epochs, len(first), None):
            if batch is None:
                self.tracker.log(self.state["step"], **{"align/loss": self._epoch_loss()})
                self._save()
                continue
            b = self._local(batch)
            self._step(self.objective("align", self._on(first[b]), self._on(second[b])))
        return self.state["epoch"] >= self.variant.align.epochs and self.state["batch"] == 0

    def _recommend(self) -> bool:
        cfg = self.cfg
        bar = tqdm(total=cfg.max_epochs * self.steps_per_epoch, disable=not self.progress, desc="train")
        bar.update(self.state["epoch"] * self.steps_per_epoch + self.state["batch"])
        self.model.train()
        for batch in self._epochs(cfg.max_epochs, len(self.train.labels), self.train.lengths):
            if batch is None:
                if self._end_of_epoch():
                    break
                self.model.train()
                continue
            b = self._local(batch)
            self._step(self.objective("train", self._on(self.train.input_ids[b]), self._on(self.train.labels[b])))
            bar.update(1)
        bar.close()
        return self.state["done"] or self.state["epoch"] >= cfg.max_epochs and self.state["batch"] == 0

    def _end_of_epoch(self) -> bool:
        """Evaluate on schedule, keep the best weights; True when early stopping ends training."""
        epoch, cfg = self.state["epoch"], self.cfg
        metrics = {"train/loss": self._epoch_loss()}
        stop = False
        if epoch % cfg.eval_every == 0 or epoch == cfg.max_epochs:
            valid = self.evaluate(self.valid)
            metrics.update({f"valid/{k}": v for k, v in valid.items() if k != "mrr_depth"})
            if valid[cfg.select_on] > self.state["best"]:
                self.state.update(best=valid[cfg.select_on], best_epoch=epoch, bad_evals=0,
                                  best_state={k: v.clone() for k, v in cpu_state(self.model).items()})
            else:
                self.state["bad_evals"] += 1
                stop = self.state["bad_evals"] >= cfg.patience
        self.tracker.log(self.state["step"], epoch=epoch, **metrics)
        if stop:
            self.state["done"] = True
        self._save()
        return stop

    def _on(self, batch: torch.Tensor) -> torch.Tensor:
        return batch.to(self.device, non_blocking=True)

    def _local(self, batch: torch.Tensor) -> torch.Tensor:
        """This rank's slice of a global batch (all of it in a single process)."""
        if self.world == 1:
            return batch
        part = batch.tensor_split(self.world)[self.rank]
        return part if len(part) else batch[-1:]  # a last batch smaller than the world

    def evaluate(self, ex: Examples) -> dict[str, float]:
        """Validation metrics; with several ranks each decodes a slice of the users."""
        idx = torch.arange(len(ex.target)).tensor_split(self.world)[self.rank]
        top = np.zeros((0, self.cfg.top_k), dtype=np.int64)
        if len(idx):
            top = recommend(self.model, self.trie, ex.input_ids[idx], self.cfg.beam, self.cfg.top_k,
                            self.cfg.eval_batch, self.cfg.decode_dtype, self.cfg.decode_workers)[0].numpy()
        return evaluate_top(np.concatenate(distributed.gather(top)), ex.target)

    def best_model(self):
        if self.state["best_state"] is not None:
            self.model.load_state_dict(self.state["best_state"])
        return self.model


def cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The weights as CPU tensors (the same tensors on a CPU run), so files load anywhere."""
    state = model.state_dict()
    for k, v in state.items():
        state[k] = v.cpu()  # in place: the dict keeps its `_metadata`, and its file its bytes
    return state


def train_variant(seq_dir: Path, variant: VariantParams, rec: RecommenderParams, model_out: Path,
                  metrics_out: Path, live_dir: Path | None, work_dir: Path, progress: bool = False,
                  stop_after_steps: int | None = None) -> dict[str, Any] | None:
    """Train one variant (resuming from `work_dir`); write the best model and its validation metrics."""
    from pipeline.artifacts import write_json

    t0 = time.perf_counter()
    ckpt = Path(work_dir) / f"recommender-{fingerprint(seq_dir, variant, rec)}" / "last.pt"
    trainer = Trainer(seq_dir, variant, rec, ckpt, live_dir, progress)
    if not trainer.run(stop_after_steps):
        return None
    model = trainer.best_model()
    valid = trainer.evaluate(trainer.valid)
    report = {"valid": valid, "train": {
        "best_epoch": trainer.state["best_epoch"], "epochs": trainer.state["epoch"],
        "steps": trainer.state["step"], "seconds_this_run": round(time.perf_counter() - t0, 1),
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_examples": len(trainer.train.labels), "valid_users": len(trainer.valid.target),
        "dtype": trainer.train_dtype}}
    if trainer.world > 1:
        report["train"]["processes"] = trainer.world
    if trainer.rank == 0:
        save_model(model.config.to_dict(), cpu_state(model), model_out)
        write_json(report, metrics_out)
    return report
