"""The search tree: a struct of arrays over token prefixes.

Node 0 is the root (the empty continuation of the prompt). Every other node is one token appended
to its parent, so a node *is* the prefix spelled by the tokens on its root path. Per node we keep,
in parallel numpy arrays (grown by doubling):

- ``parent``, ``token``, ``depth``;
- ``logp``: log p_θ(token | parent prefix) at temperature 1 (exact, from the Session);
- ``terminal``: the prefix is a complete continuation (ends with EOS or has ``max_depth`` tokens);
- ``visits`` N(x) and ``value_sum`` W(x): simulations through x and the sum of their rewards;
- ``value``: the method's value estimate v̂(x) (soft value for DTS/MaxEnt-TS, unused by UCT);
- ``reward``: r(x) for evaluated terminal nodes (NaN otherwise);
- ``expanded``: the method's expansion step ran at x (nodes added by a rollout's chain are not);
- ``closed``: nothing below x can still be discovered (see :meth:`Tree.update_closed`);
- ``pending``: a rollout from x is in flight (parallel rollouts);
- ``tail``: cached log of the prior mass of the tokens that are not children of x (NaN = stale);
- ``logopen``, ``logopen_p``: log of the share of the sampler's proposal (of p_θ) below x that is
  still open (not yet evaluated); used by ``dts`` only (0 = nothing evaluated below x).

Children are kept per node in an insertion-ordered ``dict`` token -> node, so a node's children
are vectorised with ``tree.kids(x)`` (an index array) and the per-node arrays.

A rollout's tokens are added as a chain of nodes (:meth:`Tree.add_chain`), with the base-model
log-probs the Session returned for them; nothing is recomputed.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable, Sequence

import numpy as np

from .numerics import gumbel_argmax, log1mexp, logsumexp

# Below this prior mass, "1 - Σ p(children)" is recomputed from the full next-token vector
# instead of by subtraction (which would lose all digits, or go negative with float32 models).
EXACT_REST_MASS = 1e-4
_LOG_EXACT = math.log1p(-EXACT_REST_MASS)

_FIELDS = {
    "parent": (np.int64, -1), "token": (np.int64, -1), "depth": (np.int64, 0),
    "logp": (np.float64, 0.0), "terminal": (np.bool_, False), "visits": (np.int64, 0),
    "value_sum": (np.float64, 0.0), "value": (np.float64, np.nan), "reward": (np.float64, np.nan),
    "expanded": (np.bool_, False), "closed": (np.bool_, False), "pending": (np.bool_, False),
    "tail": (np.float64, np.nan), "logopen": (np.float64, 0.0), "logopen_p": (np.float64, 0.0),
}


class Tree:
    """See the module docstring. ``max_depth`` is the depth limit D (budget.max_new_tokens)."""

    def __init__(self, max_depth: int, eos_ids: Iterable[int], capacity: int = 256):
        self.max_depth = int(max_depth)
        self.eos_ids = frozenset(int(t) for t in eos_ids)
        self._cap = max(2, int(capacity))
        for name, (dtype, fill) in _FIELDS.items():
            setattr(self, name, np.full(self._cap, fill, dtype=dtype))
        self.children: list[dict[int, int]] = [{}]
        self.size = 1  # the root
        self.terminal[0] = self.max_depth <= 0

    # ------------------------------------------------------------------ growth
    def _grow(self) -> None:
        new = self._cap * 2
        for name, (dtype, fill) in _FIELDS.items():
            old = getattr(self, name)
            arr = np.full(new, fill, dtype=dtype)
            arr[: self._cap] = old
            setattr(self, name, arr)
        self._cap = new

    def add_child(self, node: int, token: int, logp: float) -> int:
        """The child of ``node`` for ``token`` (created if absent; the existing one otherwise)."""
        token = int(token)
        kids = self.children[node]
        if token in kids:
            return kids[token]
        if self.terminal[node]:
            raise ValueError(f"node {node} is a complete continuation; nothing can follow it")
        if self.size == self._cap:
            self._grow()
        i = self.size
        self.size += 1
        self.parent[i] = node
        self.token[i] = token
        d = int(self.depth[node]) + 1
        self.depth[i] = d
        self.logp[i] = float(logp)
        self.terminal[i] = token in self.eos_ids or d >= self.max_depth
        self.children.append({})
        kids[token] = i
        self.tail[node] = np.nan  # the children changed
        return i

    def add_chain(self, node: int, tokens: Sequence[int], logps: Sequence[float]) -> int:
        """Append a rollout's tokens below ``node``; returns the last node (``node`` if none)."""
        for t, lp in zip(tokens, logps):
            node = self.add_child(node, int(t), float(lp))
        return node

    # ------------------------------------------------------------------ queries
    def kids(self, node: int) -> np.ndarray:
        return np.fromiter(self.children[node].values(), dtype=np.int64,
                           count=len(self.children[node]))

    def path(self, node: int) -> list[int]:
        """Nodes from the root to ``node``, both included."""
        out = []
        while node >= 0:
            out.append(node)
            node = int(self.parent[node])
        return out[::-1]

    def prefix(self, node: int) -> tuple[int, ...]:
        return tuple(int(self.token[i]) for i in self.path(node)[1:])

    def seq_logprob(self, node: int) -> float:
        """log p_θ of the prefix spelled by ``node`` (sum of the edge log-probs)."""
        return float(sum(float(self.logp[i]) for i in self.path(node)[1:]))

    def find(self, tokens: Sequence[int]) -> int:
        """The node of a prefix, or -1 when it is not in the tree."""
        node = 0
        for t in tokens:
            node = self.children[node].get(int(t), -1)
            if node < 0:
                return -1
        return node

    def mean_value(self, node: int) -> float:
        n = int(self.visits[node])
        return float(self.value_sum[node]) / n if n else math.nan

    # ------------------------------------------------------------------ bookkeeping
    def record(self, end: int, reward: float) -> list[int]:
        """One simulation reached terminal ``end`` with ``reward``: count it on the root path."""
        self.reward[end] = reward
        path = self.path(end)
        idx = np.asarray(path, dtype=np.int64)
        self.visits[idx] += 1
        self.value_sum[idx] += reward
        self.value[end] = reward
        return path

    def update_closed(self, path: Sequence[int], no_new: Callable[[int], bool]) -> None:
        """Recompute ``closed`` bottom-up on ``path`` (root ... leaf).

        A terminal node is closed once evaluated; another node is closed when the method can add
        no new child to it (``no_new(x)``) and all its children are closed. Closed subtrees hold
        nothing undiscovered, so selection skips them and a search whose root closes stops.
        """
        for x in reversed(path):
            if self.terminal[x]:
                c = not math.isnan(self.reward[x])
            else:
                kids = self.kids(x)
                c = kids.size > 0 and bool(self.closed[kids].all()) and no_new(x)
            if not c:
                return  # ancestors cannot be closed either
            self.closed[x] = True

    # ------------------------------------------------------------------ statistics
    def stats(self) -> dict:
        """``nodes`` (excluding the root), ``max_depth``, ``mean_branching`` (see docs/search.md)."""
        n = self.size
        nkids = np.fromiter((len(c) for c in self.children), dtype=np.int64, count=n)
        internal = nkids[nkids > 0]
        return {
            "nodes": int(n - 1),
            "max_depth": int(self.depth[:n].max()) if n else 0,
            "mean_branching": float(internal.mean()) if internal.size else 0.0,
        }


