"""Training checkpoints that resume bit for bit and load with `torch.load(weights_only=True)`.

A checkpoint is a dict of tensors and plain Python values: model and optimizer state, the
step, the RNG states (torch's global one and any named `torch.Generator`s the loop draws
batches from) and whatever else the loop keeps (history, best score). No pickled objects.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, Callable, TypeVar

import torch

from pipeline.artifacts import atomic_path
from pipeline.errors import PipelineError

Model = TypeVar("Model", bound=torch.nn.Module)


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


def save_model(config: dict[str, Any], state_dict: dict[str, torch.Tensor], path: str | os.PathLike,
               **extra: Any) -> None:
    """A finished model: the config that builds it again, its weights, and `extra` (e.g. the params)."""
    save_checkpoint({"config": config, "state_dict": state_dict, **extra}, path)


def load_model(path: str | os.PathLike, build: Callable[[dict[str, Any]], Model], missing: str) -> Model:
    """The model of a `save_model` file, built by `build` from its config, in eval mode. A missing
    file (`missing` says which stage writes it) or a config that `build` rejects (ValueError,
    TypeError: e.g. a file from an older code base) is a one-line PipelineError naming the file."""
    if not Path(path).is_file():
        raise PipelineError(f"{path}: {missing}")
    saved = torch.load(path, map_location="cpu", weights_only=True)
    try:
        model = build(saved["config"])
    except (ValueError, TypeError) as err:
        raise PipelineError(f"{path}: {err}") from None
    model.load_state_dict(saved["state_dict"])
    return model.eval()
