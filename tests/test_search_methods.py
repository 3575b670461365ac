"""Every method on the toy table-LM: determinism, budgets, batching, numerics, configuration."""

import math
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from specdifftree.errors import ConfigError
from specdifftree.rewards.base import DEFAULT_FAILURE_REWARD
from specdifftree.search import build, search_methods
from specdifftree.search.build import instantiate_method, settings
from specdifftree.search.base import Budget, RewardOracle
from toy_session import TableLM, TableSession, enumerate_sequences, exact_target, soft_value
from specdifftree.search.stats import total_variation
from specdifftree.search.tree import tree_distribution

REPO = Path(__file__).resolve().parent.parent
EOS = 3
ALL = search_methods()
SAMPLING = ["dts", "maxent_ts", "best_of_n", "sir", "smc"]
TREE = ["mcts", "dts", "dts_star", "maxent_ts"]


def lm():
    return TableLM.random(4, eos_ids=[EOS], seed=11, alpha=0.8)


def hashed_reward(scale=1.0):
    """A deterministic pseudo-random reward of the token sequence."""
    def fn(seqs):
        out = []
        for s in seqs:
            g = np.random.default_rng([99, len(s), *s])
            out.append(scale * g.normal())
        return np.array(out)
    return fn


#: settings a test may give every method; a method without one of them does not get it
GENERIC = {"parallel_rollouts", "lam", "expansion_k"}


def run(name, seed=0, budget=None, reward=None, table=None, prompt=5, **cfg):
    known = settings(type(build(name)))
    cfg = {k: v for k, v in cfg.items() if k in known or k not in GENERIC}
    s = TableSession(table or lm(), prompt)
    oracle = RewardOracle(reward or hashed_reward())
    res = build(name, **cfg).search(s, oracle, budget or Budget(rollouts=25, max_new_tokens=6),
                                    np.random.default_rng(seed))
    return res, s, oracle


def exact_logprob(table, seq):
    return sum(float(table(seq[:k])[t]) for k, t in enumerate(seq))


@pytest.mark.parametrize("name", ALL)
def test_result_contract(name):
    table = lm()
    res, s, oracle = run(name, table=table)
    st = res.stats
    for key in ("rollouts", "nodes", "max_depth", "mean_branching", "distinct_samples",
                "ngram_diversity", "best_reward", "samples_independent"):
        assert key in st, key
        assert isinstance(st[key], (int, float)) and math.isfinite(st[key])
    # the search's reward work travels in the result (the oracle served this search only)
    assert res.reward_diagnostics == oracle.diagnostics
    assert res.reward_diagnostics is not oracle.diagnostics
    assert res.reward_diagnostics.evaluations == len(oracle._cache) >= st["distinct_samples"]
    assert res.reward_diagnostics.failures == res.reward_diagnostics.nonfinite_values == 0
    assert 1 <= st["distinct_samples"] <= len(res.samples)
    assert 0 < st["ngram_diversity"] <= 1
    assert res.tokens and (res.tokens[-1] == EOS or len(res.tokens) == 6)
    assert res.reward == pytest.approx(float(hashed_reward()([res.tokens])[0]))
    assert res.logprob == pytest.approx(exact_logprob(table, res.tokens), abs=1e-12)
    assert res.best_reward >= res.reward and res.best_reward == st["best_reward"]
    assert res.best_reward == pytest.approx(float(hashed_reward()([res.best_tokens])[0]))
    assert st["max_depth"] <= 6
    if name not in ("dts", "maxent_ts", "sir", "smc"):
        assert res.tokens == res.best_tokens
    assert res.sample_rewards == pytest.approx([float(r) for r in hashed_reward()(res.samples)])
    assert res.stats["samples_independent"] == int(res.samples_independent)


@pytest.mark.parametrize("name", ALL)
def test_same_seed_same_output(name):
    a, sa, _ = run(name, seed=3)
    b, sb, _ = run(name, seed=3)
    assert (a.tokens, a.reward, a.logprob, a.samples, a.stats) == (b.tokens, b.reward, b.logprob,
                                                                   b.samples, b.stats)
    assert sa.tokens_processed == sb.tokens_processed


