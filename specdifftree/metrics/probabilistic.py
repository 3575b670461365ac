r"""Scores of a forecast *distribution* given by samples: CRPS, quantiles, MSIS, coverage.

A sample set of one series is an array ``S`` of shape ``(N, h)``: N forecasts over horizon h.
The horizon is always the last axis, the samples the first.

**CRPS** (continuous ranked probability score, Gneiting & Raftery 2007) of the empirical
distribution of the samples at one step t, with truth y_t:

    CRPS_t = (1/N) Σ_i |S_it − y_t| − (1/(2N²)) Σ_i Σ_j |S_it − S_jt|

(the energy form; the pair sum is computed from the sorted samples in O(N log N)). A single sample
(a point forecast) gives CRPS_t = |ŷ_t − y_t|, so the CRPS generalises the absolute error. Two
scalings make series comparable:

- ``crps``: Σ_t CRPS_t / Σ_t |y_t| — the normalised (weighted) CRPS of probabilistic forecasting
  papers (Salinas et al. 2019 "DeepAR"; Gruver et al. 2023 "LLMTime" report it as scaled CRPS);
- ``crps_mase``: (1/h) Σ_t CRPS_t / s, with s the MASE scale of the series (in-sample mean
  absolute seasonal difference): for a point forecast it *equals* MASE, so it reads on MASE's
  scale.

**Quantiles**: empirical quantiles of the samples per step (numpy's default linear
interpolation, R's type 7), at :data:`QUANTILE_LEVELS`.

**MSIS** (M4, Makridakis et al. 2020, eq. for the 95% prediction interval, α = 0.05): with lower
and upper bounds L_t, U_t (the α/2 and 1 − α/2 quantiles),

    MSIS = (1/h) Σ_t [ (U_t − L_t) + (2/α)(L_t − y_t)·1{y_t < L_t} + (2/α)(y_t − U_t)·1{y_t > U_t} ] / s

with the same scale s as MASE. **Coverage**: the share of steps with L_t ≤ y_t ≤ U_t.

A single sample (a point forecast, e.g. greedy or a classical method) has no interval: ``msis``,
``coverage`` and the quantiles are then null; ``crps`` and ``crps_mase`` are its absolute-error
scores.

**Weighted quantile loss** (``wql``): Σ_q Σ_t 2·ρ_q(y_t − Q_q,t) / Σ_t |y_t|, averaged over the
levels (the quantile-grid approximation of ``crps`` used by GluonTS and Chronos).
"""

from __future__ import annotations

import numpy as np

from .m4 import mase_scale

__all__ = ["QUANTILE_LEVELS", "crps_steps", "crps", "crps_mase", "quantiles", "interval_score",
           "msis", "coverage", "wql", "distribution_scores"]

#: quantile levels recorded for every sample set (0.025 and 0.975 bound the 95% interval)
QUANTILE_LEVELS = (0.025, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.975)


def _samples(samples) -> np.ndarray:
    s = np.asarray(samples, dtype=np.float64)
    if s.ndim == 1:
        s = s[None, :]
    if s.ndim != 2 or s.shape[0] == 0:
        raise ValueError(f"samples must have shape (N >= 1, h), got {np.shape(samples)}")
    return s


def crps_steps(samples, y) -> np.ndarray:
    """CRPS of the empirical distribution of ``samples`` (N, h) at each step; shape (h,)."""
    s = _samples(samples)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if y.shape[0] != s.shape[1]:
        raise ValueError(f"truth has {y.shape[0]} steps, samples {s.shape[1]}")
    n = s.shape[0]
    term1 = np.abs(s - y[None, :]).mean(axis=0)
    srt = np.sort(s, axis=0)
    # Σ_i Σ_j |x_i − x_j| = 2 Σ_k (2k − n + 1) x_(k) for sorted x (0-based k)
    w = 2.0 * np.arange(n) - n + 1.0
    pair = 2.0 * (w[:, None] * srt).sum(axis=0)
    return np.maximum(term1 - pair / (2.0 * n * n), 0.0)


def crps(samples, y) -> float:
    """Normalised CRPS: Σ_t CRPS_t / Σ_t |y_t| (NaN when the truth is all zero)."""
    c = crps_steps(samples, y)
    den = float(np.abs(np.asarray(y, dtype=np.float64)).sum())
    with np.errstate(over="ignore"):
        return float(c.sum() / den) if den > 0 else float("nan")


def crps_mase(samples, y, x_insample, m: int) -> float:
    """Mean CRPS over the horizon divided by the MASE scale of the series (= MASE for N = 1)."""
    c = float(crps_steps(samples, y).mean())
    s = mase_scale(x_insample, m)
    if s > 0:
        return c / s
    return 0.0 if c == 0 else float("inf")


def quantiles(samples, levels=QUANTILE_LEVELS) -> np.ndarray:
    """Empirical quantiles per step; shape (len(levels), h)."""
    return np.quantile(_samples(samples), np.asarray(levels, dtype=np.float64), axis=0)


def interval_score(lower, upper, y, alpha: float = 0.05) -> np.ndarray:
    """Per-step interval score of [lower, upper] at level 1 − α (unscaled)."""
    lo, up = np.asarray(lower, dtype=np.float64), np.asarray(upper, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    return ((up - lo) + (2.0 / alpha) * (lo - y) * (y < lo) + (2.0 / alpha) * (y - up) * (y > up))


def msis(lower, upper, y, x_insample, m: int, alpha: float = 0.05) -> float:
    """M4's mean scaled interval score of the (1 − α) interval [lower, upper]."""
    num = float(interval_score(lower, upper, y, alpha).mean())
    s = mase_scale(x_insample, m)
    if s > 0:
        return num / s
    return 0.0 if num == 0 else float("inf")


def coverage(lower, upper, y) -> float:
    """Share of steps whose truth lies in [lower, upper]."""
    y = np.asarray(y, dtype=np.float64)
    return float(np.mean((np.asarray(lower) <= y) & (y <= np.asarray(upper))))


def wql(q: np.ndarray, y, levels=QUANTILE_LEVELS) -> float:
    """Weighted quantile loss of quantile forecasts ``q`` (len(levels), h), averaged over levels."""
    y = np.asarray(y, dtype=np.float64)
    lv = np.asarray(levels, dtype=np.float64)[:, None]
    diff = y[None, :] - np.asarray(q, dtype=np.float64)
    loss = 2.0 * np.maximum(lv * diff, (lv - 1.0) * diff)
    den = float(np.abs(y).sum())
    with np.errstate(over="ignore"):
        return float(loss.sum(axis=1).mean() / den) if den > 0 else float("nan")


def distribution_scores(samples, y, x_insample, m: int, alpha: float = 0.05,
                        levels=QUANTILE_LEVELS) -> dict:
    """Every score of one series' sample set, as the fields of a results row."""
    s = _samples(samples)
    lv = tuple(float(v) for v in levels)
    q = quantiles(s, lv)
    lo = np.quantile(s, alpha / 2, axis=0)
    up = np.quantile(s, 1 - alpha / 2, axis=0)
    point = s.shape[0] == 1  # a point forecast: no interval to score
    return {"n_forecast_samples": int(s.shape[0]),
            "crps": crps(s, y), "crps_mase": crps_mase(s, y, x_insample, m),
            "msis": None if point else msis(lo, up, y, x_insample, m, alpha),
            "coverage": None if point else coverage(lo, up, y),
            "wql": wql(q, y, lv), "quantile_levels": None if point else list(lv),
            "quantiles": None if point else q}
