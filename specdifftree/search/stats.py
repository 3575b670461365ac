"""Statistics a search reports about its returned samples and its tree.

Definitions (also in docs/search.md):

- ``distinct_samples``: the number of distinct token sequences among the returned samples.
- ``ngram_diversity``: for n = 1, 2, 3, the number of distinct token n-grams over all returned
  samples divided by the total number of n-grams in them (n-grams are taken inside each sample,
  EOS included, never across samples); the mean over the n for which the samples have at least
  one n-gram (0.0 when they have none). 1.0 means no n-gram repeats anywhere; k identical samples
  give at most 1/k.
- ``nodes``, ``max_depth``, ``mean_branching``: see :meth:`specdifftree.search.tree.Tree.stats`
  (non-root nodes; deepest node's depth; mean number of children over nodes with children).

:func:`build_result` is the one place a method's :class:`~specdifftree.search.base.SearchResult`
and its ``stats`` are made: from the tree (the search tree, or the prefix tree of a sample set),
the returned samples, the method's counts, and the oracle's reward diagnostics.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Iterable, Mapping, Sequence

if TYPE_CHECKING:
    from .base import RewardOracle, SearchResult
    from .tree import Tree

NGRAM_ORDERS = (1, 2, 3)


def distinct_samples(samples: Iterable[Sequence[int]]) -> int:
    return len({tuple(int(t) for t in s) for s in samples})


def ngram_diversity(samples: Sequence[Sequence[int]], orders: Sequence[int] = NGRAM_ORDERS) -> float:
    ratios = []
    for n in orders:
        seen: set[tuple[int, ...]] = set()
        total = 0
        for s in samples:
            s = tuple(int(t) for t in s)
            for i in range(len(s) - n + 1):
                seen.add(s[i:i + n])
                total += 1
        if total:
            ratios.append(len(seen) / total)
    return float(sum(ratios) / len(ratios)) if ratios else 0.0


def sample_stats(samples: Sequence[Sequence[int]]) -> dict:
    return {"distinct_samples": distinct_samples(samples),
            "ngram_diversity": ngram_diversity(samples)}


def build_result(tree: "Tree", reward: "RewardOracle", *, tokens: Sequence[int], value: float,
                 logprob: float | None, samples: Sequence[Sequence[int]],
                 sample_rewards: Sequence[float], best_tokens: Sequence[int], best_reward: float,
                 independent: bool, rollouts: int, model_rollouts: int,
                 **extra: int) -> "SearchResult":
    """The :class:`SearchResult` of a search, with its ``stats`` (docs/search.md, "stats"):

    ``rollouts`` (simulations scored), ``nodes``/``max_depth``/``mean_branching`` of ``tree``,
    ``distinct_samples``/``ngram_diversity`` of ``samples``, ``model_rollouts``, ``best_reward``,
    the method's own counts ``extra`` (e.g. ``tree_exhausted``, ``failed_rollouts``), and
    ``samples_independent``; ``reward_diagnostics`` is a copy of the oracle's (an oracle serves
    one search)."""
    from .base import SearchResult

    samples = [tuple(int(t) for t in q) for q in samples]
    stats = {"rollouts": int(rollouts), **tree.stats(), **sample_stats(samples),
             "model_rollouts": int(model_rollouts), "best_reward": float(best_reward),
             **{k: int(v) for k, v in extra.items()}, "samples_independent": int(bool(independent))}
    return SearchResult(tokens=tuple(int(t) for t in tokens), reward=float(value),
                        logprob=None if logprob is None else float(logprob), samples=samples,
                        stats=stats, best_tokens=tuple(int(t) for t in best_tokens),
                        best_reward=float(best_reward),
                        sample_rewards=[float(r) for r in sample_rewards],
                        samples_independent=bool(independent),
                        reward_diagnostics=reward.diagnostics.copy())


def total_variation(p: Mapping, q: Mapping) -> float:
    """½ Σ |p(x) − q(x)| over the union of the supports."""
    keys = set(p) | set(q)
    return 0.5 * math.fsum(abs(p.get(k, 0.0) - q.get(k, 0.0)) for k in keys)