@pytest.mark.parametrize("name", SAMPLING)
def test_different_seeds_different_samples(name):
    outs = {tuple(run(name, seed=seed)[0].samples) for seed in range(4)}
    assert len(outs) == 4


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("tokens", [3, 40, 157])
@pytest.mark.parametrize("parallel", [1, 4])
def test_token_budget_is_exceeded_by_at_most_one_rollout(name, tokens, parallel):
    D = 6
    res, s, _ = run(name, budget=Budget(tokens=tokens, max_new_tokens=D), parallel_rollouts=parallel)
    # one rollout processes at most D - 1 tokens (prefix + generated tokens but the last)
    assert s.tokens_processed <= max(tokens, s.prompt_tokens) + D - 1
    assert res.stats["rollouts"] >= 1


@pytest.mark.parametrize("name", ["best_of_n", "mcts", "dts", "dts_star", "maxent_ts"])
def test_rollout_budget_and_token_budget(name):
    res, s, _ = run(name, budget=Budget(rollouts=7, max_new_tokens=6))
    assert res.stats["rollouts"] == 7
    # a token budget alone (rollouts None) is not capped by any rollout count
    res, s, _ = run(name, budget=Budget(tokens=400, max_new_tokens=6))
    assert res.stats["rollouts"] > 20
    assert s.tokens_processed >= 400 or res.stats.get("tree_exhausted") == 1
    # both: whichever runs out first
    res, s, _ = run(name, budget=Budget(rollouts=3, tokens=400, max_new_tokens=6))
    assert res.stats["rollouts"] == 3


@pytest.mark.parametrize("name", ["best_of_n", "mcts", "dts", "dts_star", "maxent_ts", "sir", "smc"])
def test_no_budget_at_all_is_one_config_error(name):
    # nothing would stop the search: one line naming both budget keys
    with pytest.raises(ConfigError, match="budget.rollouts and budget.tokens are both null"):
        run(name, budget=Budget(max_new_tokens=6))


@pytest.mark.parametrize("name", ["greedy", "beam"])
def test_greedy_and_beam_need_no_rollout_budget(name):
    # greedy makes one rollout, beam's work is fixed by k and D: no budget is needed
    res, _, _ = run(name, budget=Budget(max_new_tokens=6))
    assert res.tokens


def test_tree_methods_stop_when_the_space_is_exhausted():
    table = TableLM.random(3, eos_ids=[2], seed=0)
    for name in TREE:
        s = TableSession(table, 2)
        res = build(name, expansion_k=3).search(s, RewardOracle(hashed_reward()),
                                                Budget(tokens=10**9, max_new_tokens=3),
                                                np.random.default_rng(0))
        assert res.stats["tree_exhausted"] == 1
        seqs, _ = enumerate_sequences(table, 3)
        assert res.best_reward == max(hashed_reward()(seqs))


@pytest.mark.parametrize("name", ["best_of_n", "mcts", "dts", "dts_star", "maxent_ts"])
def test_rewards_are_batched_per_step(name):
    sizes = []
    base = hashed_reward()

    def fn(seqs):
        sizes.append(len(seqs))
        return base(seqs)

    res, s, oracle = run(name, reward=fn, budget=Budget(rollouts=24, max_new_tokens=6),
                         parallel_rollouts=4)
    assert max(sizes) > 1 and max(sizes) <= 4
    assert res.reward_diagnostics.calls == len(sizes) <= 24 // 4 + 2
    assert res.reward_diagnostics.evaluations == sum(sizes)


def test_beam_scores_its_hypotheses_in_one_batch_and_keeps_the_width():
    sizes = []
    base = hashed_reward()

    def fn(seqs):
        sizes.append(len(seqs))
        return base(seqs)

    res, s, _ = run("beam", reward=fn, expansion_k=3)
    assert sizes == [3] and len(res.samples) == 3
    # the beam holds the 3 most likely complete sequences of this table
    table = lm()
    seqs, logps = enumerate_sequences(table, 6)
    top = [seqs[i] for i in np.argsort(-logps)[:3]]
    assert len(set(top) & set(res.samples)) >= 2


def test_beam_under_a_tight_token_budget_still_answers():
    res, s, _ = run("beam", budget=Budget(tokens=8, max_new_tokens=6), expansion_k=4, prompt=5)
    assert res.stats["budget_stopped"] == 1 and res.tokens
    assert s.tokens_processed <= 8 + 5


