"""Exact by default: every method that claims π as its target reaches it on a vocabulary larger
than any expansion cap, ``dts`` is exactly p_θ with equal rewards at every budget, failed rewards
never reach the value normalisation (toy table-LM and the real Session on the tiny model)."""

import math
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from specdifftree.search import build
from specdifftree.rewards.base import RewardBatch
from specdifftree.search.base import Budget, RewardOracle
from specdifftree.search.stats import total_variation
from toy_session import (TableLM, TableSession, enumerate_sequences, exact_target,
                                     table_reward)
from specdifftree.search.tree import tree_distribution

REPO = Path(__file__).resolve().parent.parent
# the benchmark's space (experiments/bench_exactness.py): 6 tokens + EOS, at most 4 tokens
BIG = TableLM.random(7, eos_ids=[6], seed=11, alpha=1.0)
BD = 4
BSEQS, BLOGPS = enumerate_sequences(BIG, BD)
_g = np.random.default_rng(7)
BREWARD = {s: float(_g.random()) for s in BSEQS}
# methods whose answer claims π as its law (smc: an approximate sampler, tested on its own)
SAMPLERS = ["dts", "sir"]


def default_config(name: str) -> dict:
    cfg = OmegaConf.to_container(OmegaConf.load(REPO / "specdifftree" / "conf" / "method" /
                                                f"{name}.yaml"))
    return {k: v for k, v in cfg.items() if k not in ("name", "_target_")}


def averaged(laws):
    out = {}
    for law in laws:
        for k, v in law.items():
            out[k] = out.get(k, 0.0) + v / len(laws)
    return out


def floor(pi, draws, rng):
    """TV of an exact sampler's empirical law from the same number of draws (the noise of the
    measurement itself)."""
    keys = list(pi)
    p = np.array([pi[k] for k in keys])
    c = rng.multinomial(draws, p / p.sum())
    return total_variation(dict(zip(keys, c / draws)), pi)


# ---------------------------------------------------------------------- equal rewards
@pytest.mark.parametrize("lam", [0.5, 10.0])
@pytest.mark.parametrize("beta", [0.0, 0.5])
def test_dts_with_equal_rewards_has_normaliser_exactly_n(lam, beta):
    """Every simulation adds exactly p_θ·exp(λc) of mass when r ≡ c: the self-normalised
    answer is then an unbiased, exact draw of p_θ at every budget."""
    c = 0.3
    for seed in range(3):
        m = build("dts", lam=lam, defensive=beta)
        run = m.run(TableSession(BIG, 4), RewardOracle(lambda s: np.full(len(s), c)),
                    Budget(rollouts=40, max_new_tokens=BD), np.random.default_rng(seed))
        _, logw = m.answer_weights(run)
        total = float(np.exp(logw - lam * c).sum())
        assert total == pytest.approx(40.0, rel=1e-9)


def _searches(name, cfg, table, D, reward, budget, seeds):
    """Averaged law of the answer (full sequences) and of the tree's own top-down draw, over
    ``seeds`` searches through the table session (numpy sampler: same algorithm and token
    accounting as the model Session, faster draws)."""
    m = build(name, **cfg)
    laws, tree_laws = [], []
    for seed in range(seeds):
        session, rng = TableSession(table, 4, sampler="numpy"), np.random.default_rng(seed)
        if name in ("sir", "smc"):
            laws.append(m.answer_law(session, RewardOracle(reward), budget, rng))
            continue
        run = m.run(session, RewardOracle(reward), budget, rng)
        laws.append(m.answer_law(run))
        tree_laws.append(tree_distribution(run.tree, m.lam))
    return averaged(laws), (averaged(tree_laws) if tree_laws else None)


