"""Constrained beam search over real item IDs: a prefix trie held as tensors, decoded in batch.

A generative recommender emits an item as its L semantic-ID tokens, one per step. Left alone,
a model can spell a tuple that is no item at all (most of the K^L tuples are empty), and such
a beam would waste a slot of the top list. So decoding walks a trie of the real items' tuples
and only ever extends a beam by a token that some real item continues with: every finished
beam is an item, and since distinct leaves are distinct items, a query's list has no repeats.

The trie is tensors, not dicts, so that one step of the search is a handful of batched ops for
all queries and beams together (the only Python loop is over the L depths):
- at depth d the distinct length-d prefixes are numbered 0..n_d-1 (depth 0: the root, 0);
- `child[d]` is (n_d, width_d): column c stands for token lo_d + c, where [lo_d, lo_d+width_d)
  is the range of tokens seen at position d (token ids carry per-position offsets, so the
  range is contiguous and narrow); the value is the child's node id at depth d+1, -1 if no
  item continues that way;
- `leaf_item` maps the depth-L nodes to item indices.
Dense rows make "which children may follow each beam" one gather; the price is n_d x width_d
int32 per depth (100k items, 256 codes: about 100 MB at the deepest level, usually much less
as the last position is the narrow dedup range).

Scores are sums of log_softmax over the model's whole output layer, so a score is the model's
log-probability of the item's ID, comparable across queries and with a brute-force ranking.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

StepFn = Callable[..., torch.Tensor]


def _as_numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _prefix_ids(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort the rows; return the order and, per sorted row, its prefix's node id at each depth 1..L.

    After a lexicographic sort, rows sharing a length-d prefix are contiguous, so a new node
    starts wherever one of the first d columns changes: a running count of changes numbers them.
    """
    order = np.lexsort(codes.T[::-1])  # lexsort's last key is primary; column 0 must be
    rows = codes[order]
    changed = np.logical_or.accumulate(rows[1:] != rows[:-1], axis=1)  # (n-1, L): prefix d+1 differs
    ids = np.zeros((len(rows), codes.shape[1]), dtype=np.int64)
    ids[1:] = np.cumsum(changed, axis=0)
    return order, ids


class ItemTrie:
    """Prefix trie of all items' token tuples, built once; see the module docstring for the layout."""

    def __init__(self, codes: np.ndarray | torch.Tensor, items: np.ndarray | torch.Tensor | None = None):
        codes = _as_numpy(codes).astype(np.int64, copy=False)
        if codes.ndim != 2 or codes.shape[0] == 0 or codes.shape[1] == 0:
            raise ValueError(f"codes must be a non-empty (n_items, L) array, got shape {codes.shape}")
        if codes.min() < 0:
            raise ValueError("codes must be non-negative token ids")
        n, depth = codes.shape
        items = np.arange(n, dtype=np.int64) if items is None else _as_numpy(items).astype(np.int64)
        if items.shape != (n,):
            raise ValueError(f"items must be ({n},), got {items.shape}")

        order, ids = _prefix_ids(codes)
        rows = codes[order]
        dup = np.flatnonzero(ids[1:, -1] == ids[:-1, -1])
        if len(dup):
            raise ValueError(f"{len(dup)} duplicate token tuples in codes, e.g. {tuple(rows[dup[0] + 1].tolist())}")

        self.depth = depth
        self.n_items = n
        self.lo: list[int] = []
        self.width: list[int] = []
        self.child: list[torch.Tensor] = []
        parent_ids = np.zeros(n, dtype=np.int64)  # every row hangs from the root at depth 0
        for d in range(depth):
            lo, hi = int(rows[:, d].min()), int(rows[:, d].max())
            table = np.full((int(parent_ids[-1]) + 1, hi - lo + 1), -1, dtype=np.int32)
            # Rows sharing a prefix write the same value to the same cell, so duplicates are harmless.
            table[parent_ids, rows[:, d] - lo] = ids[:, d]
            self.lo.append(lo)
            self.width.append(hi - lo + 1)
            self.child.append(torch.from_numpy(table))
            parent_ids = ids[:, d]
        self.leaf_item = torch.from_numpy(np.ascontiguousarray(items[order]))  # leaf ids are 0..n-1 in sorted order
        self._cache: dict[torch.device, tuple[list[torch.Tensor], torch.Tensor]] = {}

    def _on(self, device: torch.device) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The child tables and leaf map on `device`, copied once per device."""
        device = torch.device(device)
        if device.type == "cpu":
            return self.child, self.leaf_item
        if device not in self._cache:
            self._cache[device] = ([c.to(device) for c in self.child], self.leaf_item.to(device))
        return self._cache[device]

    def allowed(self, depth: int, nodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Children of `nodes` (depth-`depth` node ids): (next node ids (N, width) with -1 = not allowed,
        the token each column stands for (width,)). Negative (dead) nodes get an all -1 row."""
        child = self._on(nodes.device)[0][depth]
        nxt = child[nodes.clamp_min(0)].long()
        nxt = nxt.masked_fill((nodes < 0)[:, None], -1)
        tokens = torch.arange(self.lo[depth], self.lo[depth] + self.width[depth], device=nodes.device)
        return nxt, tokens

    def item_of(self, leaf_nodes: torch.Tensor) -> torch.Tensor:
        """Item index of each leaf node id; -1 stays -1."""
        leaf_item = self._on(leaf_nodes.device)[1]
        return torch.where(leaf_nodes >= 0, leaf_item[leaf_nodes.clamp_min(0)], -1)

    def valid(self, tokens: torch.Tensor) -> torch.Tensor:
        """(N, L) token tuples -> (N,) bool: is the tuple a real item's ID."""
        if tokens.ndim != 2 or tokens.shape[1] != self.depth:
            raise ValueError(f"tokens must be (N, {self.depth}), got {tuple(tokens.shape)}")
        nodes = torch.zeros(len(tokens), dtype=torch.long, device=tokens.device)
        for d in range(self.depth):
            nxt, _ = self.allowed(d, nodes)
            col = tokens[:, d].long() - self.lo[d]
            inside = (col >= 0) & (col < self.width[d])
            step = nxt.gather(1, col.clamp(0, self.width[d] - 1)[:, None]).squeeze(1)
            nodes = torch.where(inside, step, -1)
        return nodes >= 0


