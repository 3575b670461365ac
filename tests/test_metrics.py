"""M4 metrics and the Naive2 benchmark (hand-computed cases, properties, official M4 figures)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from specdifftree.metrics.m4 import mase, mase_scale, owa, smape
from specdifftree.metrics.naive2 import acf, naive2, seasonal_indices, seasonal_naive, seasonality_test
from specdifftree.search.classical import Naive2, SeasonalNaive

from conftest import m4_files as m4_root

REPO = Path(__file__).resolve().parents[1]




# ------------------------------------------------------------------------------ hand-computed

def test_smape_hand_computed():
    # 100 * (10/210 + 20/380) = 100 * (1/21 + 1/19) = 4000/399
    assert smape([100, 200], [110, 180]) == pytest.approx(4000 / 399, rel=1e-12)
    assert smape([0.0, 1.0], [0.0, 1.0]) == 0.0          # 0/0 term counts as 0
    assert smape([0.0, 0.0], [5.0, 0.0]) == pytest.approx(100.0)
    assert smape([1.0], [-1.0]) == pytest.approx(200.0)
    out = smape([100, 200], np.array([[100, 200], [110, 180]]))  # batch over candidates
    assert out.shape == (2,) and out[0] == 0 and out[1] == pytest.approx(4000 / 399)


def test_mase_hand_computed():
    x = [1.0, 2.0, 4.0, 7.0]                   # lag-1 diffs 1, 2, 3 -> scale 2
    assert mase_scale(x, 1) == pytest.approx(2.0)
    assert mase(x, [8, 10], [9, 9], 1) == pytest.approx(0.5)
    xs = [1.0, 5.0, 2.0, 7.0, 3.0, 9.0]        # lag-2 diffs 1, 2, 1, 2 -> scale 1.5
    assert mase_scale(xs, 2) == pytest.approx(1.5)
    assert mase(xs, [4, 10], [4, 7], 2) == pytest.approx(1.0)
    assert mase_scale([1.0, 3.0], 4) == pytest.approx(2.0)   # n <= m -> lag 1
    out = mase(x, [8, 10], np.array([[8, 10], [9, 9], [6, 12]]), 1)
    np.testing.assert_allclose(out, [0.0, 0.5, 1.0])


def test_mase_zero_scale_rule():
    x = np.full(10, 3.0)
    assert mase(x, [3, 3], [3, 3], 1) == 0.0
    assert mase(x, [3, 3], [3, 4], 1) == np.inf
    np.testing.assert_array_equal(mase(x, [3, 3], np.array([[3, 3], [2, 3]]), 1), [0.0, np.inf])
    with pytest.raises(ValueError):
        mase_scale([1.0], 1)


def test_owa():
    assert owa(10.0, 1.0, 20.0, 2.0) == pytest.approx(0.5)
    assert owa([10, 30], [1, 3], 40.0, 1.0) == pytest.approx(0.5 * (20 / 40 + 2 / 1))
    s, q = np.array([5.0, 7.0]), np.array([0.3, 0.9])
    assert owa(s, q, s, q) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        owa(1.0, 1.0, 0.0, 1.0)


# --------------------------------------------------------------------------------- properties

finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False).filter(lambda v: v == 0 or abs(v) > 1e-100)
# (tiny magnitudes are excluded: scaling them underflows, which no metric can promise to survive)
positive = st.floats(1e-3, 1e3)


@given(st.integers(1, 20).flatmap(lambda h: st.tuples(arrays(np.float64, h, elements=finite),
                                                       arrays(np.float64, h, elements=finite))))
def test_smape_range_and_symmetry(pair):
    y, f = pair
    s = smape(y, f)
    assert 0.0 <= s <= 200.0 + 1e-9
    assert s == pytest.approx(smape(f, y), abs=1e-12)
    assert smape(y, y) == 0.0


@given(st.integers(1, 20).flatmap(lambda h: st.tuples(arrays(np.float64, h, elements=finite),
                                                       arrays(np.float64, h, elements=finite))),
       positive)
def test_smape_scale_invariant(pair, c):
    y, f = pair
    assert smape(c * y, c * f) == pytest.approx(smape(y, f), rel=1e-9, abs=1e-9)


@settings(max_examples=60)
@given(arrays(np.float64, st.integers(2, 40), elements=finite),
       st.integers(1, 6).flatmap(lambda h: st.tuples(arrays(np.float64, h, elements=finite),
                                                      arrays(np.float64, h, elements=finite))),
       st.integers(1, 12), positive)
def test_mase_scale_invariant(x, pair, m, c):
    y, f = pair
    a, b = mase(x, y, f, m), mase(c * x, c * y, c * f, m)
    if np.isfinite(a):
        assert b == pytest.approx(a, rel=1e-9, abs=1e-12)
    else:
        assert a == b == np.inf
    assert a >= 0


# ------------------------------------------------------------------------------------ Naive2

def test_acf_matches_definition():
    x = np.array([3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0])
    d = x - x.mean()
    want = [np.sum(d[k:] * d[:-k]) / np.sum(d * d) for k in (1, 2, 3)]
    np.testing.assert_allclose(acf(x, 3), want)


@settings(max_examples=40)
@given(st.sampled_from([4, 7, 12, 24]), st.integers(0, 30), st.integers(1, 50),
       st.floats(10.0, 1e4))
def test_naive2_continues_a_pure_seasonal_pattern(m, extra, h, level):
    """Noise-free multiplicative pattern: indices recovered and forecast in phase for any n."""
    rng = np.random.default_rng(m * 1000 + extra)
    s = rng.uniform(0.5, 1.5, m)
    s /= s.mean()
    n = 10 * m + extra
    x = level * s[np.arange(n) % m]
    assert seasonality_test(x, m)
    np.testing.assert_allclose(seasonal_indices(x, m), s, rtol=1e-9)
    np.testing.assert_allclose(naive2(x, h, m), level * s[(n + np.arange(h)) % m], rtol=1e-9)


def test_naive2_falls_back_to_naive():
    rng = np.random.default_rng(0)
    walk = 100 + np.cumsum(rng.normal(size=60))
    assert not seasonality_test(np.arange(1.0, 40.0), 24)  # n < 3m
    np.testing.assert_array_equal(naive2(walk, 5, 1), np.full(5, walk[-1]))
    periodic = 10 + np.tile([1.0, 5.0, 2.0, 8.0], 10)
    np.testing.assert_array_equal(naive2(periodic - 12, 3, 4), np.full(3, periodic[-1] - 12))  # values <= 0
    if not seasonality_test(walk, 12):
        np.testing.assert_array_equal(naive2(walk, 5, 12), np.full(5, walk[-1]))


def test_seasonal_naive():
    x = np.arange(10.0)
    np.testing.assert_array_equal(seasonal_naive(x, 6, 4), [6, 7, 8, 9, 6, 7])
    np.testing.assert_array_equal(seasonal_naive(x, 3, 1), [9, 9, 9])
    np.testing.assert_array_equal(seasonal_naive(x[:3], 2, 4), [2, 2])  # shorter than a season


def test_classical_methods_interface():
    n2, sn = Naive2(), SeasonalNaive()
    with pytest.raises(TypeError):  # no search settings: a config with one is an error
        Naive2(temperature=0.7)
    assert n2.needs_model is False and sn.needs_model is False
    assert (n2.name, sn.name) == ("naive2", "seasonal_naive")
    x = 50 + 10 * np.tile([1.0, 2.0, 3.0, 2.0], 12)
    np.testing.assert_allclose(n2.forecast(x, 6, 4), naive2(x, 6, 4))
    np.testing.assert_array_equal(sn.forecast(x, 6, 4), seasonal_naive(x, 6, 4))


# ------------------------------------------------------------------ official M4 acceptance test

def _read_m4(path: Path) -> dict[str, np.ndarray]:
    out = {}
    with open(path) as f:
        next(f)
        for line in f:
            cells = [c.strip('"') for c in line.rstrip("\r\n").split(",")]
            vals = [c for c in cells[1:] if c not in ("", "NA")]
            out[cells[0]] = np.array(vals, dtype=np.float64)
    return out


@pytest.mark.parametrize("freq,h,m,want_smape,want_mase", [
    ("Hourly", 48, 24, 18.383, 2.395),
    ("Weekly", 13, 1, 9.161, 2.777),
])
def test_naive2_matches_official_m4_submission(freq, h, m, want_smape, want_mase):
    sub_name = "submission-Naive2-hourly-weekly.csv"
    root = m4_root(f"{freq}-train.csv", f"{freq}-test.csv", sub_name)
    train, test = _read_m4(root / f"{freq}-train.csv"), _read_m4(root / f"{freq}-test.csv")
    official = _read_m4(root / sub_name)
    assert len(train) == {"Hourly": 414, "Weekly": 359}[freq]
    s_all, q_all, mismatched = [], [], []
    for sid, x in train.items():
        y, ref = test[sid], official[sid]
        fc = naive2(x, h, m)
        assert ref.shape == (h,)
        if not np.allclose(fc, ref, rtol=1e-3, atol=0):
            mismatched.append(sid)
        s_all.append(smape(y, fc))
        q_all.append(mase(x, y, fc, m))
    assert not mismatched, f"{len(mismatched)} series differ from the official Naive2: {mismatched[:10]}"
    assert np.mean(s_all) == pytest.approx(want_smape, abs=1e-3)
    assert np.mean(q_all) == pytest.approx(want_mase, abs=1e-3)
    assert owa(s_all, q_all, s_all, q_all) == pytest.approx(1.0)