@pytest.mark.slow
def test_dts_with_equal_rewards_returns_p_theta_at_16_rollouts():
    """Equal rewards, default dts, 16 rollouts. 3 tokens + EOS, depth 4 (121 continuations),
    2000 searches: the law of the whole returned sequence is within TV 0.02 of p_θ; the tree's
    own top-down distribution (renormalised over the children seen, the old answer) is not.
    6 tokens + EOS, depth 4 (1555 continuations), 1000 searches: within 0.02 of p_θ beyond the
    TV an exact sampler shows with the same number of draws (16 000 draws of 1555
    continuations carry about 0.1 of pure noise)."""
    table = TableLM.random(4, eos_ids=[3], seed=3, alpha=0.7)
    D = 4
    seqs, logps = enumerate_sequences(table, D)
    p = exact_target(seqs, logps, np.zeros(len(seqs)), 1.0)
    law, tree_law = _searches("dts", default_config("dts"), table, D, table_reward({}),
                              Budget(rollouts=16, max_new_tokens=D), 2000)
    tv = total_variation(law, p)
    assert tv < 0.02, tv
    # the same criterion rejects the tree's own top-down law: the test can fail
    assert total_variation(tree_law, p) > 0.04
    # the benchmark's space
    pb = exact_target(BSEQS, BLOGPS, np.zeros(len(BSEQS)), 1.0)
    law, _ = _searches("dts", default_config("dts"), BIG, BD, table_reward({}),
                       Budget(rollouts=16, max_new_tokens=BD), 1000)
    fl = floor(pb, 16 * 1000, np.random.default_rng(0))
    assert total_variation(law, pb) < fl + 0.02, (total_variation(law, pb), fl)


# ---------------------------------------------------------------------- defaults reach π
@pytest.mark.slow
@pytest.mark.parametrize("lam", [0.5, 2.0, 10.0])
@pytest.mark.parametrize("name", SAMPLERS)
def test_default_samplers_reach_pi_on_the_whole_sequence_law(name, lam):
    """Default config (specdifftree/conf/method/*.yaml) of every method that claims π as its
    target; 6 tokens + EOS, depth 4 (1555 continuations, far more than any expansion cap), 256
    rollouts, 300 searches: the law of the whole returned sequence is within TV 0.05 of π
    (measurement noise included: an exact sampler's 256 × 300 draws show about 0.03)."""
    pi = exact_target(BSEQS, BLOGPS, np.array([BREWARD[s] for s in BSEQS]), lam)
    law, _ = _searches(name, {**default_config(name), "lam": lam}, BIG, BD,
                       table_reward(BREWARD), Budget(rollouts=256, max_new_tokens=BD), 300)
    tv = total_variation(law, pi)
    assert tv < 0.05, (name, lam, tv)


@pytest.mark.slow
def test_smc_is_an_approximate_sampler_as_documented():
    """smc claims an approximate π (docs/search.md: TV 0.035 at λ = 0.5 and 2, 0.20 at λ = 10,
    256 rollouts, 1000 seeds, on the space above): 400 seeds land in those ranges."""
    for lam, lo, hi in ((2.0, 0.0, 0.06), (10.0, 0.14, 0.27)):
        pi = exact_target(BSEQS, BLOGPS, np.array([BREWARD[s] for s in BSEQS]), lam)
        law, _ = _searches("smc", {**default_config("smc"), "lam": lam}, BIG, BD,
                           table_reward(BREWARD), Budget(rollouts=256, max_new_tokens=BD), 400)
        tv = total_variation(law, pi)
        assert lo <= tv < hi, (lam, tv)


def test_maxent_ts_default_is_an_optimiser():
    """maxent_ts targets r: its default answer is the best-reward continuation the search
    evaluated, and neither that answer nor its tree's soft policy has π's law."""
    lam = 2.0
    pi = exact_target(BSEQS, BLOGPS, np.array([BREWARD[s] for s in BSEQS]), lam)
    m = build("maxent_ts", **{**default_config("maxent_ts"), "lam": lam})
    answers, soft = {}, []
    for seed in range(40):
        session = TableSession(BIG, 4, sampler="numpy")
        run = m.run(session, RewardOracle(table_reward(BREWARD)),
                    Budget(rollouts=64, max_new_tokens=BD), np.random.default_rng(seed))
        res = m._result(run)
        evaluated = [run.tree.prefix(e) for e in range(run.tree.size)
                     if run.tree.terminal[e] and not math.isnan(run.tree.reward[e])]
        assert res.tokens == res.best_tokens
        assert res.reward == max(BREWARD[s] for s in evaluated)
        answers[res.tokens] = answers.get(res.tokens, 0) + 1 / 40
        soft.append(tree_distribution(run.tree, lam))
    assert total_variation(answers, pi) > 0.5
    assert total_variation(averaged(soft), pi) > 0.2