# ---------------------------------------------------------------------- numerics
@pytest.mark.parametrize("lam", [1e-3, 1.0, 1e3])
@pytest.mark.parametrize("scale", [1.0, 1e6])
def test_soft_methods_are_exact_on_an_exhausted_tree(lam, scale):
    """λ from 1e-3 to 1e3, rewards up to ±1e6 and p_θ = 0 tokens: a fully explored DTS tree gives
    the exact soft value and exactly π."""
    table = TableLM.random(3, eos_ids=[2], seed=5, zero_prob=0.4)
    D = 4
    reward = hashed_reward(scale)
    seqs, logps = enumerate_sequences(table, D)
    r = reward(seqs)
    pi = exact_target(seqs, logps, r, lam)
    for name in ("dts", "maxent_ts"):
        s = TableSession(table, 2)
        m = build(name, lam=lam, expansion_k=3)
        out = m.run(s, RewardOracle(reward), Budget(tokens=10**9, max_new_tokens=D),
                    np.random.default_rng(1))
        t = out.tree
        assert t.closed[0]
        assert t.value[0] == pytest.approx(soft_value(logps, r, lam), rel=1e-9, abs=1e-9 * scale)
        assert total_variation(tree_distribution(t, lam), pi) < 1e-9
        assert np.isfinite(t.value[: t.size][t.visits[: t.size] > 0]).all()


@pytest.mark.parametrize("name", ALL)
def test_nan_rewards_get_the_failure_reward_and_are_counted(name):
    base = hashed_reward()

    def fn(seqs):
        r = base(seqs)
        r[[len(s) % 2 == 0 for s in seqs]] = np.nan  # every even-length sequence
        return r

    res, s, oracle = run(name, reward=fn, budget=Budget(rollouts=30, max_new_tokens=6))
    assert math.isfinite(res.reward) and math.isfinite(res.best_reward)
    assert all(math.isfinite(v) for v in res.stats.values())
    diag = res.reward_diagnostics
    even = [k for k in oracle._cache if len(k) % 2 == 0]
    assert diag.nonfinite_values == len(even) == oracle.failures and diag.failures == 0
    # the one failure rule: a NaN gets the default failure_reward and is flagged failed
    assert all(oracle.failed(k) and oracle([k])[0] == DEFAULT_FAILURE_REWARD for k in even)
    for q, r in zip(res.samples, res.sample_rewards):
        assert r == (DEFAULT_FAILURE_REWARD if len(q) % 2 == 0 else hashed_reward()([q])[0])
    if diag.nonfinite_values and diag.evaluations > diag.nonfinite_values:
        assert len(res.best_tokens) % 2 == 1  # a NaN never wins over a finite reward


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("lam", [1e-3, 1e3])
def test_extreme_temperatures_and_rewards_run_clean(name, lam):
    table = TableLM.random(4, eos_ids=[EOS], seed=3, zero_prob=0.3)
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # no overflow or NaN
        # λ goes to the methods that have one (mcts, best_of_n, greedy, beam take no λ)
        res, s, _ = run(name, table=table, reward=hashed_reward(1e6), lam=lam,
                        budget=Budget(rollouts=40, max_new_tokens=6))
    assert math.isfinite(res.reward) and math.isfinite(res.logprob)


# ---------------------------------------------------------------------- configuration
@pytest.mark.parametrize("bad", [
    ("dts", {"lam": 0}), ("dts", {"lam": float("nan")}), ("sir", {"num_draws": 0}),
    ("mcts", {"expansion": "widest"}), ("mcts", {"expansion_k": -1}),
    ("mcts", {"answer": "sample"}), ("maxent_ts", {"epsilon": -1}),
    ("best_of_n", {"rollout_temperature": -1}), ("beam", {"expansion_k": 1.5}),
    ("dts", {"parallel_rollouts": "two"}),
])
def test_bad_config_values_raise_config_error(bad):
    name, cfg = bad
    with pytest.raises(ConfigError, match=r"method\."):
        build(name, **cfg)


