"""Item trie and constrained beam search: tables by hand, exactness against brute force, real items only."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipeline.beam import ItemTrie, constrained_beam_search

PRIMES = (3, 5, 7, 11, 13, 17, 19, 23)


pytestmark = pytest.mark.usefixtures("one_thread")


def make_codes(n: int, depth: int, per_level: int, seed: int = 0) -> np.ndarray:
    """n distinct random tuples, position d's tokens in [d*per_level, (d+1)*per_level) as in real semantic IDs."""
    rng = np.random.default_rng(seed)
    flat = rng.choice(per_level ** depth, size=n, replace=False)
    digits = (flat[:, None] // per_level ** np.arange(depth)[::-1]) % per_level
    return digits + np.arange(depth) * per_level


class HashedModel:
    """A stand-in decoder whose logits depend on the query and on every prefix token (via a hash).

    Rows are query-major with the same number of rows per query, so the same model serves the
    beam search (beam rows per query) and the brute force (one row per item per query).
    """

    def __init__(self, n_queries: int, vocab: int, depth: int, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.n_queries = n_queries
        self.table = 2.0 * torch.randn(depth, vocab, generator=g)
        self.query = torch.randn(n_queries, vocab, generator=g)
        self.mix = 2.0 * torch.randn(97, vocab, generator=g)

    def __call__(self, prefix: torch.Tensor, parent: torch.Tensor | None, last: int = 1) -> torch.Tensor:
        rows, t = prefix.shape
        if last > 1:  # the logits after each of the prefix's last `last` lengths
            return torch.stack([self(prefix[:, :t - last + 1 + j], None) for j in range(last)], dim=1)
        query = torch.arange(rows) // (rows // self.n_queries)
        return self.table[t] + self.query[query] + self.mix[self.hash(prefix)]

    @staticmethod
    def hash(prefix: torch.Tensor) -> torch.Tensor:
        return (prefix * torch.tensor(PRIMES[:prefix.shape[1]], dtype=torch.long)).sum(1) % 97


def brute_force(step_fn, codes: np.ndarray, n_queries: int) -> torch.Tensor:
    """(n_queries, n_items) log-probability of every item's tuple, scoring every prefix of every item."""
    tuples = torch.as_tensor(codes).repeat(n_queries, 1)  # row q*n_items + i: item i for query q
    total = torch.zeros(len(tuples))
    for t in range(codes.shape[1]):
        logp = F.log_softmax(step_fn(tuples[:, :t], None), dim=-1)
        total += logp.gather(1, tuples[:, t:t + 1]).squeeze(1)
    return total.view(n_queries, -1)


# Trie construction.

def test_child_tables_by_hand():
    # Position 0 tokens in 0..3, position 1 in 4..7, position 2 in 8..9; rows deliberately unsorted.
    codes = np.array([[2, 5, 9], [0, 4, 9], [0, 6, 8], [0, 4, 8]])
    trie = ItemTrie(codes, items=np.array([10, 11, 12, 13]))
    assert (trie.depth, trie.n_items) == (3, 4)
    assert trie.lo == [0, 4, 8] and trie.width == [3, 3, 2]
    # Nodes are numbered in sorted prefix order: depth 1: (0,) (2,); depth 2: (0,4) (0,6) (2,5);
    # leaves: (0,4,8) (0,4,9) (0,6,8) (2,5,9).
    assert trie.child[0].tolist() == [[0, -1, 1]]
    assert trie.child[1].tolist() == [[0, -1, 1], [-1, 2, -1]]
    assert trie.child[2].tolist() == [[0, 1], [2, -1], [-1, 3]]
    assert trie.item_of(torch.tensor([0, 1, 2, 3, -1])).tolist() == [13, 11, 12, 10, -1]
    nxt, tokens = trie.allowed(1, torch.tensor([1, -1]))
    assert nxt.tolist() == [[-1, 2, -1], [-1, -1, -1]] and tokens.tolist() == [4, 5, 6]


def test_valid_and_tensor_input():
    codes = make_codes(20, 3, 4, seed=1)
    trie = ItemTrie(torch.as_tensor(codes))
    assert trie.valid(torch.as_tensor(codes)).all()
    missing = np.array([c for c in make_codes(64, 3, 4) if not (codes == c).all(1).any()])
    assert not trie.valid(torch.as_tensor(missing)).any()
    perturbed = torch.as_tensor(codes[:3]).clone()
    perturbed[0, 2] = 99   # outside position 2's token range
    perturbed[1, 0] = 5    # a position-1 token at position 0
    perturbed[2, 1] = -1
    assert trie.valid(perturbed).tolist() == [False, False, False]


def test_duplicate_rows_raise():
    codes = np.array([[0, 3], [1, 4], [0, 3], [1, 4], [1, 4], [2, 3]])
    with pytest.raises(ValueError, match=r"3 duplicate token tuples.*\(0, 3\)"):
        ItemTrie(codes)


def test_bad_shapes_raise():
    with pytest.raises(ValueError):
        ItemTrie(np.zeros((0, 3), dtype=np.int64))
    with pytest.raises(ValueError):
        ItemTrie(np.array([[0, 1]]), items=np.array([0, 1]))


# Beam search.

def test_exact_with_full_beam():
    """beam >= n_items keeps every item alive, so the search is the brute-force ranking of all items."""
    codes = make_codes(15, 3, 3, seed=2)
    items = np.arange(15)[::-1] + 100  # item indices other than row numbers, to check the mapping
    n_queries, vocab = 4, 12
    model = HashedModel(n_queries, vocab, 3)
    found, scores = constrained_beam_search(model, ItemTrie(codes, items), n_queries, beam=15, k=15)
    expected = brute_force(model, codes, n_queries)
    order = expected.argsort(dim=1, descending=True)
    assert found.dtype == torch.int64 and scores.dtype == torch.float32
    assert found.tolist() == items[order.numpy()].tolist()
    torch.testing.assert_close(scores, expected.gather(1, order), atol=1e-5, rtol=0)


def test_logits_may_start_at_a_later_token():
    """A model whose output layer leaves out the tokens below `first_token` gives the same search."""
    codes = make_codes(30, 3, 4, seed=5) + 6  # every token >= 6
    model = HashedModel(3, 20, 3, seed=6)
    full = constrained_beam_search(model, ItemTrie(codes), 3, beam=5, k=5)

    def shifted(prefix, parent):
        logits = model(prefix, parent)
        return torch.cat([logits[:, 6:], logits[:, :6].logsumexp(1, keepdim=True)], 1)  # same normaliser
    found, scores = constrained_beam_search(shifted, ItemTrie(codes), 3, beam=5, k=5, first_token=6)
    assert found.tolist() == full[0].tolist()
    torch.testing.assert_close(scores, full[1])
    with pytest.raises(ValueError, match="below the logits' first token"):
        constrained_beam_search(shifted, ItemTrie(codes - 1), 3, beam=5, k=5, first_token=6)


def test_small_beam_returns_real_items_with_true_scores():
    codes = make_codes(40, 4, 3, seed=3)
    n_queries = 6
    model = HashedModel(n_queries, 14, 4, seed=4)
    found, scores = constrained_beam_search(model, ItemTrie(codes), n_queries, beam=5, k=4)
    assert found.shape == scores.shape == (n_queries, 4)
    assert (found >= 0).all()
    assert all(len(set(row)) == 4 for row in found.tolist())
    assert (scores[:, :-1] >= scores[:, 1:]).all()
    expected = brute_force(model, codes, n_queries)
    torch.testing.assert_close(scores, expected.gather(1, found), atol=1e-5, rtol=0)
    # Beam search is not exhaustive, but here its best item should also be the true best.
    assert (found[:, 0] == expected.argmax(dim=1)).all()


def with_forced(codes: np.ndarray, at: list[int]) -> np.ndarray:
    """`codes` with a single-token column (a transition token) at each position in `at` of the result."""
    out = codes.copy()
    for col in sorted(at):
        out = np.insert(out, col, 0, axis=1)
    out = out - out.min(axis=0)  # then give each position its own token range, as real IDs have
    return out + np.r_[0, np.cumsum(out.max(axis=0) + 1)[:-1]]


@pytest.mark.parametrize("at", [[2], [1, 2], [0, 3], [3]])
def test_single_token_depths_are_fed_with_the_next_call_and_scored_exactly(at):
    """A single-token depth (a modality-transition position) inside the tuple costs no call of its
    own: the next call gets it in the prefix and returns its logits too, so the scores are still the
    model's log-probability of the whole tuple. Leading and trailing ones take the plain path."""
    codes = with_forced(make_codes(20, 3, 3, seed=12), at)
    assert (np.ptp(codes[:, at], axis=0) == 0).all() and len(np.unique(codes, axis=0)) == 20
    trie = ItemTrie(codes)
    n_queries, depth = 3, codes.shape[1]
    model = HashedModel(n_queries, int(codes.max()) + 2, depth, seed=13)
    calls: list[int] = []

    def counted(prefix, parent, last=1):
        calls.append(last)
        return model(prefix, parent, last)

    found, scores = constrained_beam_search(counted, trie, n_queries, beam=20, k=20)
    expected = brute_force(model, codes, n_queries)
    order = expected.argsort(dim=1, descending=True)
    assert found.tolist() == order.tolist()
    torch.testing.assert_close(scores, expected.gather(1, order), atol=1e-5, rtol=0)
    inner = [c for c in at if 0 < c < depth - 1]
    assert len(calls) == depth - len(inner) and sum(calls) == depth


def test_a_step_fn_without_multi_token_logits_is_refused_clearly():
    codes = with_forced(make_codes(8, 2, 3, seed=14), [1])
    model = HashedModel(2, 12, 3, seed=15)
    with pytest.raises(ValueError, match=r"logits of shape \(40, 12\) at depth 1, need \(40, 2, >= 7\)"):
        constrained_beam_search(lambda prefix, parent, last=1: model(prefix, parent), ItemTrie(codes), 2, beam=20, k=5)


def test_fewer_reachable_items_than_k():
    codes = np.array([[0, 3], [1, 4], [1, 5]])
    found, scores = constrained_beam_search(HashedModel(2, 7, 2), ItemTrie(codes), 2, beam=5, k=5)
    assert (found[:, 3:] == -1).all() and torch.isneginf(scores[:, 3:]).all()
    assert sorted(found[0, :3].tolist()) == sorted(found[1, :3].tolist()) == [0, 1, 2]
    assert torch.isfinite(scores[:, :3]).all()


def test_unconstrained_favourites_are_never_returned():
    """The model's best tokens spell no item (or lie outside every position's range); still only real items."""
    codes = make_codes(12, 3, 3, seed=5)
    trie = ItemTrie(codes)
    vocab = 11  # tokens 9 and 10 belong to no position
    favourite = np.array([c for c in make_codes(27, 3, 3) if not (codes == c).all(1).any()][0])

    def trap(prefix: torch.Tensor, parent: torch.Tensor | None) -> torch.Tensor:
        logits = torch.zeros(len(prefix), vocab)
        logits[:, 10] = 50.0
        logits[:, int(favourite[prefix.shape[1]])] = 40.0
        return logits

    found, scores = constrained_beam_search(trap, trie, 3, beam=4, k=4)
    assert (found >= 0).all()
    assert trie.valid(torch.as_tensor(codes)[found.view(-1)]).all()
    torch.testing.assert_close(scores, brute_force(trap, codes, 3).gather(1, found), atol=1e-5, rtol=0)


def test_parent_links_rows_to_their_prefix():
    codes = make_codes(30, 4, 3, seed=6)
    n_queries, beam = 3, 4
    model = HashedModel(n_queries, 12, 4, seed=7)
    seen: list[tuple[torch.Tensor, torch.Tensor | None]] = []

    def recording(prefix: torch.Tensor, parent: torch.Tensor | None) -> torch.Tensor:
        seen.append((prefix.clone(), None if parent is None else parent.clone()))
        return model(prefix, parent)

    constrained_beam_search(recording, ItemTrie(codes), n_queries, beam, k=2)
    assert len(seen) == 4
    assert seen[0][0].shape == (n_queries * beam, 0) and seen[0][1] is None
    rows = torch.arange(n_queries * beam)
    for (before, _), (prefix, parent) in zip(seen, seen[1:]):
        assert parent.shape == (n_queries * beam,)
        assert (parent // beam == rows // beam).all()  # a beam only extends a beam of its own query
        assert torch.equal(prefix[:, :-1], before[parent])


def test_cached_step_fn_matches_cache_free():
    """A step_fn that keeps per-row state and reorders it by `parent` sees the same prefixes."""
    codes = make_codes(30, 4, 3, seed=8)
    n_queries = 3
    model = HashedModel(n_queries, 12, 4, seed=9)

    class Cached:
        def __init__(self):
            self.state: torch.Tensor | None = None

        def __call__(self, prefix: torch.Tensor, parent: torch.Tensor | None) -> torch.Tensor:
            t = prefix.shape[1]
            if parent is None:
                self.state = torch.zeros(len(prefix), dtype=torch.long)
            else:  # extend the parent row's running hash by the one new token, as a KV cache would
                self.state = (self.state[parent] + prefix[:, -1] * PRIMES[t - 1]) % 97
            query = torch.arange(len(prefix)) // (len(prefix) // n_queries)
            return model.table[t] + model.query[query] + model.mix[self.state]

    trie = ItemTrie(codes)
    plain = constrained_beam_search(model, trie, n_queries, beam=4, k=3)
    cached = constrained_beam_search(Cached(), trie, n_queries, beam=4, k=3)
    assert torch.equal(plain[0], cached[0])
    torch.testing.assert_close(plain[1], cached[1])


def test_beam_smaller_than_k_raises():
    with pytest.raises(ValueError, match="beam"):
        constrained_beam_search(HashedModel(1, 7, 2), ItemTrie(np.array([[0, 3], [1, 4]])), 1, beam=2, k=3)


def test_too_narrow_logits_raise():
    trie = ItemTrie(np.array([[0, 3], [1, 4]]))
    with pytest.raises(ValueError, match="logits"):
        constrained_beam_search(lambda prefix, parent: torch.zeros(len(prefix), 4), trie, 1, beam=2, k=2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_search_follows_the_logits_device():
    codes = make_codes(30, 4, 3, seed=10)
    model = HashedModel(3, 12, 4, seed=11)
    trie = ItemTrie(codes)
    cpu = constrained_beam_search(model, trie, 3, beam=4, k=3)
    gpu = constrained_beam_search(lambda p, parent: model(p.cpu(), parent).cuda(), trie, 3, beam=4, k=3)
    assert gpu[0].is_cuda
    assert torch.equal(cpu[0], gpu[0].cpu())
    torch.testing.assert_close(cpu[1], gpu[1].cpu())
