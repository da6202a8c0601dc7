"""Where a process computes, and data parallelism for `mgr train` / `mgr embed` under torchrun.

`device()`: MGR_DEVICE=auto (default: this process's GPU when torch sees one, else the CPU),
cpu or cuda. Under torchrun each process takes the GPU of its LOCAL_RANK.

Unchanged single-process behaviour when torchrun's variables are absent or WORLD_SIZE is 1.
With N processes: joined by nccl on GPUs, gloo on CPUs. Training: every rank draws the same
global batch order (the batch generator is seeded, not rank-dependent) and trains on its own
slice of each batch, and DistributedDataParallel averages the gradients, so a step equals the
single-process step on the whole batch, up to float summation order (and dropout draws, which
differ per rank).
Validation users are split across ranks and their top lists gathered. Rank 0 alone writes
checkpoints, curves and the model. A checkpoint holds every rank's RNG state, so a killed
multi-process run resumes each rank's dropout stream where it stopped.
Embedding: rank r encodes chunks r, r+N, ... and rank 0 merges the chunk files
(pipeline/embed.py), so the work folder must be one all processes see.
"""
from __future__ import annotations

import atexit
import os
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from pipeline.errors import PipelineError

DEVICES = ("auto", "cpu", "cuda")
# Ranks wait in a collective for the slowest one: after a resume, that can be one rank's whole
# share of an embedding run. torchrun stops every rank when one fails, so nothing hangs on this.
TIMEOUT = timedelta(hours=6)


def device() -> torch.device:
    """The device this process computes on (MGR_DEVICE, see the module docstring)."""
    choice = os.environ.get("MGR_DEVICE", "auto").strip().lower()
    if choice not in DEVICES:
        raise PipelineError(f"MGR_DEVICE: must be one of {', '.join(DEVICES)} (got {choice!r})")
    if choice == "cpu" or (choice == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise PipelineError("MGR_DEVICE=cuda: torch sees no CUDA device (unset it, or set it to cpu)")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())


def init() -> tuple[int, int]:
    """(rank, world size); joins torchrun's process group on first call when WORLD_SIZE > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        here = device()
        if here.type == "cuda":
            torch.cuda.set_device(here)
        dist.init_process_group("nccl" if here.type == "cuda" else "gloo", timeout=TIMEOUT)
        atexit.register(_leave)
    return dist.get_rank(), dist.get_world_size()


def _leave() -> None:
    # A gloo group left to the interpreter's teardown can abort the process ("terminate called
    # without an active exception": its threads outlive it), which fails a finished run.
    if dist.is_initialized():
        dist.destroy_process_group()


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if world_size() > 1 else 0


def gather(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order (just [obj] in a single process)."""
    if world_size() == 1:
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def mean(value: float) -> float:
    """The mean of a float over the ranks."""
    if world_size() == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device())  # nccl reduces GPU tensors only
    dist.all_reduce(t)
    return float(t.item()) / world_size()


def rng_state() -> torch.Tensor:
    """The state of the generator this process's dropout draws from (its device's)."""
    here = device()
    return torch.cuda.get_rng_state(here) if here.type == "cuda" else torch.get_rng_state()


def set_rng_state(state: torch.Tensor) -> None:
    here = device()
    if here.type == "cuda":
        torch.cuda.set_rng_state(state, here)
    else:
        torch.set_rng_state(state)
