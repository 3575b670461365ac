"""Sample-set scores: CRPS, quantiles, MSIS, coverage (hypothesis properties and definitions)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from specdifftree.metrics.m4 import mase, mase_scale
from specdifftree.metrics.probabilistic import (QUANTILE_LEVELS, coverage, crps, crps_mase,
                                                crps_steps, distribution_scores, msis, quantiles,
                                                wql)

finite = st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False)


def sample_sets(max_n=12, max_h=6):
    return st.integers(1, max_n).flatmap(lambda n: st.integers(1, max_h).flatmap(
        lambda h: st.tuples(arrays(np.float64, (n, h), elements=finite),
                            arrays(np.float64, (h,), elements=finite))))


def crps_integral(samples_t: np.ndarray, y: float) -> float:
    """∫ (F(z) − 1{z ≥ y})² dz for the empirical CDF F, exactly (piecewise constant)."""
    pts = np.sort(np.r_[samples_t, y])
    total = 0.0
    for a, b in zip(pts[:-1], pts[1:]):
        z = 0.5 * (a + b)
        f = np.mean(samples_t <= z)
        total += (f - float(z >= y)) ** 2 * (b - a)
    return total


@settings(max_examples=200, deadline=None)
@given(sample_sets())
def test_crps_equals_the_pair_definition_and_the_integral(case):
    s, y = case
    got = crps_steps(s, y)
    pair = (np.abs(s - y).mean(axis=0)
            - 0.5 * np.abs(s[:, None, :] - s[None, :, :]).mean(axis=(0, 1)))
    np.testing.assert_allclose(got, np.maximum(pair, 0), rtol=1e-9, atol=1e-6)
    for t in range(s.shape[1]):
        assert got[t] == pytest.approx(crps_integral(s[:, t], y[t]), rel=1e-7, abs=1e-6)
    assert np.all(got >= 0)


@settings(max_examples=100, deadline=None)
@given(arrays(np.float64, (5,), elements=finite), arrays(np.float64, (5,), elements=finite),
       st.integers(1, 7))
def test_crps_of_a_point_mass_is_the_absolute_error(yhat, y, copies):
    s = np.repeat(yhat[None, :], copies, axis=0)
    np.testing.assert_allclose(crps_steps(s, y), np.abs(yhat - y), rtol=1e-9, atol=1e-9)


@settings(max_examples=100, deadline=None)
@given(arrays(np.float64, (30,), elements=st.floats(1, 1e4)),
       arrays(np.float64, (6,), elements=st.floats(1, 1e4)),
       arrays(np.float64, (6,), elements=st.floats(1, 1e4)), st.sampled_from([1, 4, 12]))
def test_crps_mase_of_a_point_forecast_is_mase(x, y, yhat, m):
    if mase_scale(x, m) == 0:
        return
    assert crps_mase(yhat[None, :], y, x, m) == pytest.approx(mase(x, y, yhat, m), rel=1e-9)


@settings(max_examples=100, deadline=None)
@given(sample_sets(), st.floats(-100, 100))
def test_crps_is_translation_invariant(case, c):
    s, y = case
    np.testing.assert_allclose(crps_steps(s + c, y + c), crps_steps(s, y), rtol=1e-6, atol=1e-6)


def test_normalised_crps_divides_by_the_sum_of_absolute_truth():
    s = np.array([[1.0, 2.0], [3.0, 6.0]])
    y = np.array([2.0, -2.0])
    # step 1: mean|s−y| = 1, pair term ½·mean|s_i−s_j| = ½·(2·2/4) = 0.5 → 0.5
    # step 2: mean|s−y| = 6, pair term ½·(2·4/4) = 1 → 5
    assert crps_steps(s, y) == pytest.approx([0.5, 5.0])
    assert crps(s, y) == pytest.approx(5.5 / 4.0)
    assert np.isnan(crps(s, np.zeros(2)))


def test_msis_is_m4s_definition():
    x = np.array([10.0, 12, 11, 13, 12, 14])  # lag-1 scale: mean(2,1,2,1,2) = 1.6
    y = np.array([12.0, 20.0, 5.0])
    lo = np.array([10.0, 10.0, 10.0])
    up = np.array([14.0, 14.0, 14.0])
    # widths 4 each; y2 above by 6: penalty 2/0.05·6 = 240; y3 below by 5: 2/0.05·5 = 200
    want = (4 + (4 + 240) + (4 + 200)) / 3 / 1.6
    assert msis(lo, up, y, x, 1) == pytest.approx(want)
    assert coverage(lo, up, y) == pytest.approx(1 / 3)


@settings(max_examples=100, deadline=None)
@given(sample_sets(max_n=20))
def test_quantiles_are_ordered_and_bound_the_interval(case):
    s, y = case
    q = quantiles(s)
    assert q.shape == (len(QUANTILE_LEVELS), s.shape[1])
    assert np.all(np.diff(q, axis=0) >= -1e-9)
    assert np.all(q[0] >= s.min(axis=0) - 1e-9) and np.all(q[-1] <= s.max(axis=0) + 1e-9)


@settings(max_examples=50, deadline=None)
@given(sample_sets(max_n=20))
def test_wql_and_msis_are_non_negative(case):
    s, y = case
    x = np.r_[y, y + 1.0, y + 3.0]
    d = distribution_scores(s, y, x, 1)
    if s.shape[0] == 1:  # a point forecast has no interval
        assert d["msis"] is None and d["coverage"] is None and d["quantiles"] is None
    else:
        assert d["msis"] >= 0 and 0 <= d["coverage"] <= 1
    if np.abs(y).sum() > 0:
        assert d["wql"] >= 0 and d["crps"] >= 0


def test_many_samples_of_a_normal_reach_its_closed_form_crps():
    rng = np.random.default_rng(0)
    s = rng.normal(0.0, 1.0, size=(20000, 1))
    # CRPS(N(0,1), 0) = 2φ(0) − 1/√π = (√2 − 1)/√π
    assert crps_steps(s, np.zeros(1))[0] == pytest.approx((np.sqrt(2) - 1) / np.sqrt(np.pi),
                                                          rel=0.02)
    # and the quantile-loss approximation is close to it (a 13-level grid is coarse)
    y = np.array([0.5])
    q = quantiles(s)
    assert wql(q, y) * 0.5 == pytest.approx(crps_steps(s, y)[0], rel=0.15)
