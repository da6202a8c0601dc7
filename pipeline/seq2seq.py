"""The generative recommender: a T5 encoder-decoder built from a config (method.md section 6).

The encoder reads [user token] + the history's item tokens; the decoder writes the next item's
tokens. No pretrained weights: the vocabulary is the layout's tokens and nothing else.

Decoding re-runs the decoder over the (at most item_len) chosen tokens at every step instead
of keeping a KV cache: with IDs of 4 to 8 tokens the recomputation costs less than reordering
every beam's cache, which is where transformers' `generate` spends its time.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from transformers import T5Config, T5ForConditionalGeneration

from pipeline.beam import ItemTrie, constrained_beam_search
from pipeline.layout import EOS, PAD
from pipeline.params import ModelParams


def t5_config(cfg: ModelParams, vocab_size: int) -> T5Config:
    return T5Config(
        vocab_size=vocab_size, d_model=cfg.d_model, d_kv=cfg.d_kv, d_ff=cfg.d_ff,
        num_layers=cfg.encoder_layers, num_decoder_layers=cfg.decoder_layers, num_heads=cfg.heads,
        dropout_rate=cfg.dropout, feed_forward_proj="relu", pad_token_id=PAD, eos_token_id=EOS,
        decoder_start_token_id=PAD, use_cache=False,
        # Untied output layer: with tied ones the 64-code softmax learned markedly slower here.
        tie_word_embeddings=cfg.tie_embeddings, scale_decoder_outputs=cfg.tie_embeddings,
    )


def build_model(cfg: ModelParams, vocab_size: int, seed: int) -> T5ForConditionalGeneration:
    torch.manual_seed(seed)  # the initial weights are part of the run's seed
    return T5ForConditionalGeneration(t5_config(cfg, vocab_size))


def model_from_config(config: dict) -> T5ForConditionalGeneration:
    return T5ForConditionalGeneration(T5Config(**config))


def seq2seq_loss(model: T5ForConditionalGeneration, input_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of the label tokens (teacher forcing; labels never contain PAD)."""
    return model(input_ids=input_ids, attention_mask=input_ids != PAD, labels=labels).loss


def encode(model: T5ForConditionalGeneration, input_ids: torch.Tensor) -> torch.Tensor:
    return model.get_encoder()(input_ids=input_ids, attention_mask=input_ids != PAD).last_hidden_state


def pooled(states: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """Mean of the encoder states over the real (non-pad) tokens."""
    mask = (input_ids != PAD).unsqueeze(-1).to(states.dtype)
    return (states * mask).sum(1) / mask.sum(1).clamp_min(1.0)


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric in-batch InfoNCE: row i of `a` and row i of `b` are the positive pair."""
    a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    logits = a @ b.T / temperature
    target = torch.arange(a.shape[0], device=a.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def step_function(model: T5ForConditionalGeneration, input_ids: torch.Tensor, beam: int) -> Callable:
    """The next-token logits for each beam row: the encoder runs once, the decoder per step."""
    mask = input_ids != PAD
    states = encode(model, input_ids)
    states = states.repeat_interleave(beam, dim=0)
    mask = mask.repeat_interleave(beam, dim=0)
    start = torch.full((states.shape[0], 1), PAD, dtype=torch.long, device=states.device)

    def step(prefix: torch.Tensor, parent: torch.Tensor | None) -> torch.Tensor:
        dec = torch.cat([start, prefix.long()], dim=1)
        out = model(encoder_outputs=(states,), attention_mask=mask, decoder_input_ids=dec, use_cache=False)
        return out.logits[:, -1]

    return step


@torch.inference_mode()
def recommend(model: T5ForConditionalGeneration, trie: ItemTrie, input_ids: torch.Tensor,
              beam: int, k: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k items (item indices, -1 where fewer exist) and their log-probabilities, per row."""
    model.eval()
    items, scores = [], []
    for start in range(0, input_ids.shape[0], batch_size):
        batch = input_ids[start:start + batch_size]
        batch = batch[:, : int((batch != PAD).sum(1).max())]  # drop all-pad columns
        found, score = constrained_beam_search(step_function(model, batch, beam), trie, batch.shape[0], beam, k)
        items.append(found)
        scores.append(score)
    return torch.cat(items), torch.cat(scores)