@torch.no_grad()
def constrained_beam_search(step_fn: StepFn, trie: ItemTrie, n_queries: int, beam: int,
                            k: int, first_token: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k real items per query by the model's log-probability of their ID, best first.

    step_fn(prefix (n_queries*beam, t) long, parent (n_queries*beam,) long or None) returns logits
    (n_queries*beam, vocab). Rows are query-major (row q*beam + j is beam j of query q); parent[r]
    is the row of the previous step's layout that row r extends, for a step_fn that keeps a
    KV cache to reorder (None at the first step, where every row has the empty prefix).
    Logit column j stands for token `first_token` + j (a model whose output layer leaves out
    tokens no item holds, such as user tokens). Where the trie has depths with a single token (a
    modality-transition position), the search appends them to the prefix itself and calls
    step_fn(prefix, parent, n) with n = 1 + their number: it must then return (rows, n, vocab),
    the logits after each of the prefix's last n lengths (those that end before each appended
    token, then the whole prefix). Tries without such depths never pass n.

    Returns (items (n_queries, k) int64, scores (n_queries, k) float32); -1 and -inf where fewer
    than k items could be reached.
    """
    if beam < k:
        raise ValueError(f"beam ({beam}) must be >= k ({k})")
    if n_queries < 1 or k < 1:
        raise ValueError(f"n_queries and k must be >= 1, got {n_queries} and {k}")
    if min(trie.lo) < first_token:
        raise ValueError(f"the trie holds token {min(trie.lo)}, below the logits' first token {first_token}")
    rows = n_queries * beam
    # The device is the logits' device, only known after the first call; the empty prefix is on CPU.
    prefix = torch.zeros((rows, 0), dtype=torch.long)
    parent: torch.Tensor | None = None
    d = 0
    while d < trie.depth:
        forced = _forced_run(trie, d)
        if forced:  # feed the single-token depths with the next call, which scores them too
            prefix = torch.cat([prefix, torch.tensor(forced, device=prefix.device).expand(rows, -1)], dim=1)
            logits = step_fn(prefix, parent, len(forced) + 1)
        else:
            logits = step_fn(prefix, parent)[:, None]
        _check_logits(trie, d, len(forced), logits, rows, first_token)
        if d == 0:
            scores, nodes = _start(n_queries, beam, logits.device)
            prefix = prefix.to(logits.device)
        for j in range(len(forced)):
            scores, nodes = _force(trie, d + j, logits[:, j], scores, nodes, first_token)
        d += len(forced)
        scores, nodes, tokens, parent = _step(trie, d, beam, logits[:, -1], scores, nodes, first_token)
        prefix = torch.cat([prefix[parent], tokens[:, None]], dim=1)
        d += 1

    scores = scores.view(n_queries, beam)[:, :k]  # topk keeps beams sorted, best first
    nodes = nodes.view(n_queries, beam)[:, :k]
    alive = scores > float("-inf")
    items = trie.item_of(torch.where(alive, nodes, -1))
    return items, scores.float()


def _forced_run(trie: ItemTrie, d: int) -> list[int]:
    """The tokens of the single-token depths from d on (e.g. a modality-transition position), if
    a depth with a choice follows them and d > 0 (the first call is the shared empty prefix).

    Every beam takes such a token, so the search appends it without a step of its own and gets
    its log-probability from the next call's logits: one decoder call less per forced depth."""
    end = d
    while end < trie.depth and trie.width[end] == 1:
        end += 1
    return [trie.lo[j] for j in range(d, end)] if 0 < d < end < trie.depth else []