@pytest.mark.parametrize("name,old,new", [
    ("dts", "temperature", "method.lam"), ("sir", "temperature", "method.lam"),
    ("mcts", "temperature", "method.lam"), ("smc", "num_samples", "method.num_draws"),
    ("greedy", "num_samples", "method.num_draws"), ("best_of_n", "num_rollouts", "budget.rollouts"),
    ("dts_star", "num_rollouts", "budget.rollouts"),
])
def test_old_method_keys_name_their_new_key(name, old, new):
    # the seed project's colliding names are not accepted: one line naming the new key
    with pytest.raises(ConfigError) as exc:
        build(name, **{old: 1})
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith(f"method.{old} ") and new in msg
    if old == "temperature":
        assert "method.rollout_temperature" in msg  # the sampling temperature is another key
    if old == "num_samples":
        assert "top-level num_samples" in msg  # the series count keeps its name


def test_a_class_that_takes_an_old_name_still_gets_it():
    # RENAMED only speaks for keys the class does not take (a user's method may take them)
    from specdifftree.search.build import check_keys

    class Mine:
        def __init__(self, temperature: float = 1.0, num_samples: int = 2):
            pass

    check_keys(Mine, "mine", ["temperature", "num_samples"])
    with pytest.raises(ConfigError, match="budget.rollouts"):
        check_keys(Mine, "mine", ["num_rollouts"])


def test_unknown_method_and_bad_budget():
    with pytest.raises(ConfigError, match="unknown"):
        build("bogus")
    with pytest.raises(ConfigError, match="budget.rollouts"):
        run("dts", budget=Budget(rollouts=0, max_new_tokens=4))
    with pytest.raises(ConfigError, match="max_new_tokens"):
        run("mcts", budget=Budget(rollouts=3, max_new_tokens=0))


@pytest.mark.parametrize("name", ALL)
def test_method_configs_instantiate(name):
    from hydra.utils import get_class

    cfg = OmegaConf.load(REPO / "specdifftree" / "conf" / "method" / f"{name}.yaml")
    assert cfg.name == name
    # Hydra's instantiate: _target_ = the class, the other keys = its arguments (the runner keeps
    # name and the answer rules it applies itself)
    method = instantiate_method(OmegaConf.to_container(cfg))
    assert isinstance(method, get_class(cfg._target_))
    assert method.name == name
    res = method.search(TableSession(lm(), 3), RewardOracle(hashed_reward()),
                        Budget(tokens=60, max_new_tokens=5), np.random.default_rng(0))
    assert res.tokens


@pytest.mark.parametrize("name,cfg", [
    ("mcts", {"expansion": "sample"}), ("dts", {"answer": "best"}),
    ("maxent_ts", {"answer": "sample"}), ("dts", {"expansion_k": 2}),
    ("dts_star", {"expansion_k": 0}), ("mcts", {"rollout_temperature": 0.0}),
])
def test_method_options(name, cfg):
    table = lm()
    res, s, _ = run(name, table=table, **cfg)
    assert res.logprob == pytest.approx(exact_logprob(table, res.tokens), abs=1e-12)
    if cfg.get("answer") == "best":
        assert res.tokens == res.best_tokens
    if cfg.get("answer") == "sample":
        assert res.tokens == res.samples[0]
    if name == "dts" and cfg.get("expansion_k") == 2:
        out = build(name, **cfg).run(TableSession(table, 5), RewardOracle(hashed_reward()),
                                     Budget(rollouts=40, max_new_tokens=6), np.random.default_rng(0))
        t = out.tree
        assert max(len(c) for c in t.children[: t.size]) <= 2


def test_mcts_expansions_differ_between_topk_and_sample():
    table = lm()
    a = build("mcts", expansion_k=2).run(TableSession(table, 5), RewardOracle(hashed_reward()),
                                         Budget(rollouts=30, max_new_tokens=6), np.random.default_rng(0))
    lp0 = table(())
    top2 = set(np.argsort(-lp0)[:2].tolist())
    assert set(a.tree.children[0]) == top2  # top-k of p_θ at the root
    seen = set()
    for seed in range(10):
        b = build("mcts", expansion_k=2, expansion="sample").run(
            TableSession(table, 5), RewardOracle(hashed_reward()),
            Budget(rollouts=3, max_new_tokens=6), np.random.default_rng(seed))
        seen.add(frozenset(b.tree.children[0]))
    assert len(seen) > 1  # sampled expansions vary with the seed
