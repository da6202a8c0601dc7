"""Item text -> one vector per text, with a transformers encoder or the CLIP text tower.

`load_text_encoder(cfg)` picks the kind from `cfg.encoder`:
  hf         AutoTokenizer + AutoModel, mean of the last hidden states over the attention
             mask (what sentence-transformers does for all-MiniLM-L6-v2), truncated to max_length.
  open_clip  `model.encode_text` on open_clip's tokenizer for `cfg.model` (its own context
             length, usually 77 tokens; `max_length` does not apply).
`encode` takes one batch and is deterministic: eval mode, no dropout, no gradient. The model
runs on `distributed.device()` (MGR_DEVICE); vectors come back as CPU arrays.
"""
from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import torch

from pipeline import distributed, precision
from pipeline.errors import PipelineError
from pipeline.weights import Weights, is_offline, load_open_clip, resolve_weights, short_reason, weights_error

KEY = "embed.text"


class TextEncoder(Protocol):
    dim: int
    dtype: str  # what the products run in: "float32" or "bfloat16" (embed.text.dtype, resolved)
    weights: Weights

    def encode(self, texts: list[str]) -> np.ndarray: ...


def load_text_encoder(cfg: Any, key: str = KEY) -> TextEncoder:
    if cfg.encoder == "hf":
        return HFTextEncoder(cfg, key)
    if cfg.encoder == "open_clip":
        return OpenClipTextEncoder(cfg, key)
    raise PipelineError(f"{key}.encoder: {cfg.encoder!r} is not hf or open_clip")


class HFTextEncoder:
    def __init__(self, cfg: Any, key: str = KEY):
        self.max_length = cfg.max_length
        self.weights = resolve_weights(key, cfg)
        if self.weights.kind == "random":
            self.tokenizer, self.model = _random_hf(key, cfg)
        else:
            self.tokenizer, self.model = _pretrained_hf(key, cfg, self.weights)
        self.device = distributed.device()
        self.dtype = precision.resolve(cfg.dtype, self.device)
        self.model.float().to(self.device).eval()
        self.dim = int(self.model.config.hidden_size)

    @torch.inference_mode()
    def encode(self, texts: list[str]) -> np.ndarray:
        batch = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                               return_tensors="pt").to(self.device)
        with precision.autocast(self.device, self.dtype):
            hidden = self.model(**batch).last_hidden_state.float()
        return mean_pool(hidden, batch["attention_mask"]).cpu().numpy().astype(np.float32, copy=False)


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Average of the token vectors the mask keeps: padding must not pull short texts toward zero."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)


def _pretrained_hf(key: str, cfg: Any, weights: Weights) -> tuple[Any, torch.nn.Module]:
    from transformers import AutoModel, AutoTokenizer

    source = weights.resolved
    # A local folder never needs the network; the hub does, unless offline mode says to use the cache only.
    local_only = weights.kind != "hub" or is_offline()
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only)
        model = AutoModel.from_pretrained(source, local_files_only=local_only)
    except Exception as err:  # OSError, ValueError, safetensors and hub errors all mean "not loadable"
        where = f"{source} from the hub" if weights.kind == "hub" else source
        raise weights_error(key, cfg.weights, f"cannot load {where}: {short_reason(err)}") from None
    return tokenizer, model


def _random_hf(key: str, cfg: Any) -> tuple[Any, torch.nn.Module]:
    """The architecture and tokenizer of `cfg.model` (found locally) with seeded random weights."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    try:
        config = AutoConfig.from_pretrained(cfg.model, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(cfg.model, local_files_only=True)
    except Exception as err:
        raise PipelineError(
            f"{key}.weights: 'random' needs the config and tokenizer of {key}.model={cfg.model!r} on this "
            f"machine ({short_reason(err, 120)}); set {key}.model to a local model folder, or download it "
            "once while online"
        ) from None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = AutoModel.from_config(config)
    return tokenizer, model


class OpenClipTextEncoder:
    def __init__(self, cfg: Any, key: str = KEY):
        import open_clip

        clip = load_open_clip(key, cfg)
        self.model, self.weights = clip.model, clip.weights
        self.device = distributed.device()
        self.dtype = precision.resolve(cfg.dtype, self.device)
        self.model.to(self.device)
        try:
            self.tokenizer = open_clip.get_tokenizer(clip.name)
        except Exception as err:  # HF-tokenizer architectures fetch their tokenizer from the hub
            raise PipelineError(f"{key}.model: {cfg.model!r}: cannot load its tokenizer: {short_reason(err)}") from None
        self.dim = int(self.encode([""]).shape[1])

    @torch.inference_mode()
    def encode(self, texts: list[str]) -> np.ndarray:
        with precision.autocast(self.device, self.dtype):
            return self.model.encode_text(self.tokenizer(list(texts)).to(self.device)).float().cpu().numpy()
