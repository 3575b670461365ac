"""M4's Naive2 benchmark and the seasonal naive forecast.

Naive2 (the reference of the M4 OWA), as in the competition's benchmark code:

1. Seasonality test (only when m > 1): the series is seasonal when n ≥ 3m and
   |r_m| > 1.645 · sqrt((1 + 2 Σ_{k=1}^{m−1} r_k²) / n), with r_k the sample autocorrelation
   r_k = Σ_{t=k+1..n} (x_t − x̄)(x_{t−k} − x̄) / Σ_t (x_t − x̄)².
2. If seasonal: classical multiplicative decomposition. Trend = centred moving average of order m
   (for even m the 2×m average, weights (½, 1, …, 1, ½)/m; for odd m the plain m-term average),
   defined for t = ⌊m/2⌋ … n−1−⌊m/2⌋ (0-based). Ratios x_t / trend_t are averaged by position
   t mod m (phase anchored at the first observation), and the m indices are divided by their
   mean so they average 1. The deseasonalised series is x_t / S_{t mod m}.
3. Forecast = last deseasonalised value (naive), multiplied by the continued seasonal indices
   S_{(n + j − 1) mod m} for step j = 1…h (the last m indices of the fitted seasonal component
   repeated).

Deviation kept on purpose: the M4 R code takes r_m from R's ``acf`` whose default maximum lag is
⌊10·log10 n⌋, so a series with 10·log10 n < m is silently non-seasonal there; here the test is the
formula above for every n. The two agree on every M4 series (e.g. hourly series have n ≥ 700).
A series with any value ≤ 0 (multiplicative decomposition undefined) is treated as non-seasonal.
"""

from __future__ import annotations

import numpy as np

__all__ = ["acf", "seasonality_test", "seasonal_indices", "naive2", "seasonal_naive", "naive"]


def _as_1d(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    if x.size == 0:
        raise ValueError("cannot forecast an empty series")
    return x


def acf(x, max_lag: int) -> np.ndarray:
    """Sample autocorrelations r_1 … r_max_lag (biased estimator, as R's ``acf``)."""
    x = _as_1d(x)
    d = x - x.mean()
    den = float(d @ d)
    n = x.size
    if den == 0:
        return np.zeros(max_lag)
    return np.array([float(d[k:] @ d[: n - k]) / den if k < n else 0.0
                     for k in range(1, max_lag + 1)])


def seasonality_test(x, m: int) -> bool:
    """M4's 90% autocorrelation test for seasonality at period m."""
    x = _as_1d(x)
    n, m = x.size, int(m)
    if m <= 1 or n < 3 * m:
        return False
    r = acf(x, m)
    limit = 1.645 * np.sqrt((1.0 + 2.0 * np.sum(r[: m - 1] ** 2)) / n)
    return bool(abs(r[m - 1]) > limit)


def _centred_ma(x: np.ndarray, m: int) -> np.ndarray:
    """Centred moving average of order m (2×m for even m); NaN where undefined."""
    if m % 2 == 0:
        w = np.r_[0.5, np.ones(m - 1), 0.5] / m
    else:
        w = np.ones(m) / m
    half = len(w) // 2
    out = np.full(x.size, np.nan)
    if x.size >= len(w):
        out[half: x.size - half] = np.convolve(x, w, mode="valid")
    return out


def seasonal_indices(x, m: int) -> np.ndarray:
    """Multiplicative seasonal indices S_0 … S_{m−1} (mean 1), phase of the first observation."""
    x = _as_1d(x)
    m = int(m)
    ratio = x / _centred_ma(x, m)
    pad = (-x.size) % m
    table = np.r_[ratio, np.full(pad, np.nan)].reshape(-1, m)
    si = np.nanmean(table, axis=0)
    return si / si.mean()


def naive(x, h: int) -> np.ndarray:
    """Naive (random walk) forecast: the last value repeated."""
    x = _as_1d(x)
    return np.full(int(h), x[-1])


def naive2(x, h: int, m: int) -> np.ndarray:
    """M4 Naive2: naive forecast of the seasonally adjusted series, reseasonalised."""
    x = _as_1d(x)
    h, m = int(h), int(m)
    if m <= 1 or np.any(x <= 0) or not seasonality_test(x, m):
        return naive(x, h)
    si = seasonal_indices(x, m)
    n = x.size
    level = x[-1] / si[(n - 1) % m]
    return level * si[(n + np.arange(h)) % m]


def seasonal_naive(x, h: int, m: int) -> np.ndarray:
    """Seasonal naive: repeat the last full season; m ≤ 1 (or n < m) gives the naive forecast."""
    x = _as_1d(x)
    h, m = int(h), int(m)
    if m <= 1 or x.size < m:
        return naive(x, h)
    last = x[-m:]
    return last[np.arange(h) % m].copy()
