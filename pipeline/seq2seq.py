"""The generative recommender: a T5 encoder-decoder built from a config (method.md section 6).

The encoder reads [user token] + the history's item tokens; the decoder writes the next item's
tokens. No pretrained weights: the vocabulary is the layout's tokens and nothing else.

Decoding re-runs the decoder over the (at most item_len) chosen tokens at every step instead
of keeping a KV cache: with IDs of 4 to 8 tokens the recomputation costs less than reordering
every beam's cache, which is where transformers' `generate` spends its time.

T5 has no absolute positions, only relative attention biases. Here the most recent item
matters most (it sets the next item's category), and with relative biases alone the encoder must
first find the end of the sequence before it can single that item out: a two-step circuit that
small models trained for a few epochs learn slowly (README: "Training"). So each encoder
input token also gets a learned embedding of its distance from the end of the sequence
(`ModelParams.end_positions`; 0 = plain T5), which names an item's recency and a token's level
in one index, whatever the layout.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from transformers import T5Config, T5ForConditionalGeneration
from transformers.cache_utils import DynamicCache, EncoderDecoderCache

from pipeline.beam import ItemTrie, constrained_beam_search
from pipeline.layout import EOS, PAD
from pipeline.params import ModelParams


def t5_config(cfg: ModelParams, vocab_size: int) -> T5Config:
    return T5Config(
        vocab_size=vocab_size, d_model=cfg.d_model, d_kv=cfg.d_kv, d_ff=cfg.d_ff,
        num_layers=cfg.encoder_layers, num_decoder_layers=cfg.decoder_layers, num_heads=cfg.heads,
        dropout_rate=cfg.dropout, feed_forward_proj="relu", pad_token_id=PAD, eos_token_id=EOS,
        decoder_start_token_id=PAD, use_cache=False, end_positions=cfg.end_positions,
        # Untied output layer: with tied ones the 64-code softmax learned markedly slower here.
        tie_word_embeddings=cfg.tie_embeddings, scale_decoder_outputs=cfg.tie_embeddings,
    )


def build_model(cfg: ModelParams, vocab_size: int, seed: int) -> T5ForConditionalGeneration:
    torch.manual_seed(seed)  # the initial weights are part of the run's seed
    return model_from_config(t5_config(cfg, vocab_size).to_dict())


def model_from_config(config: dict) -> T5ForConditionalGeneration:
    model = T5ForConditionalGeneration(T5Config(**config))
    n = getattr(model.config, "end_positions", 0)
    if n:  # a submodule of the T5, so it is in the state dict and moves with the model
        model.end_positions = torch.nn.Embedding(n, model.config.d_model)
    return model


def distance_from_end(input_ids: torch.Tensor) -> torch.Tensor:
    """Per token, how many real (non-pad) tokens follow it: 0 at the last one, whatever the padding."""
    real = (input_ids != PAD).long()
    return (real.flip(1).cumsum(1).flip(1) - 1).clamp_min(0)


def encoder_inputs(model: T5ForConditionalGeneration, input_ids: torch.Tensor) -> torch.Tensor:
    """Token embeddings plus, if the model has them, embeddings of the distance from the end."""
    x = model.shared(input_ids)
    table = getattr(model, "end_positions", None)
    if table is None:
        return x
    return x + table(distance_from_end(input_ids).clamp_max(table.num_embeddings - 1))


def seq2seq_loss(model: T5ForConditionalGeneration, input_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of the label tokens (teacher forcing; labels never contain PAD)."""
    return model(inputs_embeds=encoder_inputs(model, input_ids), attention_mask=input_ids != PAD, labels=labels).loss


def encode(model: T5ForConditionalGeneration, input_ids: torch.Tensor) -> torch.Tensor:
    return model.get_encoder()(inputs_embeds=encoder_inputs(model, input_ids),
                               attention_mask=input_ids != PAD).last_hidden_state


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


def _cross_attention_cache(model: T5ForConditionalGeneration, states: torch.Tensor, beam: int) -> DynamicCache:
    """Every decoder layer's cross-attention keys and values, projected once per query and
    repeated per beam: recomputing them at every step for every beam was most of the decoding time."""
    cache = DynamicCache()
    for i, block in enumerate(model.decoder.block):
        att = block.layer[1].EncDecAttention
        shape = (*states.shape[:-1], -1, att.key_value_proj_dim)
        keys = att.k(states).view(shape).transpose(1, 2).repeat_interleave(beam, dim=0)
        values = att.v(states).view(shape).transpose(1, 2).repeat_interleave(beam, dim=0)
        cache.update(keys, values, i)
    return cache


def step_function(model: T5ForConditionalGeneration, input_ids: torch.Tensor, beam: int) -> Callable:
    """The next-token logits for each beam row: the encoder and the cross-attention projections
    run once, the decoder per step over the whole (short) prefix, the output layer on its last
    position only."""
    states = encode(model, input_ids)
    cross = _cross_attention_cache(model, states, beam)
    states = states.repeat_interleave(beam, dim=0)
    mask = (input_ids != PAD).repeat_interleave(beam, dim=0)
    start = torch.full((states.shape[0], 1), PAD, dtype=torch.long, device=states.device)
    scale = model.model_dim ** -0.5 if model.config.scale_decoder_outputs else 1.0

    def step(prefix: torch.Tensor, parent: torch.Tensor | None) -> torch.Tensor:
        dec = torch.cat([start, prefix.long()], dim=1)
        cache = EncoderDecoderCache(DynamicCache(), cross)  # fresh self-attention part each step
        out = model.decoder(input_ids=dec, encoder_hidden_states=states, encoder_attention_mask=mask,
                            past_key_values=cache, use_cache=True)
        return model.lm_head(out.last_hidden_state[:, -1] * scale)

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
