"""The recommender's network: a T5 encoder-decoder in plain PyTorch (method.md section 6).

T5 v1.0 as Raffel et al. (2020) define it: pre-norm residual blocks with RMS layer norms and no
biases, dot-product attention without the 1/sqrt(d) scaling, relative-position buckets learned
once per stack and added to every layer's attention scores (bidirectional in the encoder, causal
in the decoder), a ReLU feed-forward, and dropout on the embeddings, the attention weights, every
residual branch and the stack's output. tests/test_t5.py checks the outputs and gradients
against transformers' T5ForConditionalGeneration given the same weights.

What the recommender adds (`T5Config`):
- `end_positions`: a learned embedding of each encoder token's distance from the end of the
  history. With relative biases alone the encoder must first find the sequence's end before it
  can single out the most recent item; small models trained for a few epochs learn that slowly
  (README: "Training"). 0 = plain T5.
- `output_offset`: the output layer covers tokens from this id on only (logit j is token
  offset + j), so user tokens, which are inputs and never outputs, cost nothing per step.
- `tie_embeddings`: the output layer is the input embeddings' rows of those tokens; untied, its own
  weight, starting as those rows. Either way logits are not scaled by d_model**-0.5 (T5 1.0 does
  that when tied; the 64-code softmax learned markedly slower with it here).

Self-attention projects queries, keys and values with one matrix product (and cross-attention
keys and values with one): 1.06x a bfloat16 training step against three, on 2 cores.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from pipeline import dropout as fast_dropout
from pipeline.layout import PAD


@dataclass(frozen=True)
class T5Config:
    vocab_size: int
    d_model: int = 128
    d_kv: int = 32
    d_ff: int = 512
    heads: int = 4
    encoder_layers: int = 2
    decoder_layers: int = 2
    dropout: float = 0.1
    end_positions: int = 0
    output_offset: int = 0
    tie_embeddings: bool = True
    embedding_init: Literal["t5", "scaled"] = "t5"  # token embeddings N(0, 1) or N(0, 1/d_model)
    buckets: int = 32         # relative-position buckets per stack (T5's)
    max_distance: int = 128   # distances beyond this share the last bucket

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, config: dict) -> "T5Config":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(config) - known)
        if unknown:  # e.g. a model saved by the transformers-based code before 2026-12-07
            raise ValueError(f"not a pipeline.t5 model config (unknown keys {unknown[:4]}); retrain the model")
        return cls(**config)


def relative_buckets(relative: torch.Tensor, bidirectional: bool, n: int, max_distance: int) -> torch.Tensor:
    """T5's bucket of each key-minus-query distance: one bucket per distance up to n/2 (per
    direction when bidirectional), then logarithmically wider ones up to max_distance."""
    if bidirectional:  # keys after the query take the upper half of the buckets
        n //= 2
        bucket, distance = (relative > 0).long() * n, relative.abs()
    else:  # a causal decoder only looks back
        bucket, distance = 0, (-relative).clamp_min(0)
    exact = n // 2
    log_bucket = exact + (torch.log(distance.float() / exact) / math.log(max_distance / exact) * (n - exact)).long()
    return bucket + torch.where(distance < exact, distance, log_bucket.clamp_max(n - 1))


def additive_mask(keep: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """0 where `keep`, the dtype's lowest value elsewhere. Finite in `dtype`, but a cast to a
    narrower one (SDPA's float32 mask under bfloat16 autocast on a GPU) makes it -inf: harmless, as
    no row here is fully masked (every history has a real token, every decoder token sees itself)."""
    return torch.zeros(keep.shape, dtype=dtype, device=keep.device).masked_fill(~keep, torch.finfo(dtype).min)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor, p: float,
           training: bool) -> torch.Tensor:
    """softmax(q k^T + bias) v over (N, heads, T, d_kv) tensors, with dropout on the weights in training.

    Written out in training on the CPU when it drops (SDPA's dropout is the slow path there, and the
    weights get `pipeline.dropout`'s cheaper masks) or runs in bfloat16, where SDPA's CPU kernel
    took 1.6-6x as long forward and backward (bench/attention_kernels.py --training). SDPA
    otherwise: in float32 without dropout, in inference, and on a GPU (one fused kernel)."""
    if training and (p > 0 or q.dtype != torch.float32) and not (q.is_cuda and fast_dropout.NATIVE_ON_GPU):
        weights = torch.softmax(q @ k.transpose(-1, -2) + bias, dim=-1)
        return fast_dropout.dropout(weights, p, True) @ v
    return F.scaled_dot_product_attention(q, k, v, bias.to(q.dtype), dropout_p=p if training else 0.0, scale=1.0)


class RMSNorm(nn.Module):
    """T5's layer norm: scale by the root mean square (in float32), no mean, no bias."""

    def __init__(self, d: int, eps: float = 1e-6):
        super().__init__()
        self.weight, self.eps = nn.Parameter(torch.ones(d)), eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rms = torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * (x * rms).to(self.weight.dtype)


class Attention(nn.Module):
    def __init__(self, cfg: T5Config, cross: bool):
        super().__init__()
        inner = cfg.heads * cfg.d_kv
        self.heads, self.d_kv, self.p = cfg.heads, cfg.d_kv, cfg.dropout
        if cross:  # queries from the decoder, keys and values from the encoder's states
            self.q = nn.Linear(cfg.d_model, inner, bias=False)
            self.kv = nn.Linear(cfg.d_model, 2 * inner, bias=False)
        else:
            self.qkv = nn.Linear(cfg.d_model, 3 * inner, bias=False)
        self.o = nn.Linear(inner, cfg.d_model, bias=False)

    def split(self, x: torch.Tensor, parts: int) -> tuple[torch.Tensor, ...]:
        """(N, T, parts*heads*d_kv) -> `parts` tensors of (N, heads, T, d_kv)."""
        n, t, _ = x.shape
        return tuple(x.view(n, t, parts, self.heads, self.d_kv).permute(2, 0, 3, 1, 4))

    def merge(self, x: torch.Tensor) -> torch.Tensor:
        """(N, heads, T, d_kv) -> the output projection of (N, T, heads*d_kv)."""
        return self.o(x.transpose(1, 2).reshape(x.shape[0], x.shape[2], -1))

    def forward(self, x: torch.Tensor, bias: torch.Tensor, memory: torch.Tensor | None = None) -> torch.Tensor:
        if memory is None:
            q, k, v = self.split(self.qkv(x), 3)
        else:
            (q,), (k, v) = self.split(self.q(x), 1), self.split(self.kv(memory), 2)
        return self.merge(attend(q, k, v, bias, self.p, self.training))


class FeedForward(nn.Module):
    def __init__(self, cfg: T5Config):
        super().__init__()
        self.wi = nn.Linear(cfg.d_model, cfg.d_ff, bias=False)
        self.wo = nn.Linear(cfg.d_ff, cfg.d_model, bias=False)
        self.p = cfg.dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.wo(fast_dropout.dropout(F.relu(self.wi(x)), self.p, self.training))


class Block(nn.Module):
    def __init__(self, cfg: T5Config, cross: bool):
        super().__init__()
        self.p = cfg.dropout
        self.self_norm, self.self_attn = RMSNorm(cfg.d_model), Attention(cfg, cross=False)
        if cross:
            self.cross_norm, self.cross_attn = RMSNorm(cfg.d_model), Attention(cfg, cross=True)
        self.ff_norm, self.ff = RMSNorm(cfg.d_model), FeedForward(cfg)

    def forward(self, x: torch.Tensor, bias: torch.Tensor, memory: torch.Tensor | None = None,
                memory_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.drop(self.self_attn(self.self_norm(x), bias))
        if memory is not None:
            x = x + self.drop(self.cross_attn(self.cross_norm(x), memory_mask, memory))
        return x + self.drop(self.ff(self.ff_norm(x)))

    def drop(self, x: torch.Tensor) -> torch.Tensor:
        return fast_dropout.dropout(x, self.p, self.training)


class Stack(nn.Module):
    """The encoder (bidirectional) or the decoder (causal, with cross-attention)."""

    def __init__(self, cfg: T5Config, layers: int, decoder: bool):
        super().__init__()
        self.cfg, self.decoder = cfg, decoder
        self.relative_bias = nn.Embedding(cfg.buckets, cfg.heads)
        self.blocks = nn.ModuleList(Block(cfg, cross=decoder) for _ in range(layers))
        self.norm = RMSNorm(cfg.d_model)

    def position_bias(self, queries: int, keys: int, past: int = 0) -> torch.Tensor:
        """(1, heads, queries, keys) learned biases; query i sits at position past + i. Causal
        stacks also mask the keys after each query."""
        device = self.relative_bias.weight.device
        relative = torch.arange(keys, device=device)[None, :] - torch.arange(past, past + queries, device=device)[:, None]
        bias = self.relative_bias(relative_buckets(relative, not self.decoder, self.cfg.buckets, self.cfg.max_distance))
        bias = bias.permute(2, 0, 1).unsqueeze(0)
        if self.decoder:
            bias = bias + additive_mask(relative <= 0, bias.dtype)
        return bias

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, memory: torch.Tensor | None = None,
                memory_mask: torch.Tensor | None = None) -> torch.Tensor:
        """`mask`, `memory_mask`: additive (N, 1, 1, keys) padding masks of this stack's own
        tokens (encoder) and of the memory it attends to (decoder)."""
        bias = self.position_bias(x.shape[1], x.shape[1])
        if mask is not None:
            bias = bias + mask
        x = fast_dropout.dropout(x, self.cfg.dropout, self.training)
        for block in self.blocks:
            x = block(x, bias, memory, memory_mask)
        return fast_dropout.dropout(self.norm(x), self.cfg.dropout, self.training)


class T5(nn.Module):
    def __init__(self, cfg: T5Config):
        super().__init__()
        self.config = cfg
        self.shared = nn.Embedding(cfg.vocab_size, cfg.d_model)  # encoder and decoder inputs
        if cfg.end_positions:
            self.end_positions = nn.Embedding(cfg.end_positions, cfg.d_model)
        self.encoder = Stack(cfg, cfg.encoder_layers, decoder=False)
        self.decoder = Stack(cfg, cfg.decoder_layers, decoder=True)
        if not cfg.tie_embeddings:
            self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size - cfg.output_offset, bias=False)
        self._init_weights()

    def _init_weights(self) -> None:
        """T5's initialisation (normal, std from each matrix's fan-in) under the caller's seed."""
        cfg = self.config
        std = 1.0 if cfg.embedding_init == "t5" else cfg.d_model ** -0.5
        nn.init.normal_(self.shared.weight, std=std)
        if cfg.end_positions:
            nn.init.normal_(self.end_positions.weight, std=std)
        inner = cfg.heads * cfg.d_kv
        for module in self.modules():
            if isinstance(module, Stack):
                nn.init.normal_(module.relative_bias.weight, std=cfg.d_model ** -0.5)
            elif isinstance(module, Attention):
                q = module.qkv.weight[:inner] if hasattr(module, "qkv") else module.q.weight
                kv = module.qkv.weight[inner:] if hasattr(module, "qkv") else module.kv.weight
                with torch.no_grad():  # q's smaller std keeps the unscaled scores near unit spread
                    q.normal_(std=(cfg.d_model * cfg.d_kv) ** -0.5)
                    kv.normal_(std=cfg.d_model ** -0.5)
                nn.init.normal_(module.o.weight, std=inner ** -0.5)
            elif isinstance(module, FeedForward):
                nn.init.normal_(module.wi.weight, std=cfg.d_model ** -0.5)
                nn.init.normal_(module.wo.weight, std=cfg.d_ff ** -0.5)
        if not cfg.tie_embeddings:  # starts as the embedding rows it replaces
            self.lm_head.weight.data.copy_(self.shared.weight.data[cfg.output_offset:])

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Encoder input: token embeddings plus, if configured, the distance-from-end embeddings."""
        x = self.shared(input_ids)
        if not self.config.end_positions:
            return x
        return x + self.end_positions(distance_from_end(input_ids).clamp_max(self.config.end_positions - 1))

    def padding_mask(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Additive (N, 1, 1, L) mask of the history's PAD tokens."""
        return additive_mask(input_ids != PAD, self.shared.weight.dtype)[:, None, None, :]

    def encode(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.embed(input_ids), self.padding_mask(input_ids))

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits over the tokens from `output_offset` on."""
        if self.config.tie_embeddings:
            return F.linear(hidden, self.shared.weight[self.config.output_offset:])
        return self.lm_head(hidden)

    def forward(self, input_ids: torch.Tensor, decoder_input_ids: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits (N, T_dec, vocab - output_offset)."""
        mask = self.padding_mask(input_ids)  # the encoder's own, and the decoder's over its states
        memory = self.encoder(self.embed(input_ids), mask)
        hidden = self.decoder(self.shared(decoder_input_ids), memory=memory, memory_mask=mask)
        return self.head(hidden)


def distance_from_end(input_ids: torch.Tensor) -> torch.Tensor:
    """Per token, how many real (non-pad) tokens follow it: 0 at the last one, whatever the padding."""
    real = (input_ids != PAD).long()
    return (real.flip(1).cumsum(1).flip(1) - 1).clamp_min(0)


def shift_right(labels: torch.Tensor) -> torch.Tensor:
    """Decoder inputs for teacher forcing: PAD (the start token), then the labels but the last."""
    return torch.cat([torch.full_like(labels[:, :1], PAD), labels[:, :-1]], dim=1)