def test_dts_exhausts_the_space_and_is_then_exact():
    """With no cap the root closes once every continuation is evaluated; the answer is then an
    exact draw of π (tree_exhausted = 1 means the whole space)."""
    table = TableLM.random(4, eos_ids=[3], seed=5, zero_prob=0.3)
    D = 3
    seqs, logps = enumerate_sequences(table, D)
    r = np.random.default_rng(2).normal(size=len(seqs))
    pi = exact_target(seqs, logps, r, 2.0)
    m = build("dts", lam=2.0)
    run = m.run(TableSession(table, 4), RewardOracle(table_reward(dict(zip(seqs, r)))),
                Budget(tokens=10**9, max_new_tokens=D), np.random.default_rng(0))
    assert run.tree.closed[0] and run.meter.done == len(seqs)
    assert total_variation(m.answer_law(run), pi) < 1e-9


def test_maxent_ts_soft_policy_is_not_pi_with_top_k_below_the_vocabulary():
    """maxent_ts is an optimiser: its soft-policy draws equal π only when every node holds every
    token; with top-k < vocabulary a fully explored tree is still not π (docs/search.md)."""
    table = TableLM.random(4, eos_ids=[3], seed=5)
    D = 3
    seqs, logps = enumerate_sequences(table, D)
    r = np.random.default_rng(2).normal(size=len(seqs))
    pi = exact_target(seqs, logps, r, 1.0)
    for k, exact in ((2, False), (4, True)):
        m = build("maxent_ts", lam=1.0, expansion_k=k)
        run = m.run(TableSession(table, 4), RewardOracle(table_reward(dict(zip(seqs, r)))),
                    Budget(tokens=10**9, max_new_tokens=D), np.random.default_rng(0))
        assert run.tree.closed[0]
        tv = total_variation(tree_distribution(run.tree, 1.0), pi)
        assert (tv < 1e-9) if exact else (tv > 0.05), (k, tv)


# ---------------------------------------------------------------------- failed rewards
NEEDLE_TABLE = TableLM.fixed([0.6, 0.25, 0.05, 0.1], eos_ids=[3])
ND = 6


def needle_reward(first: str | None):
    """The needle reward; ``first``: what the first rollout's reward is — None (its real value),
    "nan", or "flagged" (a finite stand-in of +1e6, flagged failed in a RewardBatch, as the
    runner's reward wrapper does), or "floor" (−1e9, unflagged: a bad reward kept as a value)."""
    state = {"n": 0}

    def fn(seqs):
        out, mask = [], []
        for s in seqs:
            s = tuple(s)
            state["n"] += 1
            k = 0
            while k < len(s) and s[k] == 2:
                k += 1
            v = 1.0 if s == (2,) * ND else 0.5 * k / ND
            bad = False
            if state["n"] == 1 and first is not None:
                v, bad = {"nan": (math.nan, False), "flagged": (1e6, True),
                          "floor": (-1e9, False)}[first]
            out.append(v)
            mask.append(bad)
        if any(mask):
            return RewardBatch(np.array(out), np.array(mask))
        return np.array(out)
    return fn


