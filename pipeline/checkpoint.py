"""Training checkpoints that resume bit for bit and load with `torch.load(weights_only=True)`.

A checkpoint is a dict of tensors and plain Python values: model and optimizer state, the
step, the RNG states (torch's global one and any named `torch.Generator`s the loop draws
batches from) and whatever else the loop keeps (history, best score). No pickled objects.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import torch

from pipeline.artifacts import atomic_path


def rng_state(generators: dict[str, torch.Generator] | None = None) -> dict[str, torch.Tensor]:
    state = {"torch": torch.get_rng_state()}
    for name, gen in (generators or {}).items():
        state[name] = gen.get_state()
    return state


def set_rng_state(state: dict[str, torch.Tensor], generators: dict[str, torch.Generator] | None = None) -> None:
    torch.set_rng_state(state["torch"])
    for name, gen in (generators or {}).items():
        gen.set_state(state[name])


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> None:
    """Write atomically: a kill during the write leaves the previous checkpoint intact.

    Through a buffer: torch.save names the zip's inner folder after the file, and the
    temporary file's random name would make every save of the same state different bytes.
    """
    buf = io.BytesIO()
    torch.save(state, buf)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any] | None:
    """The checkpoint at `path`, or None when there is none yet."""
    path = Path(path)
    if not path.exists():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)
