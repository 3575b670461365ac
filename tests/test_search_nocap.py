"""``method.expansion_k: 0`` or ``null`` means "no cap" for every method that has the key
(``beam``, ``mcts``, ``maxent_ts``, ``dts``, ``dts_star``): it passes config validation, runs, and
expands every token with p_θ > 0."""

import json

import numpy as np
import pytest

from conftest import run_cli
from specdifftree import compose
from specdifftree.runner import execute, prepare
from specdifftree.search import build
from specdifftree.search.base import Budget, RewardOracle
from specdifftree.search.stats import total_variation
from toy_session import (TableLM, TableSession, enumerate_sequences, exact_target,
                                     table_reward)
from specdifftree.search.tree import tree_distribution

CAPPED = ["beam", "mcts", "maxent_ts", "dts", "dts_star"]


@pytest.mark.parametrize("value", ["0", "null"])
@pytest.mark.parametrize("name", CAPPED)
def test_no_cap_passes_validation_and_runs(tmp_path, name, value):
    cfg = compose(["model=tiny_random", f"method={name}", f"method.expansion_k={value}",
                   "num_samples=1", "budget.rollouts=6", "max_new_tokens=6", "max_new_tokens_check=false",
                   "output.progress=false"])
    exp = prepare(cfg)  # config validation and pre-flight
    assert exp.method.name == name
    execute(exp, tmp_path / "run")
    rows = [json.loads(x) for x in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["method"] == name and rows[0]["tokens_processed"] > 0


def test_no_cap_through_the_cli(tmp_path):
    out = run_cli("model=tiny_random", "method=mcts", "method.expansion_k=null", "num_samples=1",
                  "budget.rollouts=4", "max_new_tokens=6", "max_new_tokens_check=false",
                  f"hydra.run.dir={tmp_path}")
    assert out.returncode == 0, out.stderr
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == 1


def test_a_negative_cap_is_still_rejected():
    out = run_cli("model=tiny_random", "method=maxent_ts", "method.expansion_k=-1",
                  "num_samples=1")
    assert out.returncode != 0
    assert "method.expansion_k" in out.stderr and "0 or null = no cap" in out.stderr


# a table with some p_θ = 0 tokens: "every token" means every token with p_θ > 0
ZTABLE = TableLM.random(5, eos_ids=[4], seed=8, zero_prob=0.3)
ZD = 3


def _reward():
    seqs, _ = enumerate_sequences(ZTABLE, ZD)
    r = np.random.default_rng(4).normal(size=len(seqs))
    return seqs, dict(zip(seqs, r))


@pytest.mark.parametrize("name", ["mcts", "maxent_ts"])
@pytest.mark.parametrize("k", [0, None])
def test_no_cap_expands_every_token_with_positive_probability(name, k):
    seqs, table = _reward()
    m = build(name, expansion_k=k)
    run = m.run(TableSession(ZTABLE, 4), RewardOracle(table_reward(table)),
                Budget(rollouts=30, max_new_tokens=ZD), np.random.default_rng(0))
    t = run.tree
    assert t.expanded[0]
    for x in range(t.size):
        if t.expanded[x]:
            finite = set(np.flatnonzero(np.isfinite(ZTABLE(t.prefix(x)))).tolist())
            assert {int(t.token[c]) for c in t.kids(x)} == finite


def test_maxent_ts_without_cap_is_exact_on_an_exhausted_tree():
    """With no cap the exhausted tree holds the whole space, so the soft policy is π exactly
    (with a cap below the vocabulary it is not: tests/test_search_exactness.py)."""
    seqs, table = _reward()
    logps = enumerate_sequences(ZTABLE, ZD)[1]
    pi = exact_target(seqs, logps, np.array([table[s] for s in seqs]), 1.5)
    m = build("maxent_ts", expansion_k=0, lam=1.5)
    run = m.run(TableSession(ZTABLE, 4), RewardOracle(table_reward(table)),
                Budget(tokens=10**9, max_new_tokens=ZD), np.random.default_rng(1))
    assert run.tree.closed[0] and run.meter.done == len(seqs)
    assert total_variation(tree_distribution(run.tree, 1.5), pi) < 1e-9


def test_beam_without_cap_is_beam_with_the_vocabulary_as_width():
    seqs, table = _reward()
    out = []
    for k in (0, None, ZTABLE.vocab_size):
        res = build("beam", expansion_k=k).search(
            TableSession(ZTABLE, 4), RewardOracle(table_reward(table)),
            Budget(max_new_tokens=ZD), np.random.default_rng(0))
        out.append((res.tokens, res.samples))
    assert out[0] == out[1] == out[2]
    assert len(out[0][1]) == ZTABLE.vocab_size  # the final beam is as wide as the vocabulary
