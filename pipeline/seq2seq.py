"""The generative recommender around its network (pipeline/t5.py): building it from params,
the training loss, and decoding.

The encoder reads [user token] + the history's item tokens; the decoder writes the next item's
tokens. No pretrained weights: the vocabulary is the layout's tokens and nothing else.
Optionally (`ModelParams.item_output`) the output layer covers only the tokens an item's ID can
hold (ids from the layout's first item token on): user tokens are inputs, never outputs, and
scoring them was most of the output layer's work in a decoding step.

Decoding (`BeamDecoder`) runs the decoder one token per step with its own small caches
instead of transformers' `generate`, whose cache reordering was most of its time.
"""
from __future__ import annotations

import copy
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Callable, Iterator, Literal

import torch
import torch.nn.functional as F

from pipeline import precision
from pipeline.beam import ItemTrie, constrained_beam_search
from pipeline.layout import PAD, Layout
from pipeline.params import ModelParams
from pipeline.t5 import T5, T5Config, shift_right


def t5_config(cfg: ModelParams, vocab_size: int, output_offset: int = 0) -> T5Config:
    return T5Config(vocab_size=vocab_size, d_model=cfg.d_model, d_kv=cfg.d_kv, d_ff=cfg.d_ff, heads=cfg.heads,
                    encoder_layers=cfg.encoder_layers, decoder_layers=cfg.decoder_layers, dropout=cfg.dropout,
                    end_positions=cfg.end_positions, output_offset=output_offset,
                    tie_embeddings=cfg.tie_embeddings, embedding_init=cfg.embedding_init)


def build_model(cfg: ModelParams, vocab_size: int, seed: int, output_offset: int = 0) -> T5:
    """A seeded T5; `output_offset`: the first token id the decoder may emit (the layout's first item token)."""
    torch.manual_seed(seed)  # the initial weights are part of the run's seed
    return T5(t5_config(cfg, vocab_size, output_offset))


def build_for_layout(cfg: ModelParams, layout: Layout, seed: int) -> T5:
    """The model for a variant's token layout; with `item_output`, its output layer starts at the
    layout's first item token."""
    return build_model(cfg, layout.vocab_size, seed, layout.first_item_token if cfg.item_output else 0)


def model_from_config(config: dict) -> T5:
    """A model of a saved config (its weights are drawn afresh: load the saved ones over them)."""
    return T5(T5Config.from_dict(config))


def output_offset(model: T5) -> int:
    """Token id of the output layer's first column (logit j is token offset + j)."""
    return model.config.output_offset


