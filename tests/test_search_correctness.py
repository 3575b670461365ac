"""Statistical correctness on enumerable toy spaces (fixed seeds: deterministic, not flaky)."""

import numpy as np
import pytest

from specdifftree.search import build
from specdifftree.search.base import Budget, RewardOracle
from specdifftree.search.stats import total_variation
from toy_session import TableLM, TableSession, enumerate_sequences, exact_target
from specdifftree.search.tree import tree_distribution

# 3 ordinary tokens + EOS, at most 5 tokens: 364 complete continuations
TABLE = TableLM.random(4, eos_ids=[3], seed=3, alpha=0.7)
D = 5
SEQS, LOGPS = enumerate_sequences(TABLE, D)
_r = np.random.default_rng(5)
REWARD_TABLE = {s: float(_r.normal()) for s in SEQS}


def reward(seqs):
    return np.array([REWARD_TABLE[tuple(s)] for s in seqs])


def dts_tree(lam, rollouts, seed, **cfg):
    m = build("dts", lam=lam, expansion_k=0, **cfg)
    return m.run(TableSession(TABLE, 4), RewardOracle(reward),
                 Budget(rollouts=rollouts, max_new_tokens=D), np.random.default_rng(seed)).tree


@pytest.mark.parametrize("lam", [0.5, 2.0])
def test_dts_tree_estimate_converges_to_the_exact_target(lam):
    """The tree's own estimate of π (top-down draws ∝ p_θ·exp(λ·v̂), what DTS proposes from):
    both the per-search distance and the distance of its average over searches to the exact π
    shrink as rollouts grow and end below 0.05. (The answer's law: tests/test_search_exactness.py.)"""
    assert len(SEQS) == 364
    pi = exact_target(SEQS, LOGPS, reward(SEQS), lam)
    per_search, marginal = [], []
    for rollouts in (25, 50, 100, 200):
        dists = [tree_distribution(dts_tree(lam, rollouts, seed), lam) for seed in range(6)]
        per_search.append(np.mean([total_variation(d, pi) for d in dists]))
        avg = {}
        for d in dists:
            for k, v in d.items():
                avg[k] = avg.get(k, 0.0) + v / len(dists)
        marginal.append(total_variation(avg, pi))
    assert all(a > b for a, b in zip(per_search, per_search[1:])), per_search
    assert all(a > b for a, b in zip(marginal, marginal[1:])), marginal
    assert per_search[-1] < 0.05 and marginal[-1] < 0.05
    assert per_search[0] > 0.1  # the test can fail: few rollouts are far from π


def test_dts_returned_samples_follow_the_answer_weights():
    m = build("dts", lam=1.0, expansion_k=0)
    run = m.run(TableSession(TABLE, 4), RewardOracle(reward), Budget(rollouts=60, max_new_tokens=D),
                np.random.default_rng(0))
    assert not run.tree.closed[0]
    exact = m.answer_law(run)
    assert sum(exact.values()) == pytest.approx(1.0)
    n = 6000
    m.num_draws = n
    draws, independent = m.draws(run)
    assert not independent  # resamples of one search
    counts = {}
    for d in draws:
        s = run.tree.prefix(d)
        counts[s] = counts.get(s, 0) + 1
    emp = {k: v / n for k, v in counts.items()}
    assert set(emp) <= set(exact)
    assert total_variation(emp, exact) < 0.05


def test_dts_returned_sample_is_one_of_its_draws():
    res = build("dts", lam=1.0, expansion_k=0, num_draws=5).search(
        TableSession(TABLE, 4), RewardOracle(reward), Budget(rollouts=40, max_new_tokens=D),
        np.random.default_rng(0))
    assert res.tokens == res.samples[0] and len(res.samples) == 5
    assert res.reward == REWARD_TABLE[res.tokens]
    assert res.best_reward == max(REWARD_TABLE[s] for s in res.samples + [res.best_tokens])


# ---------------------------------------------------------------------- needle
NEEDLE_TABLE = TableLM.fixed([0.6, 0.25, 0.05, 0.1], eos_ids=[3])  # token 2 is rare
ND = 6
NEEDLE = (2,) * ND  # p_θ = 0.05^6 ≈ 1.6e-8


def needle_reward(seqs):
    """1 for the needle; otherwise 0.5 × (length of the common prefix with it) / ND."""
    out = []
    for s in seqs:
        s = tuple(s)
        if s == NEEDLE:
            out.append(1.0)
            continue
        k = 0
        while k < len(s) and s[k] == NEEDLE[k]:
            k += 1
        out.append(0.5 * k / ND)
    return np.array(out)


def needle_hits(name, seeds=range(20), tokens=400, **cfg):
    hits = 0
    for seed in seeds:
        s = TableSession(NEEDLE_TABLE, 4)
        res = build(name, **cfg).search(s, RewardOracle(needle_reward),
                                        Budget(tokens=tokens, max_new_tokens=ND),
                                        np.random.default_rng(seed))
        assert s.tokens_processed <= tokens + ND - 1
        hits += res.best_reward == 1.0
    return hits


def test_tree_search_finds_the_needle_that_best_of_n_misses():
    """Same token budget (400, ≈ 100 rollouts; the space has 1093 continuations)."""
    bon = needle_hits("best_of_n")
    assert bon <= 1
    for name, cfg in [("mcts", {}), ("dts_star", {"lam": 100.0}),
                      ("maxent_ts", {"lam": 100.0})]:
        hits = needle_hits(name, **cfg)
        assert hits >= 16 and hits > bon, (name, hits)
