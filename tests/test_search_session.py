"""The search methods on the real tiny model through the Session, and the toy session's token
accounting checked against the real one."""

import numpy as np
import pytest
from omegaconf import OmegaConf

from specdifftree.search import build, search_methods
from specdifftree.search.build import settings
from specdifftree.search.base import Budget, RewardOracle
from specdifftree.search.numerics import logsumexp
from toy_session import TableLM, TableSession


@pytest.fixture(scope="module")
def lm():
    from specdifftree.backend.mlx.loader import load

    return load(OmegaConf.create({"builtin": "tiny_random", "dtype": "float32"}))


@pytest.fixture(scope="module")
def prompt(lm):
    return lm.encode("12.50, 13.75, 11.00, " * 4)


def digit_reward(lm):
    """Share of digits in the decoded text (a cheap, real reward on text)."""
    def fn(seqs):
        out = []
        for s in seqs:
            text = lm.decode(list(s))
            out.append(sum(c.isdigit() for c in text) / max(1, len(s)))
        return np.array(out)
    return fn


@pytest.mark.parametrize("name", search_methods())
def test_every_method_runs_on_the_session(lm, prompt, name):
    from specdifftree.backend.mlx.session import Session

    s = Session(lm, prompt)
    D, extra = 10, 120
    batched = {"parallel_rollouts": 2} if "parallel_rollouts" in settings(type(build(name))) else {}
    res = build(name, **batched).search(
        s, RewardOracle(digit_reward(lm)), Budget(tokens=len(prompt) + extra, max_new_tokens=D),
        np.random.default_rng(0))
    assert s.tokens_processed <= len(prompt) + extra + D - 1
    assert res.tokens and len(res.tokens) <= D
    ref, _ = s.sequence_logprob(res.tokens)
    assert res.logprob == pytest.approx(ref, abs=1e-3)
    assert res.reward == pytest.approx(digit_reward(lm)([res.tokens])[0])


def test_table_session_counts_like_the_session(lm, prompt):
    """Replay the same calls on a Session and on a TableSession whose table is the model's own
    next-token distribution: same tokens sampled, same tokens_processed, same model_calls."""
    from specdifftree.backend.mlx.session import Session

    oracle = Session(lm, prompt)

    def row(p):
        lp = oracle.logprobs([p])[0]
        return lp - logsumexp(lp)

    real = Session(lm, prompt)
    toy = TableSession(TableLM(row, lm.vocab_size, lm.eos_token_ids), prompt_tokens=len(prompt))
    script = [
        ("rollout", [()], 8, 1.0, 0),
        ("logprobs", None),  # every prefix of the first rollout: cached
        ("logprobs", [(20, 21, 22)]),
        ("rollout", [(20,), (30, 31)], 5, 1.0, 1),
        ("rollout", [(40, 41, 42)], 4, 0.0, 2),
        # branching off earlier continuations: only the new tokens are fed
        ("rollout", [(20, 21, 22, 23), (20, 21)], 3, 1.0, 3),
        ("logprobs", [(30, 31, 32, 33), (40, 41), (40, 41, 42, 43, 44)]),
        ("rollout", [(40, 41, 42, 50), (30, 31, 60)], 3, 1.0, 4),
        ("rollout", [(20, 21, 22, 70), (30, 31, 32, 71)], 2, 1.0, 5),
    ]
    first = None
    for step in script:
        if step[0] == "rollout":
            _, prefixes, n, temp, seed = step
            a = real.rollout(prefixes, n, temperature=temp, rng=np.random.default_rng(seed))
            b = toy.rollout(prefixes, n, temperature=temp, rng=np.random.default_rng(seed))
            assert [r.tokens for r in a] == [r.tokens for r in b]
            assert [r.finished for r in a] == [r.finished for r in b]
            first = first or a[0]
        else:
            prefixes = step[1] or [tuple(first.tokens[:k]) for k in range(len(first.tokens))]
            real.logprobs(prefixes)
            toy.logprobs(prefixes)
        assert (toy.tokens_processed, toy.model_calls) == (real.tokens_processed, real.model_calls)