def position_losses(model: T5, input_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each label token under teacher forcing, (rows, positions); labels never contain PAD."""
    logits = model(input_ids, shift_right(labels)).flatten(0, 1).float()
    target = (labels - output_offset(model)).flatten()
    return F.cross_entropy(logits, target, reduction="none").view(labels.shape)


def seq2seq_loss(model: T5, input_ids: torch.Tensor, labels: torch.Tensor,
                 first_code_weight: float = 1.0) -> torch.Tensor:
    """Mean cross-entropy of the label tokens.

    `first_code_weight` counts the first label token (an item ID's first code, which places the
    item and decides recall) that many times in the mean over each row's positions."""
    ce = position_losses(model, input_ids, labels)
    if first_code_weight == 1.0:
        return ce.mean()
    weights = torch.ones(labels.shape[1], device=ce.device)
    weights[0] = first_code_weight
    return (ce * weights).sum(1).mean() / weights.sum()


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


def _prefix_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Self-attention of (rows, heads, n, d) new queries over a decoded prefix of a few keys, as
    broadcast products (T5 scales by 1). For these thousands of tiny problems torch's fused CPU
    kernel took 1.5-2.4x as long (`bench/attention_kernels.py`), and a profile of lfpp decoding
    caught its two-query call at 9 ms, 11% of the decode. Cross-attention keeps the fused kernel."""
    w = (q.unsqueeze(-2) * k.unsqueeze(-3)).sum(-1) + bias  # (rows, heads, n, keys)
    return (w.softmax(-1).unsqueeze(-1) * v.unsqueeze(-3)).sum(-2)


class BeamDecoder:
    """The T5 decoder run one token at a time for constrained beam search, with the model's own
    weights and modules (exactly its forward pass in eval mode; tests/test_seq2seq.py checks).

    Written out rather than called through `model.decoder`, for savings that were most of
    the decoding time:
    - self-attention keys/values are cached and reordered by each row's parent beam, so a step
      feeds one token instead of the whole prefix;
    - cross-attention keys/values are projected once per query, and the beams of a query are
      folded into the query axis of one attention call instead of repeating the keys per beam;
    - the first step runs once per query (all its beams share the empty prefix);
    - self-attention over the few prefix tokens skips torch's fused kernel (`_prefix_attention`).
    """

    def __init__(self, model: T5, input_ids: torch.Tensor, beam: int):
        self.model, self.beam, self.n_queries = model, beam, input_ids.shape[0]
        states = model.encode(input_ids)
        self.enc_mask = model.padding_mask(input_ids)  # (Q, 1, 1, L)
        self.cross = [b.cross_attn.split(b.cross_attn.kv(states), 2) for b in model.decoder.blocks]
        self.cache: list[tuple[torch.Tensor, torch.Tensor]] = []  # per layer, (rows, heads, fed, d_kv)
        self.fed = 0  # decoder tokens in the cache (the start token counts)

    def __call__(self, prefix: torch.Tensor, parent: torch.Tensor | None, last: int = 1) -> torch.Tensor:
        """Next-token logits for every row (query-major, `beam` rows per query) of `prefix`,
        (rows, vocab); with `last` > 1, those after each of its last `last` lengths, (rows, last, vocab)."""
        rows = prefix.shape[0]
        prefix = prefix.to(self.enc_mask.device)  # the search starts with an empty CPU prefix
        dec = torch.cat([torch.full((rows, 1), PAD, dtype=torch.long, device=prefix.device), prefix.long()], 1)
        if parent is None or not self.cache:
            self.cache, self.fed = [], 0
        else:
            self.cache = [(k[parent], v[parent]) for k, v in self.cache]
        new = dec[:, self.fed:]
        shared_start = prefix.shape[1] == 0 and rows == self.n_queries * self.beam
        if shared_start:  # every beam of a query is the empty prefix: run one row per query
            new = new[:: self.beam]
        logits = self._forward(new, last)
        if shared_start:
            self.cache = [(k.repeat_interleave(self.beam, 0), v.repeat_interleave(self.beam, 0)) for k, v in self.cache]
            logits = logits.repeat_interleave(self.beam, 0)
        return logits if last > 1 else logits[:, 0]

    def _forward(self, tokens: torch.Tensor, last: int) -> torch.Tensor:
        decoder, past = self.model.decoder, self.fed
        bias = decoder.position_bias(tokens.shape[1], past + tokens.shape[1], past)
        x = self.model.shared(tokens)
        cache = []
        for i, block in enumerate(decoder.blocks):
            q, k, v = block.self_attn.split(block.self_attn.qkv(block.self_norm(x)), 3)
            if self.cache:
                k, v = torch.cat([self.cache[i][0], k], 2), torch.cat([self.cache[i][1], v], 2)
            cache.append((k, v))
            x = x + block.self_attn.merge(_prefix_attention(q, k, v, bias))
            (q,) = block.cross_attn.split(block.cross_attn.q(block.cross_norm(x)), 1)
            x = x + block.cross_attn.merge(self._cross(q, i))
            x = x + block.ff(block.ff_norm(x))
        self.cache, self.fed = cache, past + tokens.shape[1]
        return self.model.head(decoder.norm(x[:, -last:]))

    def _cross(self, q: torch.Tensor, layer: int) -> torch.Tensor:
        """Cross-attention of (rows, heads, n, d_kv) queries, the rows of one query folded together."""
        rows, heads, n, d = q.shape
        group = rows // self.n_queries
        q = q.view(self.n_queries, group, heads, n, d).transpose(1, 2).reshape(self.n_queries, heads, group * n, d)
        k, v = self.cross[layer]
        out = F.scaled_dot_product_attention(q, k, v, self.enc_mask.to(q.dtype), scale=1.0)
        return out.view(self.n_queries, heads, group, n, d).transpose(1, 2).reshape(rows, heads, n, d)


def step_function(model: T5, input_ids: torch.Tensor, beam: int) -> Callable:
    """The beam search's step: next-token logits per beam row (see `BeamDecoder`)."""
    return BeamDecoder(model, input_ids, beam)


def decoding_copy(model: T5, dtype: str) -> T5:
    """The model in eval mode with its weights in `dtype` ("float32": the model itself; else a
    cast copy, so that training goes on in float32; "auto": pipeline/precision.py)."""
    dtype = precision.resolve(dtype, next(model.parameters()).device)
    if dtype == "float32":
        return model.eval()
    return copy.deepcopy(model).to(getattr(torch, dtype)).eval()


def decode_workers(workers: int | Literal["auto"], device: torch.device, n_batches: int) -> int:
    """How many batches decode at once (`recommender.train.decode_workers`). auto: on the CPU one
    per thread torch would use, each running its ops on one thread; 1 on a GPU."""
    if workers == "auto":
        workers = torch.get_num_threads() if device.type == "cpu" else 1
    return max(1, min(workers, n_batches))


@contextmanager
def ops_on_one_thread(on: bool) -> Iterator[None]:
    """torch's ops single-threaded inside (the setting is process-wide), restored after."""
    threads = torch.get_num_threads()
    if on:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if on:
            torch.set_num_threads(threads)


@torch.inference_mode()
def recommend(model: T5, trie: ItemTrie, input_ids: torch.Tensor, beam: int, k: int,
              batch_size: int, dtype: str = "float32",
              workers: int | Literal["auto"] = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k items (item indices, -1 where fewer exist) and their log-probabilities, per row,
    decoded on the model's device and returned on the CPU.

    Rows are decoded longest first, so that a batch holds similar lengths and little of the
    encoder's and cross-attention's work goes to padding (1.27x on lfpp); results go back to
    the input's row order. `dtype` "bfloat16" runs the network in bfloat16 (the scores are
    summed in float32): faster where the CPU or GPU has bfloat16 matmuls, with rankings that
    can differ from float32's where two items' scores are close (README: "Decoding and metrics").

    `workers` > 1 (see `decode_workers`) decodes that many batches at once on threads, each with
    torch's ops single-threaded: most of a step's ops are too small for torch to split across
    threads, so one batch at a time left a core idle for much of the search (1.4x on 2 cores,
    README: "Decoding and metrics"). Single-threaded ops may sum in another order than
    multi-threaded ones, so a score can move in its last bits (none did on the embedded models'
    test users); which worker decodes a batch changes nothing."""
    model = decoding_copy(model, dtype)
    device = next(model.parameters()).device
    order = (input_ids != PAD).sum(1).argsort(descending=True, stable=True)
    batches = order.split(batch_size)

    def decode(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.inference_mode():  # per thread: a worker does not inherit the caller's mode
            batch = input_ids[rows]
            batch = batch[:, : int((batch != PAD).sum(1).max())].to(device)  # drop all-pad columns
            found, score = constrained_beam_search(step_function(model, batch, beam), trie, batch.shape[0], beam, k,
                                                   first_token=output_offset(model))
            return found.cpu(), score.cpu()

    n = decode_workers(workers, device, len(batches))
    if n == 1:
        done = [decode(rows) for rows in batches]
    else:
        with ops_on_one_thread(device.type == "cpu"), ThreadPoolExecutor(n) as pool:
            done = list(pool.map(decode, batches))  # longest batches first, results in order
    back = torch.empty_like(order)
    back[order] = torch.arange(len(order))
    return torch.cat([d[0] for d in done])[back], torch.cat([d[1] for d in done])[back]