@pytest.mark.parametrize("name,cfg", [("mcts", {}), ("dts_star", {"lam": 100.0})])
def test_one_nan_reward_leaves_search_quality_unchanged(name, cfg):
    """One NaN among finite rewards (the very first rollout) is dropped. Seed by seed the search
    is the same search as one whose oracle drops that rollout (flagged failed with a stand-in of
    +1e6, which would dominate the min–max range if it entered it): same answer, same reward
    range, same tree values. Its quality equals that of the search with no failure (needle
    found as often). Kept as a value instead (−1e9, the old stand-in), the same rollout squashes
    every real reward into ~1e-9 of the scale and the needle is lost: the test can fail."""
    hits, refs = {}, {}
    for first in (None, "nan", "flagged", "floor"):
        h = 0
        for seed in range(20):
            fn = needle_reward(first)
            m = build(name, **cfg)
            oracle = RewardOracle(fn)
            run = m.run(TableSession(NEEDLE_TABLE, 4), oracle,
                        Budget(tokens=250, max_new_tokens=ND), np.random.default_rng(seed))
            res = m._result(run)
            h += res.best_reward == 1.0
            if first in ("nan", "flagged"):
                # one failed sequence (a later rollout may reach it again: dropped again)
                assert oracle.failures == 1 and run.failed >= 1
                assert run.rmin >= 0.0 and math.isfinite(res.best_reward)
                n = run.tree.size
                state = (res.tokens, res.best_reward, run.rmin, run.rmax,
                         run.tree.visits[:n].tolist(), run.tree.value_sum[:n].tolist(),
                         np.nan_to_num(run.tree.value[:n], nan=7.0).tolist())
                if first == "nan":
                    refs[seed] = state
                else:
                    assert state == refs[seed], seed
        hits[first] = h
    assert hits["nan"] == hits["flagged"] == hits[None] >= 18, hits
    assert hits["floor"] <= 5, hits


def test_failed_rewards_from_the_reward_wrapper_are_dropped():
    """The runner's reward wrapper turns a failure into failure_reward; its batch carries the
    flags to the oracle, so the stand-in is marked failed like a NaN."""
    from specdifftree.rewards.build import SafeReward

    def raw(forecasts, texts, valid, ctx):
        return np.array([math.nan if t == "bad" else 1.0 for t in texts])

    safe = SafeReward(raw, "t", failure_reward=-1000.0)
    texts = {(1,): "ok", (2,): "bad"}
    oracle = RewardOracle(lambda seqs: safe.score(np.zeros((len(seqs), 1)),
                                                  [texts[s] for s in seqs], np.ones(len(seqs)),
                                                  None))
    assert list(oracle([(1,), (2,)])) == [1.0, -1000.0]
    assert oracle.failed((2,)) and not oracle.failed((1,)) and oracle.failures == 1


# ---------------------------------------------------------------------- the real Session
def test_dts_reaches_pi_through_the_real_session():
    """tiny_random (character vocabulary of ~100 tokens, far above any cap), depth 2, a reward
    of the first token only, so the answer's first-token law is comparable with the exact
    π(a) ∝ p_θ(a)·exp(λ·r(a)) from the Session's own log-probs. The default dts gets there; a
    cap of 4 children cannot."""
    from specdifftree.backend.mlx.loader import load
    from specdifftree.backend.mlx.session import Session

    lm = load(OmegaConf.create({"builtin": "tiny_random", "dtype": "float32"}))
    prompt = lm.encode("12.50, 13.75, 11.00, " * 2)
    g = np.random.default_rng(3)
    tok_r = g.random(lm.vocab_size)
    lam = 3.0

    def reward(seqs):
        return np.array([tok_r[s[0]] for s in seqs])

    lp0 = np.asarray(Session(lm, prompt).logprobs([()])[0], dtype=np.float64)
    logw = lp0 + lam * tok_r
    pi1 = np.exp(logw - np.logaddexp.reduce(logw[np.isfinite(logw)]))

    def first_token_law(cfg, seeds):
        acc = np.zeros(lm.vocab_size)
        for seed in range(seeds):
            m = build("dts", **cfg)
            run = m.run(Session(lm, prompt), RewardOracle(reward),
                        Budget(rollouts=48, max_new_tokens=2), np.random.default_rng(seed))
            for seq, w in m.answer_law(run).items():
                acc[seq[0]] += w / seeds
        return acc

    base = {**default_config("dts"), "lam": lam}
    tv = 0.5 * np.abs(first_token_law(base, 12) - pi1).sum()
    capped = 0.5 * np.abs(first_token_law({**base, "expansion_k": 4}, 4) - pi1).sum()
    # 12 searches of 48 rollouts over ~100 first tokens: a coarse check (noise ≈ 0.1)
    assert tv < 0.2 and capped > 0.5, (tv, capped)


