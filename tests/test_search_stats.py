"""The one result helper (search.stats.build_result), the failure rule and the reward
diagnostics a result carries: stats of known trees and sample sets on the toy session."""

import math

import numpy as np
import pytest

from specdifftree.rewards.base import DEFAULT_FAILURE_REWARD, RewardBatch, RewardDiagnostics
from specdifftree.search import build
from specdifftree.search.base import Budget, RewardOracle
from specdifftree.search.stats import build_result
from toy_session import TableLM, TableSession
from specdifftree.search.tree import Tree

EOS = 3


def lm():
    return TableLM.random(4, eos_ids=[EOS], seed=11, alpha=0.8)


def prefix_stats(seqs):
    """nodes / max_depth / mean_branching of the prefix tree of ``seqs``, counted from scratch."""
    prefixes = {tuple(s[:i]) for s in seqs for i in range(1, len(s) + 1)}
    children: dict[tuple, int] = {}
    for p in prefixes:
        children[p[:-1]] = children.get(p[:-1], 0) + 1
    return {"nodes": len(prefixes), "max_depth": max(len(p) for p in prefixes),
            "mean_branching": sum(children.values()) / len(children)}


def test_stats_of_a_known_tree_and_sample_set():
    tree = Tree(3, [EOS])
    ends = [tree.add_chain(0, s, [-0.5] * len(s)) for s in [(1, 3), (1, 2, 3), (2, 3)]]
    oracle = RewardOracle(lambda seqs: np.array([math.nan if s == (2, 3) else len(s) for s in seqs]))
    samples = [(1, 3), (1, 3), (2, 3)]
    rewards = oracle(samples)
    res = build_result(tree, oracle, tokens=(1, 3), value=rewards[0], logprob=-1.0,
                       samples=samples, sample_rewards=rewards, best_tokens=(1, 3),
                       best_reward=rewards[0], independent=False, rollouts=3, model_rollouts=2,
                       failed_rollouts=1, tree_exhausted=True)
    # 6 nodes: 1, 1·3, 1·2, 1·2·3, 2, 2·3; the root and nodes 1 have 2 children, 1·2 and 2 one
    assert res.stats == {"rollouts": 3, "nodes": 6, "max_depth": 3, "mean_branching": 1.5,
                         "distinct_samples": 2,
                         # unigrams 3 distinct of 6, bigrams 2 of 3, no trigram
                         "ngram_diversity": pytest.approx((3 / 6 + 2 / 3) / 2),
                         "model_rollouts": 2, "best_reward": 2.0, "failed_rollouts": 1,
                         "tree_exhausted": 1, "samples_independent": 0}
    assert prefix_stats([tree.prefix(e) for e in ends]) == \
        {k: res.stats[k] for k in ("nodes", "max_depth", "mean_branching")}
    assert res.sample_rewards == [2.0, 2.0, DEFAULT_FAILURE_REWARD]
    assert (res.tokens, res.reward, res.best_tokens, res.best_reward) == ((1, 3), 2.0, (1, 3), 2.0)
    # the oracle's counts, copied: one batch of the 2 distinct sequences, one of them NaN
    d = res.reward_diagnostics
    assert (d.calls, d.evaluations, d.failures, d.nonfinite_values, d.last_error) == (1, 2, 0, 1, None)
    assert d == oracle.diagnostics and d is not oracle.diagnostics
    assert oracle.failed((2, 3)) and not oracle.failed((1, 3)) and oracle.failures == 1


def test_greedy_stats_are_those_of_its_one_chain():
    s = TableSession(lm(), 5)
    oracle = RewardOracle(lambda seqs: np.array([float(sum(q)) for q in seqs]))
    res = build("greedy").search(s, oracle, Budget(max_new_tokens=6), np.random.default_rng(0))
    n = len(res.tokens)
    assert res.stats == {"rollouts": 1, "nodes": n, "max_depth": n,
                         "mean_branching": 1.0, "distinct_samples": 1,
                         "ngram_diversity": res.stats["ngram_diversity"], "model_rollouts": 1,
                         "best_reward": float(sum(res.tokens)), "samples_independent": 1}
    assert res.reward_diagnostics == RewardDiagnostics(
        calls=1, evaluations=1, time_s=res.reward_diagnostics.time_s)


@pytest.mark.parametrize("parallel", [1, 3])
def test_best_of_n_stats_are_those_of_its_sample_set(parallel):
    s = TableSession(lm(), 5)
    oracle = RewardOracle(lambda seqs: np.array([float(len(q)) for q in seqs]))
    res = build("best_of_n", parallel_rollouts=parallel).search(
        s, oracle, Budget(rollouts=12, max_new_tokens=6), np.random.default_rng(4))
    assert len(res.samples) == res.stats["rollouts"] == res.stats["model_rollouts"] == 12
    assert {k: res.stats[k] for k in ("nodes", "max_depth", "mean_branching")} == \
        pytest.approx(prefix_stats(res.samples))
    assert res.stats["distinct_samples"] == len(set(res.samples))
    # one reward call per batch of rollouts that holds a sequence not scored before (repeats
    # are answered from the cache)
    seen, calls = set(), 0
    for i in range(0, 12, parallel):
        batch = set(res.samples[i:i + parallel])
        calls += bool(batch - seen)
        seen |= batch
    d = res.reward_diagnostics
    if parallel == 1:
        assert calls < 12  # this seed repeats a sample: the repeat costs no reward call
    assert d.calls == calls and d.evaluations == len(set(res.samples))


@pytest.mark.parametrize("name", ["mcts", "dts", "maxent_ts"])
def test_tree_method_stats_are_those_of_its_tree(name):
    m = build(name, expansion_k=2)
    oracle = RewardOracle(lambda seqs: np.array([float(q[0]) for q in seqs]))
    run = m.run(TableSession(lm(), 5), oracle, Budget(rollouts=15, max_new_tokens=5),
                np.random.default_rng(1))
    res = m._result(run)
    t = run.tree
    depth = t.depth[: t.size]
    kids = [len(c) for c in t.children if c]
    assert res.stats["nodes"] == t.size - 1 and res.stats["max_depth"] == int(depth.max())
    assert res.stats["mean_branching"] == pytest.approx(sum(kids) / len(kids))
    assert res.stats["rollouts"] == 15 and res.stats["failed_rollouts"] == 0
    evaluated = [e for e in range(t.size) if t.terminal[e] and not math.isnan(t.reward[e])]
    assert res.reward_diagnostics.evaluations == len(evaluated)


def test_the_failure_rule():
    b = RewardBatch.of([1.0, math.nan, -math.inf], failure_reward=-5.0)
    assert b.values.tolist() == [1.0, -5.0, -5.0] and b.failed.tolist() == [False, True, True]
    assert b.nonfinite == 2 and b.error is None
    f = RewardBatch.failure(2, "ValueError: bad")
    assert f.values.tolist() == [DEFAULT_FAILURE_REWARD] * 2 and f.failed.all() and f.nonfinite == 0
    with pytest.raises(ValueError, match="finite"):
        RewardBatch(np.array([math.nan]), np.array([True]))  # a batch always holds finite values
    d = RewardDiagnostics()
    d.add(b, 0.5)
    d.add(f, 0.25)
    assert d.row() == {"reward_calls": 2, "reward_evaluations": 5, "reward_failures": 1,
                       "reward_nonfinite_values": 2, "reward_error": "ValueError: bad",
                       "reward_time_s": 0.75}
