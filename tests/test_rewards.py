"""Rewards: spectral, oracle, format, composite, user rewards and the SafeReward guard."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from specdifftree.errors import ConfigError
from specdifftree.rewards import RewardContext, RewardDiagnostics, SafeReward, build_reward
from specdifftree.rewards.oracle import batch_mase, batch_smape
from specdifftree.rewards.spectral import SpectralReward, bin_weights, psd

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "specdifftree" / "conf" / "reward"


def ctx(history, horizon, truth=None, period=1, full=None):
    history = np.asarray(history, dtype=float)
    return RewardContext(history=history, full_history=history if full is None else full,
                         horizon=horizon, period=period, truth=truth)


def sine(n, period, amp=1.0, phase=0.0, level=50.0, start=0):
    t = np.arange(start, start + n)
    return level + amp * np.sin(2 * np.pi * t / period + phase)


# ---------------------------------------------------------------- spectral: definition pieces


def test_psd_density_scaling_parseval():
    """Boxcar, no detrend: Σ_k S(f_k) Δf over the one-sided grid equals the mean square."""
    rng = np.random.default_rng(0)
    for n in (7, 8, 18, 48):
        x = rng.normal(size=(3, n))
        s = psd(x, n, "none", "boxcar")
        assert s.shape == (3, n // 2 + 1)
        np.testing.assert_allclose(s.sum(axis=1) / n, (x * x).mean(axis=1), rtol=1e-12)
        # Hann: the same with the window's energy, Σ S/n = Σ (w x)² / Σ w²
        w = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)
        sh = psd(x, n, "none", "hann")
        np.testing.assert_allclose(sh.sum(axis=1) / n, ((w * x) ** 2).sum(axis=1) / (w * w).sum(),
                                   rtol=1e-12)


def test_psd_peak_at_the_sines_frequency_and_linear_trend_removed():
    h = 24
    for k in (1, 3, 5, 8):
        x = 3.0 + 0.7 * np.arange(h) + np.sin(2 * np.pi * k * np.arange(h) / h)
        s = psd(x[None], h, "linear", "hann")[0]
        assert int(np.argmax(s[1:])) + 1 == k
    line = 5.0 - 2.0 * np.arange(h)
    assert np.allclose(psd(line[None], h, "linear", "hann"), 0.0, atol=1e-20)


def test_bin_weights_cover_the_band():
    for h in (6, 7, 18, 48):
        w = bin_weights(h)
        assert len(w) == h // 2
        assert math.isclose(w.sum(), 0.5 - 0.5 / h)


# ---------------------------------------------------------------- spectral: behaviour

@pytest.mark.parametrize("h,period,other", [(18, 6, 3), (18, 12, 4), (24, 12, 5), (48, 12, 7),
                                            (48, 24, 6), (12, 4, 12), (8, 4, 8)])
def test_spectral_prefers_the_contexts_dominant_period(h, period, other):
    n = 240
    rng = np.random.default_rng(h * 100 + period)
    hist = sine(n, period, amp=4.0) + 0.1 * rng.normal(size=n)
    same = sine(h, period, amp=4.0, start=n) + 0.1 * rng.normal(size=h)
    diff = sine(h, other, amp=4.0, start=n) + 0.1 * rng.normal(size=h)
    r = SpectralReward(gamma=1.0)(np.stack([same, diff]), ["", ""], np.ones(2), ctx(hist, h))
    assert r[0] > r[1]
    assert np.all(r <= 0)


@settings(max_examples=40, deadline=None)
@given(period=st.sampled_from([4, 6, 12]), other=st.sampled_from([3, 5, 8, 16]),
       h=st.sampled_from([12, 18, 24]), amp=st.floats(0.1, 1e3), phase=st.floats(0, 6.28),
       noise=st.floats(0, 0.1), seed=st.integers(0, 2**16))
def test_spectral_prefers_dominant_period_hypothesis(period, other, h, amp, phase, noise, seed):
    if abs(h / period - h / other) < 2 or period > h:  # distinguishable on the h-point grid
        return
    rng = np.random.default_rng(seed)
    n = 200
    hist = sine(n, period, amp, phase) + noise * amp * rng.normal(size=n)
    same = sine(h, period, amp, phase, start=n) + noise * amp * rng.normal(size=h)
    diff = sine(h, other, amp, phase, start=n) + noise * amp * rng.normal(size=h)
    r = SpectralReward()(np.stack([same, diff]), ["", ""], np.ones(2), ctx(hist, h))
    assert r[0] > r[1]


@settings(max_examples=40, deadline=None)
@given(c=st.floats(1e-6, 1e6), seed=st.integers(0, 2**16), h=st.sampled_from([6, 13, 18, 48]))
def test_spectral_is_scale_invariant(c, seed, h):
    rng = np.random.default_rng(seed)
    hist = rng.normal(size=150).cumsum() + 100
    f = rng.normal(size=(5, h)).cumsum(axis=1) + 100
    f[0] = 100.0  # a flat forecast exercises the floor ε
    rew = SpectralReward(gamma=2.0)
    r1 = rew(f, [""] * 5, np.ones(5), ctx(hist, h))
    r2 = SpectralReward(gamma=2.0)(c * f, [""] * 5, np.ones(5), ctx(c * hist, h))
    np.testing.assert_allclose(r2, r1, rtol=1e-8, atol=1e-10)


def test_spectral_gamma_scales_and_batch_equals_rows():
    rng = np.random.default_rng(1)
    hist = sine(120, 12) + 0.2 * rng.normal(size=120)
    f = rng.normal(size=(6, 18)) + 50
    c = ctx(hist, 18)
    r1 = SpectralReward(gamma=1.0)(f, [""] * 6, np.ones(6), c)
    r3 = SpectralReward(gamma=3.0)(f, [""] * 6, np.ones(6), c)
    np.testing.assert_allclose(r3, 3 * r1, rtol=1e-12)
    rows = [SpectralReward()(f[i:i + 1], [""], np.ones(1), c)[0] for i in range(6)]
    np.testing.assert_allclose(r1, rows, rtol=1e-12)
    assert np.all(SpectralReward(gamma=0.0)(f, [""] * 6, np.ones(6), c) == 0)


def test_spectral_defined_on_short_context_and_constant_series():
    f = np.array([[1.0, 2, 3, 1, 2, 3]])
    assert SpectralReward()(f, [""], np.ones(1), ctx([1.0, 2.0, 3.0], 6))[0] == 0.0  # < min_context
    r = SpectralReward()(f, [""], np.ones(1), ctx([1.0, 3, 2, 5, 4], 6))  # context shorter than h
    assert np.isfinite(r).all()
    r = SpectralReward()(np.stack([f[0], np.full(6, 7.0)]), ["", ""], np.ones(2), ctx(np.full(30, 7.0), 6))
    assert np.isfinite(r).all() and r[1] > r[0]  # constant context: the flat forecast is closest
    assert SpectralReward()(np.zeros((2, 1)), ["", ""], np.ones(2), ctx(np.arange(20.0), 1)).tolist() == [0, 0]


@pytest.mark.parametrize("kw", [{"gamma": -1}, {"gamma": float("nan")}, {"detrend": "cubic"},
                                {"window": "kaiser"}, {"overlap": 1.0}, {"floor": 0},
                                {"max_windows": 0}, {"source": "truth"}])
def test_spectral_bad_config(kw):
    with pytest.raises(ConfigError):
        SpectralReward(**kw)


def test_spectral_window_options_and_max_windows():
    rng = np.random.default_rng(3)
    hist = sine(300, 12) + rng.normal(size=300) * 0.3
    f = sine(24, 12, start=300)[None]
    vals = [SpectralReward(detrend=d, window=w, max_windows=m)(f, [""], np.ones(1), ctx(hist, 24))[0]
            for d in ("linear", "constant", "none") for w in ("hann", "boxcar") for m in (None, 2)]
    assert np.isfinite(vals).all() and len(set(np.round(vals, 12))) > 1


# ---------------------------------------------------------------- oracle rewards


def smape_textbook(y, yhat):
    h = len(y)
    total = 0.0
    for a, b in zip(y, yhat):
        den = abs(a) + abs(b)
        total += abs(a - b) / den if den else 0.0
    return 200.0 / h * total


def mase_textbook(x, y, yhat, m):
    n = len(x)
    scale = sum(abs(x[t] - x[t - m]) for t in range(m, n)) / (n - m)
    return sum(abs(a - b) for a, b in zip(y, yhat)) / len(y) / scale


finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)


@settings(max_examples=60, deadline=None)
@given(h=st.integers(1, 20), b=st.integers(1, 5), data=st.data())
def test_oracle_smape_equals_minus_textbook(h, b, data):
    y = np.array(data.draw(st.lists(finite, min_size=h, max_size=h)))
    f = np.array(data.draw(st.lists(st.lists(finite, min_size=h, max_size=h), min_size=b, max_size=b)))
    rew = build_reward(OmegaConf.load(CONF / "oracle_smape.yaml"))
    r = rew(f, [""] * b, np.ones(b), ctx(np.arange(10.0), h, truth=y))
    expected = [-smape_textbook(y, row) for row in f]
    np.testing.assert_allclose(r, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(batch_smape(y, f), [-e for e in expected], rtol=1e-12, atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(h=st.integers(1, 12), n=st.integers(2, 40), m=st.sampled_from([1, 4, 12]), data=st.data())
def test_oracle_mase_equals_minus_textbook(h, n, m, data):
    pos = st.floats(1.0, 1e4)
    x = np.array(data.draw(st.lists(pos, min_size=n, max_size=n)))
    x[1] = x[0] + 1.0  # the in-sample naive error is never 0 here
    y = np.array(data.draw(st.lists(pos, min_size=h, max_size=h)))
    f = np.array(data.draw(st.lists(st.lists(pos, min_size=h, max_size=h), min_size=3, max_size=3)))
    m_used = m if n > m else 1
    if m_used > 1 and np.all(x[m_used:] == x[:-m_used]):
        return
    rew = build_reward(OmegaConf.load(CONF / "oracle_mase.yaml"))
    r = rew(f, [""] * 3, np.ones(3), ctx(x[-5:], h, truth=y, period=m, full=x))
    expected = [-mase_textbook(x, y, row, m_used) for row in f]
    np.testing.assert_allclose(r, expected, rtol=1e-12)
    np.testing.assert_allclose(batch_mase(x, y, f, m), [-e for e in expected], rtol=1e-12)


def test_oracle_perfect_forecast_scores_zero_and_constant_insample_is_finite():
    y = np.array([3.0, 4.0, 5.0])
    for name in ("oracle_smape", "oracle_mase"):
        rew = build_reward(OmegaConf.load(CONF / f"{name}.yaml"))
        r = rew(np.stack([y, y + 1]), ["", ""], np.ones(2), ctx(np.full(10, 2.0), 3, truth=y, period=4))
        assert r[0] == 0.0 and r[1] < 0 and np.isfinite(r).all()


def test_oracle_without_truth_is_a_config_error():
    rew = build_reward(OmegaConf.load(CONF / "oracle_smape.yaml"))
    with pytest.raises(ConfigError, match="oracle"):
        rew(np.ones((2, 3)), ["", ""], np.ones(2), ctx(np.arange(10.0), 3))


# ---------------------------------------------------------------- configs, format, composite


def test_every_reward_config_builds_and_is_finite_on_invalid_outputs():
    h = 18
    hist = sine(100, 12)
    c = ctx(hist, h, truth=sine(h, 12, start=100), period=12)
    c.extra["reference"] = "a seasonal series"
    # completed forecasts of partly/un-parsed outputs: repeats of the last context value
    f = np.stack([np.full(h, hist[-1]), sine(h, 12, start=100), np.full(h, hist[-1])])
    valid = np.array([0.0, 1.0, 0.5])
    names = sorted(p.stem for p in CONF.glob("*.yaml"))
    assert set(names) >= {"spectral", "oracle_smape", "oracle_mase", "format", "composite",
                          "caption_similarity"}
    for name in names:
        cfg = OmegaConf.load(CONF / f"{name}.yaml")
        rew = build_reward(cfg)
        assert isinstance(rew, SafeReward) and rew.name == cfg.name
        r = rew(f, ["", "x", "y"], valid, c)
        assert r.shape == (3,) and np.isfinite(r).all(), name
        assert rew.oracle == ("oracle" in rew.name)
        if rew.oracle:
            assert "ORACLE" in (CONF / f"{name}.yaml").read_text()


def test_format_reward_is_share_parsed():
    rew = build_reward(OmegaConf.load(CONF / "format.yaml"))
    v = np.array([0.0, 0.25, 1.0])
    assert rew(np.zeros((3, 4)), ["", "", ""], v, ctx(np.arange(5.0), 4)).tolist() == v.tolist()


def test_invalid_penalty_applies_to_the_unparsed_share():
    cfg = OmegaConf.load(CONF / "format.yaml")
    cfg.invalid_penalty = 2.0
    rew = build_reward(cfg)
    v = np.array([0.0, 0.5, 1.0])
    np.testing.assert_allclose(rew(np.zeros((3, 4)), [""] * 3, v, ctx(np.arange(5.0), 4)),
                               v - 2.0 * (1 - v))


def test_composite_is_the_weighted_sum():
    h = 12
    hist = sine(100, 6) + 0.1 * np.random.default_rng(0).normal(size=100)
    truth = sine(h, 6, start=100)
    f = np.stack([truth, truth * 1.1, np.full(h, 50.0)])
    v = np.array([1.0, 0.5, 0.0])
    c = ctx(hist, h, truth=truth)
    cfg = {"name": "oracle_mix", "_target_": "specdifftree.rewards.composite.CompositeReward",
           "components": {"spectral": {"weight": 0.5, "gamma": 2.0}, "format": {"weight": 3.0},
                          "oracle_smape": {"weight": 0.1},
                          "smooth": {"type": "spectral", "weight": 1.0, "gamma": 1.0}}}
    r = build_reward(cfg)(f, [""] * 3, v, c)
    expected = (0.5 * SpectralReward(gamma=2.0)(f, [""] * 3, v, c) + 3.0 * v
                - 0.1 * batch_smape(truth, f) + SpectralReward(gamma=1.0)(f, [""] * 3, v, c))
    np.testing.assert_allclose(r, expected, rtol=1e-12)
    cfg["name"] = "mix"
    with pytest.raises(ConfigError, match="oracle"):
        build_reward(cfg)


def test_spectral_with_task_reward():
    h = 12
    truth = sine(h, 6, start=100)
    c = ctx(sine(100, 6), h, truth=truth)
    f = np.stack([truth, truth + 3])
    rew = build_reward({"name": "oracle_spectral", "_target_": "specdifftree.rewards.spectral.SpectralReward",
                        "gamma": 1.0, "task": "oracle_smape"})
    assert rew.oracle
    expected = SpectralReward()(f, ["", ""], np.ones(2), c) - batch_smape(truth, f)
    np.testing.assert_allclose(rew(f, ["", ""], np.ones(2), c), expected, rtol=1e-12)
    with pytest.raises(ConfigError, match="oracle"):
        build_reward({"name": "spectral", "_target_": "specdifftree.rewards.spectral.SpectralReward",
                      "task": "oracle_smape"})


@pytest.mark.parametrize("cfg,match", [
    ({"name": "x", "_target_": "no_such_module_xyz.f"}, "cannot import"),
    ({"name": "x", "_target_": "specdifftree.rewards.spectral.Nope"}, "no attribute"),
    ({"name": "x", "_target_": "nodots"}, "dotted"),
    ({"name": "x"}, "_target_"),
    ({"name": "spectral", "_target_": "specdifftree.rewards.spectral.SpectralReward", "gama": 1}, "gama"),
    ({"name": "bad name", "_target_": "specdifftree.rewards.format.FormatReward"}, "identifier"),
    ({"name": "format", "_target_": "specdifftree.rewards.format.FormatReward",
      "failure_reward": float("nan")}, "finite"),
    ({"name": "composite", "_target_": "specdifftree.rewards.composite.CompositeReward",
      "components": {"nonesuch": {"weight": 1}}}, "unknown"),
    ({"name": "composite", "_target_": "specdifftree.rewards.composite.CompositeReward",
      "components": {}}, "non-empty"),
])
def test_build_errors_are_config_errors(cfg, match):
    with pytest.raises(ConfigError, match=match):
        build_reward(cfg)


# ---------------------------------------------------------------- user rewards and the guard

USER_MODULE = '''
import numpy as np

def my_reward(forecasts, texts, valid, context, target=0.0):
    """Minus the mean distance of the forecast to a target level."""
    return -np.abs(forecasts - target).mean(axis=1)

def flaky(forecasts, texts, valid, context):
    if texts[0] == "boom":
        raise RuntimeError("boom")
    out = np.ones(len(texts))
    out[[t == "nan" for t in texts]] = np.nan
    return out

def wrong_shape(forecasts, texts, valid, context):
    return np.ones(len(texts) + 1)

class Level:
    def __init__(self, target=0.0):
        self.target = target
    def __call__(self, forecasts, texts, valid, context):
        return -np.abs(forecasts.mean(axis=1) - self.target)

def peek(forecasts, texts, valid, context):
    return -np.abs(forecasts - context.truth).sum(axis=1)
peek.oracle = True
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    name = "my_reward_module_for_tests"
    (tmp_path / f"{name}.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def test_user_function_and_class_rewards(user_module):
    f = np.array([[1.0, 3.0], [5.0, 5.0]])
    c = ctx(np.arange(5.0), 2, truth=np.array([1.0, 3.0]))
    rew = build_reward({"name": "mine", "_target_": f"{user_module}.my_reward", "target": 2.0})
    np.testing.assert_allclose(rew(f, ["", ""], np.ones(2), c), [-1.0, -3.0])
    rew = build_reward({"name": "level", "_target_": f"{user_module}.Level", "target": 4.0})
    np.testing.assert_allclose(rew(f, ["", ""], np.ones(2), c), [-2.0, -1.0])
    with pytest.raises(ConfigError, match="oracle"):
        build_reward({"name": "peek", "_target_": f"{user_module}.peek"})
    rew = build_reward({"name": "oracle_peek", "_target_": f"{user_module}.peek"})
    assert rew.oracle and rew(f, ["", ""], np.ones(2), c).tolist() == [0.0, -6.0]
    with pytest.raises(ConfigError, match="scale"):
        build_reward({"name": "mine", "_target_": f"{user_module}.my_reward", "scale": 2.0})


def test_failures_and_nonfinite_are_counted_and_reported_once(user_module, caplog):
    rew = build_reward({"name": "flaky", "_target_": f"{user_module}.flaky", "failure_reward": -7.0})
    c = ctx(np.arange(5.0), 2)
    f = np.zeros((3, 2))
    diag = RewardDiagnostics()
    with caplog.at_level(logging.WARNING, logger="specdifftree.rewards"):
        for _ in range(3):
            assert rew(f, ["boom", "a", "b"], np.ones(3), c).tolist() == [-7.0] * 3
            boom = rew.score(f, ["boom", "a", "b"], np.ones(3), c)
            assert boom.failed.all() and boom.error.startswith("RuntimeError") and not boom.nonfinite
            diag.add(boom)
            nan = rew.score(f, ["a", "nan", "nan"], np.ones(3), c)
            assert nan.values.tolist() == [1.0, -7.0, -7.0] and nan.failed.tolist() == [0, 1, 1]
            assert nan.error is None and nan.nonfinite == 2
            diag.add(nan)
    assert (diag.calls, diag.evaluations, diag.failures, diag.nonfinite_values) == (6, 18, 3, 6)
    assert diag.row()["reward_failures"] == 3 and diag.row()["reward_nonfinite_values"] == 6
    assert diag.row()["reward_error"] == boom.error
    msgs = [r.getMessage() for r in caplog.records]
    assert len(msgs) == 2 and any("raised RuntimeError" in m for m in msgs)
    bad = build_reward({"name": "ws", "_target_": f"{user_module}.wrong_shape"})
    ws = bad.score(f, ["a", "b", "c"], np.ones(3), c)
    assert ws.values.tolist() == [-1000.0] * 3 and ws.failed.all() and ws.error.startswith("ValueError")


def test_nonfinite_forecast_values_get_the_failure_reward():
    rew = build_reward(OmegaConf.load(CONF / "spectral.yaml"))
    f = np.stack([sine(12, 6), np.full(12, np.inf)])
    b = rew.score(f, ["", ""], np.ones(2), ctx(sine(60, 6), 12))
    assert np.isfinite(b.values[0]) and b.values[1] == -1000.0 and b.nonfinite == 1
    assert b.failed.tolist() == [False, True]


def test_reward_time_per_batch_is_small():
    """Timing guard (loose): one batch of 20 forecasts, h = 48, takes well under 50 ms."""
    import time
    rng = np.random.default_rng(0)
    hist = rng.normal(size=200).cumsum()
    c = ctx(hist, 48, truth=rng.normal(size=48))
    f = rng.normal(size=(20, 48))
    for name in ("spectral", "oracle_smape", "oracle_mase", "composite"):
        rew = build_reward(OmegaConf.load(CONF / f"{name}.yaml"))
        rew(f, [""] * 20, np.ones(20), c)
        t0 = time.perf_counter()
        for _ in range(10):
            rew(f, [""] * 20, np.ones(20), c)
        assert (time.perf_counter() - t0) / 10 < 0.05, name
