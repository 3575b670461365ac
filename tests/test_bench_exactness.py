"""experiments/bench_exactness.py measures what the methods do: its shortcuts (one anytime search
read at several budgets, the numpy sampler, ``sir``/``best_of_n`` vectorised over seeds) give
the same laws and token counts as the methods run one budget at a time."""

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO
from specdifftree.search import build
from specdifftree.search.base import RewardOracle
from toy_session import TableLM, TableSession, enumerate_sequences, table_reward

sys.path.insert(0, str(REPO / "experiments"))
import bench_exactness as bx  # noqa: E402

CELLS = [("rollouts", 16), ("rollouts", 64), ("tokens", 40), ("tokens", 100)]


@pytest.mark.parametrize("name", ["dts", "maxent_ts"])
def test_one_search_read_at_several_budgets_equals_one_search_per_budget(name):
    for seed in (0, 1):
        read = bx.tree_laws(name, 2.0, CELLS, seed, False)
        for kind, b in CELLS:
            one = bx.tree_laws(name, 2.0, [(kind, b)], seed, False)
            for key, (law, tok) in one.items():
                assert key[1:] == (kind, b)
                assert tok == read[key][1]
                np.testing.assert_array_equal(law, read[key][0])
            # and a search with that budget, as the runner calls it
            m = build(name, **{**bx.method_config(name), "lam": 2.0})
            s = TableSession(bx.LM, bx.PROMPT, sampler="numpy")
            run = m.run(s, RewardOracle(table_reward(dict(zip(bx.SEQS, bx.REWARDS)))),
                        bx._budget(kind, b), np.random.default_rng([seed, 12345]))
            assert s.tokens_processed == read[(name, kind, b)][1]
            if name == "dts":
                np.testing.assert_allclose(bx.law_array(m.answer_law(run)),
                                           read[(name, kind, b)][0], rtol=0, atol=1e-15)


@pytest.mark.parametrize("label", ["sir", "best_of_n"])
def test_vectorised_sir_and_best_of_n_match_the_methods(label):
    """300 seeds each: the vectorised law, its mean reward and the mean tokens agree with the
    method run through the table session within the Monte-Carlo noise (first-token law: 7
    cells; at 1500 seeds best_of_n at 100 tokens agreed to 0.03 and 0.002 in mean reward)."""
    n = 300
    cells = [("rollouts", 16), ("tokens", 100)]
    vec = bx.vector_laws(label, 2.0, cells, list(range(n)), False)
    for kind, b in cells:
        acc, tok = np.zeros(len(bx.SEQS)), 0
        for seed in range(n):
            lam = {"lam": 2.0} if label == "sir" else {}  # best_of_n has no λ
            m = build(label, **{**bx.method_config(label), **lam})
            s = TableSession(bx.LM, bx.PROMPT, sampler="numpy")
            oracle = RewardOracle(table_reward(dict(zip(bx.SEQS, bx.REWARDS))))
            rng = np.random.default_rng(seed)
            if label == "sir":
                acc += bx.law_array(m.answer_law(s, oracle, bx._budget(kind, b), rng))
            else:
                acc[bx.INDEX[m.search(s, oracle, bx._budget(kind, b), rng).tokens]] += 1
            tok += s.tokens_processed
        law_v, tok_v = vec[(label, kind, b)]
        first = np.array([s[0] for s in bx.SEQS])
        fv = np.bincount(first, weights=law_v / n, minlength=bx.VOCAB)
        fm = np.bincount(first, weights=acc / n, minlength=bx.VOCAB)
        # point masses (best_of_n) are noisier than resampling laws (sir)
        assert 0.5 * np.abs(fv - fm).sum() < (0.08 if label == "sir" else 0.15), (fv, fm)
        # the answer's mean reward (sd of the difference ≈ 0.005)
        assert abs((law_v - acc) @ bx.REWARDS / n) < 0.02
        assert abs(tok_v / n - tok / n) < 1.0  # mean tokens per search (sd of the mean ≈ 0.3)


def test_numpy_sampler_counts_like_the_mlx_sampler_and_draws_p_theta():
    lm = TableLM.random(5, eos_ids=[4], seed=2)
    seqs, logps = enumerate_sequences(lm, 3)
    outs = []
    for sampler in ("mlx", "numpy"):  # greedy: the same rollouts, so the same accounting
        s = TableSession(lm, 4, sampler=sampler)
        ros = s.rollout([(), (1,), (1, 2)], 3, temperature=0.0)
        s.logprobs([(3,), (1, 2)])
        ros += s.rollout([(3,)] * 2, 3, temperature=0.0)
        outs.append(([r.tokens for r in ros], [r.logprobs for r in ros], s.tokens_processed,
                     s.model_calls))
    assert outs[0] == outs[1]
    s = TableSession(lm, 4, sampler="numpy")
    rng = np.random.default_rng(0)
    counts = {}
    for ro in s.rollout([()] * 20000, 3, rng=rng):
        counts[tuple(ro.tokens)] = counts.get(tuple(ro.tokens), 0) + 1
    p = dict(zip(seqs, np.exp(logps)))
    assert 0.5 * sum(abs(counts.get(q, 0) / 20000 - p[q]) for q in p) < 0.05


def test_script_writes_json_and_markdown_and_prints_its_time(tmp_path):
    out = subprocess.run([sys.executable, str(REPO / "experiments" / "bench_exactness.py"),
                          "--seeds", "2", "--chunk", "1", "--workers", "2", "--lams", "2",
                          "--out-json", str(tmp_path / "tv.json"), "--out-md",
                          str(tmp_path / "tv.md")], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "total time:" in out.stdout
    data = json.loads((tmp_path / "tv.json").read_text())
    assert data["seeds"] == 2 and data["total_s"] > 0
    rows = data["rows"]
    methods = {r["method"] for r in rows if r["table"] == "target"}
    assert methods == {"dts", "sir", "smc", "maxent_ts", "maxent_ts (soft policy)", "best_of_n"}
    assert len([r for r in rows if r["table"] == "target"]) == 6 * 6  # 6 rows × 6 budgets
    assert all(0 <= r["tv"] <= 1 and r["seeds"] == 2 for r in rows)
    md = (tmp_path / "tv.md").read_text()
    assert "TV from π at equal rollouts" in md and "TV from π at equal tokens" in md
    assert "Cells that miss a goal" in md