def log_rest_mass(tree: Tree, node: int, included: np.ndarray, session) -> float:
    """log of the prior mass p_θ of the next tokens at ``node`` that are *not* in ``included``
    (an index array of child nodes).

    Computed as log(1 - Σ p) with ``log1mexp`` while that mass is at least ``EXACT_REST_MASS``;
    below, from the node's full next-token log-probs (``session.log_mass_excluding`` on the device
    for a model Session, else ``session.logprobs``; the Session caches the rows of every prefix a
    rollout passed through), so tiny and exactly-zero masses are exact.
    """
    if included.size == 0:
        return 0.0
    lse = logsumexp(tree.logp[included])
    if lse < _LOG_EXACT:
        return log1mexp(lse)
    on_device = getattr(session, "log_mass_excluding", None)
    if on_device is not None:  # a model Session: the sum runs on the device
        return on_device(tree.prefix(node), tree.token[included])
    lp = np.array(session.logprobs([tree.prefix(node)])[0], dtype=np.float64)
    lp[tree.token[included]] = -np.inf
    return logsumexp(lp)


def tail_mass(tree: Tree, node: int, session) -> float:
    """log prior mass of the tokens that are not yet children of ``node`` (cached per node)."""
    t = tree.tail[node]
    if math.isnan(t):
        t = log_rest_mass(tree, node, tree.kids(node), session)
        tree.tail[node] = t
    return float(t)


def soft_policy_logits(tree: Tree, node: int, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """Evaluated children of ``node`` and their log-weights log p_θ(c) + λ·v̂(c)."""
    kids = tree.kids(node)
    kids = kids[tree.visits[kids] > 0]
    return kids, tree.logp[kids] + lam * tree.value[kids]


def sample_from_tree(tree: Tree, lam: float, rng: np.random.Generator) -> int:
    """Draw a terminal node from the tree's estimate of π: at each node pick an evaluated child
    with probability ∝ p_θ(c|x)·exp(λ·v̂(c)) (Gumbel-max), down to a complete continuation."""
    node = 0
    while not tree.terminal[node]:
        kids, logw = soft_policy_logits(tree, node, lam)
        j = gumbel_argmax(logw, rng)
        if j < 0:
            raise RuntimeError("the tree has no evaluated continuation to sample")
        node = int(kids[j])
    return node


def tree_distribution(tree: Tree, lam: float) -> dict[tuple[int, ...], float]:
    """The exact distribution of :func:`sample_from_tree` over complete continuations."""
    out: dict[tuple[int, ...], float] = {}
    stack = [(0, 0.0)]
    while stack:
        node, logq = stack.pop()
        if tree.terminal[node]:
            out[tree.prefix(node)] = out.get(tree.prefix(node), 0.0) + math.exp(logq)
            continue
        kids, logw = soft_policy_logits(tree, node, lam)
        z = logsumexp(logw)
        for c, w in zip(kids, logw):
            if np.isfinite(w):
                stack.append((int(c), logq + float(w) - z))
    return out
