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
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

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


def total_variation(p: Mapping, q: Mapping) -> float:
    """½ Σ |p(x) − q(x)| over the union of the supports."""
    keys = set(p) | set(q)
    return 0.5 * math.fsum(abs(p.get(k, 0.0) - q.get(k, 0.0)) for k in keys)