def _mlx_table_model(vocab: int, eos: int, seed: int):
    """A tiny random mlx-lm Llama with a ``vocab``-token vocabulary (token ``eos`` is EOS), small
    enough that its law over short continuations can be enumerated through the Session."""
    import mlx.core as mx
    from mlx_lm.models import llama

    from specdifftree.backend.mlx.loader import LoadedModel
    from specdifftree.backend.mlx.tiny import llama_config

    mx.random.seed(seed)
    cfg = llama_config({"hidden_size": 32, "num_hidden_layers": 2, "intermediate_size": 64,
                        "num_attention_heads": 4, "num_key_value_heads": 2}, vocab)
    model = llama.Model(llama.ModelArgs.from_dict(cfg))
    return LoadedModel(model=model, tokenizer=None, name=f"tiny-v{vocab}", path="",
                       eos_token_ids=frozenset({eos}), vocab_size=vocab, max_context=None,
                       load_time_s=0.0)


def _session_law(lm, prompt, D):
    """Every complete continuation of length ≤ D and its log p_θ, from the Session's own
    log-probs (float32 logits, as the searches see them)."""
    from specdifftree.backend.mlx.session import Session

    s = Session(lm, prompt)
    seqs, logps, frontier = [], [], [((), 0.0)]
    while frontier:
        rows = s.logprobs([p for p, _ in frontier])
        nxt = []
        for (p, lp0), row in zip(frontier, rows):
            for a, v in enumerate(np.asarray(row, dtype=np.float64)):
                if not np.isfinite(v):
                    continue
                q = p + (a,)
                if a in lm.eos_token_ids or len(q) >= D:
                    seqs.append(q)
                    logps.append(lp0 + v)
                else:
                    nxt.append((q, lp0 + v))
        frontier = nxt
    return seqs, np.array(logps)


@pytest.mark.slow
def test_dts_and_sir_reach_pi_through_the_real_mlx_session():
    """The real Session (MLX forward passes, KV cache, device sampling) on a tiny random mlx-lm
    model with 3 tokens + EOS, depth 4: all 121 continuations enumerated from the Session's own
    log-probs give the exact π (λ = 2, rewards U(0, 1)). Over 150 searches of 24 rollouts the
    law of the whole returned sequence of dts (default config) and sir is within 0.03 of π
    beyond an exact sampler's noise with the same draws; dts capped at 2 children is clearly
    not."""
    from specdifftree.backend.mlx.session import Session

    lm = _mlx_table_model(4, 3, seed=0)
    prompt, D, lam, n = [0, 1, 2, 1, 0], 4, 2.0, 150
    seqs, logps = _session_law(lm, prompt, D)
    assert len(seqs) == 121 and abs(np.logaddexp.reduce(logps)) < 1e-4
    r = dict(zip(seqs, np.random.default_rng(9).random(len(seqs))))
    pi = exact_target(seqs, logps, np.array([r[s] for s in seqs]), lam)
    budget = Budget(rollouts=24, max_new_tokens=D)
    fl = floor(pi, 24 * n, np.random.default_rng(0))

    def law(name, cfg, seeds):
        m = build(name, **{**default_config(name), "lam": lam, **cfg})
        out = []
        for seed in range(seeds):
            s, o, rng = Session(lm, prompt), RewardOracle(table_reward(r)), \
                np.random.default_rng(seed)
            out.append(m.answer_law(s, o, budget, rng) if name == "sir"
                       else m.answer_law(m.run(s, o, budget, rng)))
        return averaged(out)

    tv_dts = total_variation(law("dts", {}, n), pi)
    # sir's law does not depend on the batching: one batched call of 24 rollouts per search
    tv_sir = total_variation(law("sir", {"parallel_rollouts": 24}, n), pi)
    tv_cap = total_variation(law("dts", {"expansion_k": 2}, 40), pi)
    assert tv_dts < fl + 0.03 and tv_sir < fl + 0.03, (tv_dts, tv_sir, fl)
    # measured: dts 0.020, sir 0.051, capped 0.141, floor 0.037
    assert tv_cap > fl + 0.07, (tv_cap, fl)


