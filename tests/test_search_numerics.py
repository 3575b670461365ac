"""Log-space numerics of the search library (property tests)."""

import math
from decimal import Decimal, localcontext

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from specdifftree.search.numerics import (gumbel_argmax, gumbel_topk, log1mexp, logsumexp,
                                          minmax_normalise, topk_finite)

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)


@settings(deadline=None)
@given(st.lists(finite, min_size=1, max_size=20), st.floats(min_value=-1e6, max_value=1e6))
def test_logsumexp_is_shift_equivariant_and_bounded(xs, c):
    a = np.array(xs)
    z = logsumexp(a)
    assert max(xs) <= z <= max(xs) + math.log(len(xs)) + 1e-9
    assert logsumexp(a + c) == pytest.approx(z + c, rel=1e-12, abs=1e-6)


@settings(deadline=None)
@given(st.lists(st.floats(min_value=-30, max_value=30), min_size=1, max_size=10))
def test_logsumexp_matches_direct_sum_in_safe_range(xs):
    assert logsumexp(xs) == pytest.approx(math.log(sum(math.exp(x) for x in xs)), rel=1e-12, abs=1e-12)


def test_logsumexp_edge_cases():
    assert logsumexp([]) == -math.inf
    assert logsumexp([-math.inf, -math.inf]) == -math.inf
    assert logsumexp([-math.inf, 0.0]) == 0.0
    assert logsumexp([1e308, 1e308]) == pytest.approx(1e308)  # no overflow
    assert logsumexp([-1e9, -1e9]) == pytest.approx(-1e9 + math.log(2), abs=1e-6)


@settings(deadline=None)  # accuracy, not speed (the machine may be busy)
@given(st.floats(min_value=-700, max_value=-1e-300))
def test_log1mexp_is_accurate(a):
    with localcontext() as ctx:  # 400-digit reference
        ctx.prec = 400
        ref = float((1 - Decimal(a).exp()).ln())
    assert log1mexp(a) == pytest.approx(ref, rel=1e-13, abs=1e-300)


def test_log1mexp_edges():
    assert log1mexp(0.0) == -math.inf
    assert log1mexp(-math.inf) == 0.0
    assert log1mexp(-1e-20) == pytest.approx(math.log(1e-20), rel=1e-12)  # tiny remaining mass
    with pytest.raises(ValueError):
        log1mexp(1e-3)


def test_gumbel_argmax_frequencies_match_probabilities():
    rng = np.random.default_rng(0)
    p = np.array([0.5, 0.3, 0.2, 0.0])
    with np.errstate(divide="ignore"):
        lw = np.log(p) + 1234.5  # unnormalised log-weights are fine
    n = 20000
    counts = np.bincount([gumbel_argmax(lw, rng) for _ in range(n)], minlength=4)
    assert counts[3] == 0  # a -inf weight is never drawn
    np.testing.assert_allclose(counts / n, p, atol=0.015)


def test_gumbel_argmax_reports_no_finite_weight():
    rng = np.random.default_rng(0)
    assert gumbel_argmax([-np.inf, -np.inf], rng) == -1
    assert gumbel_argmax([], rng) == -1
    assert gumbel_argmax([-np.inf, -1e300], rng) == 1


@settings(max_examples=50, deadline=None)
@given(st.lists(st.one_of(finite, st.just(-math.inf)), min_size=1, max_size=12),
       st.integers(min_value=1, max_value=15), st.integers(min_value=0, max_value=10**6))
def test_topk_helpers_return_distinct_finite_entries(xs, k, seed):
    a = np.array(xs)
    n_fin = int(np.isfinite(a).sum())
    for idx in (gumbel_topk(a, k, np.random.default_rng(seed)), topk_finite(a, k)):
        assert len(idx) == min(k, n_fin)
        assert len(set(idx.tolist())) == len(idx)
        assert np.isfinite(a[idx]).all()
    top = topk_finite(a, k)
    if len(top):
        assert a[top[0]] == a[np.isfinite(a)].max()
        assert (np.diff(a[top]) <= 0).all()


def test_minmax_normalise():
    np.testing.assert_allclose(minmax_normalise([1e6, -1e6, 0.0], -1e6, 1e6), [1.0, 0.0, 0.5])
    np.testing.assert_allclose(minmax_normalise([3.0], 3.0, 3.0), [0.5])
