"""The device sampler draws exactly from p_θ (or its tempered / truncated form).

Many seeded draws are compared with the exact next-token distribution by a chi-square test
(cells with small expected counts are pooled). Each test also checks that the same draws are
rejected against a different distribution, so the test can fail.
"""

import math

import numpy as np
import pytest

from specdifftree.backend.mlx.session import Session
from specdifftree.backend.mlx.sampling import sample, step_keys, truncate


def chi2_z(counts: np.ndarray, probs: np.ndarray, min_expected: float = 5.0) -> float:
    """Wilson–Hilferty z-score of Pearson's chi-square statistic of ``counts`` against ``probs``
    (cells with expected count < ``min_expected`` pooled into one); ~N(0, 1) under the null.
    A count in a zero-probability cell gives +inf."""
    n = counts.sum()
    exp = probs * n
    if (counts[probs == 0] > 0).any():
        return math.inf
    big = exp >= min_expected
    obs = np.append(counts[big], counts[~big & (probs > 0)].sum())
    e = np.append(exp[big], exp[~big & (probs > 0)].sum())
    keep = e > 0
    obs, e = obs[keep], e[keep]
    stat = float(((obs - e) ** 2 / e).sum())
    df = len(e) - 1
    return ((stat / df) ** (1 / 3) - (1 - 2 / (9 * df))) / math.sqrt(2 / (9 * df))


def target(lp: np.ndarray, temperature: float, top_k: int = 0, top_p: float = 1.0) -> np.ndarray:
    """The exact distribution the sampler is documented to draw from (float64 on the host)."""
    z = lp / temperature
    if top_k:
        kth = np.sort(z)[-top_k]
        z = np.where(z < kth, -np.inf, z)
    if top_p < 1.0:
        s = np.sort(z)[::-1]
        p = np.exp(s - np.logaddexp.reduce(s))
        keep = (np.cumsum(p) - p) < top_p
        z = np.where(z < s[keep].min(), -np.inf, z)
    w = np.exp(z - z.max())
    return w / w.sum()


@pytest.fixture(scope="module")
def session(tiny_lm):
    return Session(tiny_lm, tiny_lm.encode("12.50, 13.75, 11.00, " * 4))


@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, 0, 1.0), (0.7, 0, 1.0), (1.3, 5, 1.0),
                                                      (1.0, 0, 0.8)])
def test_session_draws_follow_the_exact_next_token_distribution(session, temperature, top_k, top_p):
    """20,000 one-token rollouts from the prompt (one batch, real model) vs p_θ(·|prompt)."""
    N = 20000
    lp = session.logprobs([()])[0]
    ros = session.rollout([()] * N, 1, temperature=temperature, rng=np.random.default_rng(11),
                          top_k=top_k, top_p=top_p)
    toks = np.array([r.tokens[0] for r in ros])
    counts = np.bincount(toks, minlength=lp.size).astype(np.float64)
    p = target(lp, temperature, top_k, top_p)
    assert chi2_z(counts, p) < 4.5
    # the returned log-probs are the temperature-1 ones, whatever the sampling temperature
    assert all(abs(r.logprobs[0] - lp[r.tokens[0]]) < 1e-9 for r in ros[:50])
    # the same draws are rejected against the untruncated / untempered distribution
    if temperature != 1.0 or top_k or top_p < 1.0:
        assert chi2_z(counts, target(lp, 1.0)) > 6


def test_sampler_is_exact_over_a_128k_vocabulary():
    """A real-size vocabulary: mass concentrated on 40 tokens plus a spread tail of 128,216."""
    import mlx.core as mx

    V, B = 128256, 250
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 1, V) - 9.0
    logits[rng.choice(V, 40, replace=False)] += rng.uniform(6, 10, 40)
    lp = logits - np.logaddexp.reduce(logits)
    keys = step_keys(np.random.default_rng(5), 4)
    counts = np.zeros(V)
    for step in range(4):  # 4 steps of B rows: every step uses its own key
        toks, tlp = sample(mx.broadcast_to(mx.array(lp.astype(np.float32)), (B, V)), 1.0, keys[step])
        t = np.array(toks)
        np.add.at(counts, t, 1)
        np.testing.assert_allclose(np.array(tlp), lp[t], atol=1e-5)
    p = np.exp(lp)
    assert chi2_z(counts, p) < 4.5
    assert chi2_z(counts, target(lp, 0.8)) > 6


def test_greedy_and_truncation_on_the_device():
    import mlx.core as mx

    lp = np.log(np.array([[0.1, 0.5, 0.05, 0.35], [0.25, 0.25, 0.4, 0.1]]))
    toks, tlp = sample(mx.array(lp.astype(np.float32)), 0.0)
    assert np.array(toks).tolist() == [1, 2]
    np.testing.assert_allclose(np.array(tlp), [lp[0, 1], lp[1, 2]], atol=1e-6)
    z = np.array(truncate(mx.array(lp.astype(np.float32)), top_k=2))
    assert np.isfinite(z).sum(axis=1).tolist() == [2, 3]  # row 2: the tie at 0.25 is kept
    z = np.array(truncate(mx.array(lp.astype(np.float32)), top_p=0.6))
    assert np.isfinite(z[0]).tolist() == [False, True, False, True]  # 0.5 < 0.6, then 0.35
    keys = step_keys(np.random.default_rng(0), 3)
    for step in range(3):  # an impossible token is never drawn, at any temperature
        t, _ = sample(mx.array(np.log(np.array([[0.0, 1e-30, 1.0]]) + 0.0).astype(np.float32)),
                      5.0, keys[step])
        assert int(np.array(t)[0]) != 0


def test_draw_excluding_is_exact_among_the_unseen_tokens(session):
    """DTS's new-child draw on the device: tokens ∝ p_θ restricted to those not excluded, the
    token's log-prob and the unexcluded mass before / after the draw, checked against the host
    row; the draws are rejected against the unrestricted p_θ."""
    lp = session.logprobs([()])[0]
    top = np.argsort(-lp)[:3]  # exclude the three most likely tokens (most of the mass)
    rest = lp.copy()
    rest[top] = -np.inf
    log_rest = np.logaddexp.reduce(rest)
    rng = np.random.default_rng(3)
    N = 4000
    counts = np.zeros(lp.size)
    for i in range(N):
        a, lp_a, before, after = session.draw_excluding((), top, rng)
        counts[a] += 1
        if i < 20:
            assert a not in top
            assert abs(lp_a - lp[a]) < 1e-5
            assert abs(before - log_rest) < 1e-4
            left = rest.copy()
            left[a] = -np.inf
            assert abs(after - np.logaddexp.reduce(left)) < 1e-4
    assert chi2_z(counts, np.exp(rest - log_rest)) < 4.5
    assert counts[top].sum() == 0
    assert chi2_z(counts, np.exp(lp)) > 6  # rejected against the unrestricted p_θ
    assert abs(session.log_mass_excluding((), top) - log_rest) < 1e-4
    # excluding every token with p_θ > 0 leaves nothing to draw
    everything = np.flatnonzero(np.isfinite(lp))
    assert session.draw_excluding((), everything, rng) is None
    assert session.log_mass_excluding((), everything) == -math.inf