def nan_every_fifth_length(seqs):
    """Rewards with a NaN for every continuation whose length is 3 mod 5 (failed rewards)."""
    return np.array([math.nan if len(s) % 5 == 3 else float(sum(s) % 7) for s in seqs])


@pytest.mark.parametrize("cfg", [{"expansion_k": 0}, {"expansion_k": 2, "parallel_rollouts": 4},
                                 {"expansion_k": 3, "lam": 5.0, "defensive": 0.0,
                                  "parallel_rollouts": 3}])
def test_open_shares_of_one_child_nodes_are_those_of_the_general_formula(cfg):
    """DTS's open shares at a node with one child (a rollout's chain) are computed on Python
    floats (``_refresh_one``); at every such refresh of real searches — children in flight,
    failed rewards (NaN) dropped, new children possible or not — the result is the general
    formula's (``_refresh_node``, on arrays) to the bit."""
    from specdifftree.search.dts import DTS

    seen = {"n": 0, "unvisited": 0, "closed": 0}

    def check(run, x):
        t = run.tree
        DTS._refresh_node(m, run, x)
        want = (float(t.logopen[x]), float(t.logopen_p[x]))
        t.logopen[x] = t.logopen_p[x] = 123.0
        DTS._refresh_one(m, run, x)
        got = (float(t.logopen[x]), float(t.logopen_p[x]))
        assert np.array_equal(np.array(got), np.array(want), equal_nan=True), (x, got, want)
        assert np.signbit(got).tolist() == np.signbit(want).tolist()
        (c,) = t.children[x].values()
        seen["n"] += 1
        seen["unvisited"] += int(t.visits[c] == 0)
        seen["closed"] += int(t.terminal[c])

    for seed in range(4):
        m = build("dts", **cfg)
        m._refresh_one = lambda run, x: check(run, x)
        m.run(TableSession(BIG, 4), RewardOracle(nan_every_fifth_length),
              Budget(rollouts=30, max_new_tokens=8), np.random.default_rng(seed))
    assert seen["n"] > 100 and seen["closed"] > 10, seen


def test_two_simulations_of_a_step_dropping_the_same_failed_rollout():
    """With parallel rollouts two leaves of one step can roll out the same continuation, and
    when its reward fails both simulations are dropped: the second finds the rollout's chain
    already unlinked (this search used to stop with a KeyError)."""
    m = build("dts", expansion_k=3, lam=5.0, defensive=0.0, parallel_rollouts=3)
    run = m.run(TableSession(BIG, 4), RewardOracle(nan_every_fifth_length),
                Budget(rollouts=30, max_new_tokens=8), np.random.default_rng(0))
    ends = [e for e, _, failed in run.extra["sims"] if failed]
    assert len(ends) > len(set(ends))  # the same failed continuation, dropped twice
    assert run.failed == len(ends) and run.meter.done >= 30


@pytest.mark.parametrize("cfg", [{"expansion_k": 2}, {"expansion_k": 0, "parallel_rollouts": 4},
                                 {"expansion_k": 3, "lam": 5.0, "parallel_rollouts": 3}])
def test_maxent_ts_values_of_one_child_nodes_are_those_of_the_general_formula(cfg):
    """MaxEnt-TS's soft value at a node with one child is computed on Python floats
    (``_backup_one``); at every such backup of real searches (failed rewards included) it is
    the array formula's (``_backup_node``) to the bit."""
    from specdifftree.search.maxent_ts import MaxEntTS

    seen = {"n": 0}

    def check(run, x):
        t = run.tree
        MaxEntTS._backup_node(m, run, x)
        want = float(t.value[x])
        t.value[x] = 123.0
        MaxEntTS._backup_one(m, run, x)
        got = float(t.value[x])
        assert np.array_equal([got], [want], equal_nan=True), (x, got, want)
        assert np.signbit(got) == np.signbit(want)
        seen["n"] += 1

    for seed in range(4):
        m = build("maxent_ts", **cfg)
        m._backup_one = lambda run, x: check(run, x)
        m.run(TableSession(BIG, 4), RewardOracle(nan_every_fifth_length),
              Budget(rollouts=30, max_new_tokens=8), np.random.default_rng(seed))
    assert seen["n"] > 100, seen
