"""The search tree, the statistics and the toy table-LM session."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from specdifftree.search.stats import distinct_samples, ngram_diversity, total_variation
from toy_session import (TableLM, TableSession, enumerate_sequences, exact_target,
                                     soft_value)
from specdifftree.search.tree import Tree, log_rest_mass, tail_mass, tree_distribution

EOS = 2


def test_tree_nodes_are_prefixes():
    t = Tree(max_depth=3, eos_ids=[EOS])
    a = t.add_child(0, 1, math.log(0.5))
    assert t.add_child(0, 1, -5.0) == a  # the same prefix is the same node
    end = t.add_chain(a, [0, 0], [math.log(0.25), math.log(0.5)])
    assert t.prefix(end) == (1, 0, 0) and t.depth[end] == 3 and t.terminal[end]
    assert t.find((1, 0)) == t.parent[end] and t.find((0,)) == -1
    assert t.seq_logprob(end) == pytest.approx(math.log(0.5 * 0.25 * 0.5))
    e = t.add_child(0, EOS, math.log(0.1))
    assert t.terminal[e] and not t.terminal[a]
    with pytest.raises(ValueError):
        t.add_child(e, 0, 0.0)  # nothing follows EOS
    # grows past its initial capacity
    big = Tree(max_depth=1000, eos_ids=[EOS], capacity=2)
    last = big.add_chain(0, [0] * 600, [0.0] * 600)
    assert big.size == 601 and big.prefix(last) == (0,) * 600


def test_tree_stats_definitions():
    t = Tree(max_depth=4, eos_ids=[EOS])
    a = t.add_child(0, 0, -1.0)
    t.add_child(0, 1, -1.0)
    t.add_child(0, EOS, -1.0)
    t.add_chain(a, [0, 1], [-1.0, -1.0])
    t.add_child(a, EOS, -1.0)
    # root: 3 children, a: 2, a0: 1 -> mean branching 2
    assert t.stats() == {"nodes": 6, "max_depth": 3, "mean_branching": 2.0}


def test_record_and_closed():
    t = Tree(max_depth=2, eos_ids=[EOS])
    a = t.add_child(0, 0, math.log(0.5))
    b = t.add_child(a, EOS, math.log(1.0))
    path = t.record(b, 3.0)
    assert path == [0, a, b]
    assert t.visits[[0, a, b]].tolist() == [1, 1, 1] and t.value_sum[0] == 3.0
    t.update_closed(path, lambda x: True)
    assert t.closed[b] and t.closed[a] and t.closed[0]
    t2 = Tree(max_depth=2, eos_ids=[EOS])
    c = t2.add_child(0, EOS, 0.0)
    t2.update_closed([0, c], lambda x: True)
    assert not t2.closed[c]  # a terminal is closed only once evaluated


def test_rest_mass_is_exact_for_tiny_and_zero_masses():
    lp = np.log(np.array([1 - 1e-12, 1e-12, 0.0]) + 0.0, where=np.array([True, True, False]),
                out=np.full(3, -np.inf))
    lm = TableLM(lambda p: lp, 3, eos_ids=[EOS])
    s = TableSession(lm)
    t = Tree(max_depth=3, eos_ids=[EOS])
    a = t.add_child(0, 0, lp[0])
    assert log_rest_mass(t, 0, t.kids(0), s) == pytest.approx(math.log(1e-12), rel=1e-9)
    assert tail_mass(t, 0, s) == pytest.approx(math.log(1e-12), rel=1e-9)
    t.add_child(0, 1, lp[1])
    assert math.isnan(t.tail[0])  # cache invalidated by the new child
    assert tail_mass(t, 0, s) == -math.inf  # the only token left has p = 0
    assert log_rest_mass(t, 0, np.array([a]), s) == pytest.approx(math.log(1e-12), rel=1e-9)
    assert log_rest_mass(t, 0, np.array([], dtype=np.int64), s) == 0.0


def test_ngram_diversity_and_distinct():
    assert distinct_samples([(1, 2), (1, 2), (3,)]) == 2
    # unigrams: {1,2,3} / 4 ; bigrams: {(1,2),(2,3)} / 2 ; trigrams: {(1,2,3)} / 1
    assert ngram_diversity([(1, 2, 3), (1,)]) == pytest.approx((3 / 4 + 1 + 1) / 3)
    assert ngram_diversity([(5, 5)] * 4) == pytest.approx((1 / 8 + 1 / 4) / 2)
    assert ngram_diversity([]) == 0.0 and ngram_diversity([()]) == 0.0


@given(st.lists(st.lists(st.integers(0, 4), max_size=6), max_size=6))
def test_ngram_diversity_is_a_ratio(samples):
    d = ngram_diversity(samples)
    assert 0.0 <= d <= 1.0
    if any(samples):
        assert d > 0


def test_total_variation():
    assert total_variation({"a": 1.0}, {"b": 1.0}) == 1.0
    assert total_variation({"a": 0.5, "b": 0.5}, {"a": 0.5, "b": 0.5}) == 0.0


# ---------------------------------------------------------------------- toy session
def test_table_session_token_accounting():
    lm = TableLM.random(3, eos_ids=[EOS], seed=0)
    s = TableSession(lm, prompt_tokens=7)
    assert (s.tokens_processed, s.model_calls) == (7, 1)
    s.logprobs([()])  # the prompt's distribution is always known
    assert (s.tokens_processed, s.model_calls) == (7, 1)
    (ro,) = s.rollout([()], 6, temperature=1.0, rng=np.random.default_rng(0))
    G = len(ro.tokens)
    assert s.tokens_processed == 7 + G - 1 and s.model_calls == 1 + G - 1
    assert ro.finished == (ro.tokens[-1] == EOS)
    before = s.tokens_processed
    lps = s.logprobs([tuple(ro.tokens[:k]) for k in range(G)])  # cached: free
    assert s.tokens_processed == before
    for k, tok in enumerate(ro.tokens):
        assert lps[k, tok] == ro.logprobs[k] == lm(tuple(ro.tokens[:k]))[tok]
    a = next(t for t in range(3) if t not in (EOS, ro.tokens[0]))
    s.logprobs([(a, a, a)])  # shares nothing with the rollout: fed from the prompt
    assert s.tokens_processed == before + 3
    # a rollout feeds only what is missing, then all but the last generated token
    b = s.tokens_processed
    (r1,) = s.rollout([(a, a, a)], 3, temperature=1.0, rng=np.random.default_rng(1))
    assert s.tokens_processed == b + len(r1.tokens) - 1  # log-probs cached: nothing first
    b = s.tokens_processed
    (r2,) = s.rollout([(a, a)], 3, temperature=1.0, rng=np.random.default_rng(2))
    assert s.tokens_processed == b + 1 + len(r2.tokens) - 1  # KV held, log-probs not: 1 token
    with pytest.raises(ValueError):
        s.rollout([(EOS,)], 2, temperature=1.0, rng=np.random.default_rng(0))
    with pytest.raises(ValueError):
        s.rollout([()], 2, temperature=1.0)  # sampling needs an rng


def test_table_session_samples_from_the_table():
    lm = TableLM.fixed([0.2, 0.5, 0.3], eos_ids=[EOS])
    s = TableSession(lm)
    ros = s.rollout([()] * 4000, 1, temperature=1.0, rng=np.random.default_rng(0))
    freq = np.bincount([r.tokens[0] for r in ros], minlength=3) / 4000
    np.testing.assert_allclose(freq, [0.2, 0.5, 0.3], atol=0.03)
    (g,) = s.rollout([()], 4, temperature=0.0)
    assert g.tokens == [1, 1, 1, 1] and not g.finished


def test_table_rows_must_be_distributions():
    with pytest.raises(ValueError):
        TableLM(lambda p: np.zeros(3), 3)(())
    with pytest.raises(ValueError):
        TableLM(lambda p: np.zeros(2), 3)(())


def test_enumeration_and_exact_target():
    lm = TableLM.random(3, eos_ids=[EOS], seed=4, zero_prob=0.3)
    seqs, logps = enumerate_sequences(lm, 4)
    assert np.exp(logps).sum() == pytest.approx(1.0, abs=1e-12)
    assert len(set(seqs)) == len(seqs)
    assert all(s[-1] == EOS or len(s) == 4 for s in seqs)
    r = np.arange(len(seqs), dtype=float) / len(seqs)
    pi = exact_target(seqs, logps, r, 2.0)
    assert sum(pi.values()) == pytest.approx(1.0)
    v = soft_value(logps, r, 2.0)
    for s, lp, ri in zip(seqs, logps, r):
        assert pi[s] == pytest.approx(math.exp(lp + 2.0 * ri - 2.0 * v))


def test_tree_distribution_of_a_complete_tree_is_the_target():
    """Hand-built full tree with exact soft values: the tree's sampler is π exactly."""
    lm = TableLM.random(3, eos_ids=[EOS], seed=2)
    D, lam = 3, 1.5
    seqs, logps = enumerate_sequences(lm, D)
    rewards = {s: math.sin(7 * i) for i, s in enumerate(seqs)}
    t = Tree(D, [EOS])
    for s in seqs:
        node = 0
        for k, tok in enumerate(s):
            node = t.add_child(node, tok, lm(s[:k])[tok])
        t.record(node, rewards[s])

    def v(node):
        if t.terminal[node]:
            return t.value[node]
        kids = t.kids(node)
        vals = np.array([v(c) for c in kids])
        t.value[node] = np.logaddexp.reduce(t.logp[kids] + lam * vals) / lam
        return t.value[node]

    v(0)
    pi = exact_target(seqs, logps, np.array([rewards[s] for s in seqs]), lam)
    assert total_variation(tree_distribution(t, lam), pi) < 1e-12