def _check_logits(trie: ItemTrie, d: int, n_forced: int, logits: torch.Tensor, rows: int, first_token: int) -> None:
    need = max(trie.lo[j] + trie.width[j] for j in range(d, d + n_forced + 1)) - first_token
    if logits.ndim != 3 or logits.shape[0] != rows or logits.shape[1] != n_forced + 1 or logits.shape[2] < need:
        shape = tuple(logits.shape) if n_forced else (logits.shape[0], *logits.shape[2:])
        raise ValueError(f"step_fn returned logits of shape {shape} at depth {d}, need ({rows}, "
                         f"{f'{n_forced + 1}, ' if n_forced else ''}>= {need})")


def _force(trie: ItemTrie, d: int, logits: torch.Tensor, scores: torch.Tensor, nodes: torch.Tensor,
           first_token: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Extend every beam by depth d's only token: add its log-probability, move to the child."""
    logp = F.log_softmax(logits.float(), dim=-1)[:, trie.lo[d] - first_token]
    # One column, and every node at depth d continues (each is a prefix of some item).
    return scores + logp, trie._on(logits.device)[0][d][nodes, 0].long()


def _start(n_queries: int, beam: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Beam scores and node ids at the root, (n_queries*beam,) each."""
    # Only beam 0 of each query is live at the root: all beams would otherwise expand to the
    # same children and fill the beam with copies of one item.
    scores = torch.full((n_queries, beam), float("-inf"), device=device)
    scores[:, 0] = 0.0
    return scores.view(-1), torch.zeros(n_queries * beam, dtype=torch.long, device=device)


def _step(trie: ItemTrie, d: int, beam: int, logits: torch.Tensor, scores: torch.Tensor,
          nodes: torch.Tensor, first_token: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Extend every beam by one token at depth d: keep each query's `beam` best (beam, child) pairs.

    Returns the new beam scores, node ids, chosen tokens and parent rows, all (n_queries*beam,).
    Disallowed children and dead beams score -inf; a query with fewer live candidates than
    `beam` gets -inf beams, which stay dead since -inf plus anything is -inf.
    """
    lo, width = trie.lo[d], trie.width[d]
    n_queries = scores.numel() // beam
    # Normalise over the whole output layer, so that the sum is the model's log-probability of the ID.
    logp = F.log_softmax(logits.float(), dim=-1)[:, lo - first_token:lo - first_token + width]
    # Dead beams keep a valid node id (see below), so the child rows can be gathered unchecked.
    nxt = trie._on(logits.device)[0][d][nodes]
    cand = torch.where(nxt >= 0, logp + scores[:, None], float("-inf"))
    top, flat = cand.view(n_queries, beam * width).topk(beam, dim=1)
    src = flat // width  # which beam of its query each winner extends
    parent = (src + torch.arange(n_queries, device=flat.device)[:, None] * beam).view(-1)
    # A -inf winner may be a missing child (-1): park it on node 0; its score keeps it dead.
    new_nodes = nxt.view(n_queries, beam * width).gather(1, flat).view(-1).long().clamp_min(0)
    tokens = (flat % width).view(-1) + lo
    return top.view(-1), new_nodes, tokens, parent
