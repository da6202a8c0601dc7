"""Data parallelism for `mgr train` under torchrun (`torchrun --nproc_per_node N`).

Unchanged single-process behaviour when torchrun's variables are absent or WORLD_SIZE is 1.
With N processes: CPU processes joined by gloo (training does not place the model on a GPU yet,
so there is no nccl path). Every rank draws the same global batch order (the
batch generator is seeded, not rank-dependent) and trains on its own slice of each batch, and
DistributedDataParallel averages the gradients, so a step equals the single-process step on the
whole batch, up to float summation order (and dropout draws, which differ per rank).
Validation users are split across ranks and their top lists gathered. Rank 0 alone writes
checkpoints, curves and the model. A checkpoint holds every rank's RNG state, so a killed
multi-process run resumes each rank's dropout stream where it stopped.
"""
from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist


def init() -> tuple[int, int]:
    """(rank, world size); joins torchrun's process group on first call when WORLD_SIZE > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("gloo")
    return dist.get_rank(), dist.get_world_size()


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
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t.item()) / world_size()


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()
