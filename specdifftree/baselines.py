r"""Standard statistical baselines through ``statsforecast`` (Nixtla), as M4 defined them.

``method=ses|holt|damped|theta|comb`` follow the M4 benchmark code (Makridakis et al. 2020; the
competition's R script ``Benchmarks and Evaluation.R``):

1. the seasonality test and classical multiplicative decomposition of Naive2
   (:mod:`specdifftree.metrics.naive2`: 90% autocorrelation test at lag m when n ≥ 3m; the
   series is divided by its seasonal indices when seasonal);
2. the method on the seasonally adjusted series:

   - ``ses``: simple exponential smoothing, ETS(A,N,N) with the smoothing parameter and the
     initial level estimated (R's ``forecast::ses``);
   - ``holt``: Holt's linear trend, ETS(A,A,N) (``forecast::holt``);
   - ``damped``: the damped trend, ETS(A,Ad,N) (``forecast::holt(damped=TRUE)``);
   - ``theta``: the classic Theta method (Assimakopoulos & Nikolopoulos 2000) as M4's
     ``Theta.classic``: the mean of the least-squares line (theta = 0) and SES on the theta = 2
     line 2x − line, negative forecasts set to 0;
   - ``comb``: the mean of the SES, Holt and Damped forecasts (M4's "Comb S-H-D");

3. the forecast multiplied by the continued seasonal indices.

``method=auto_ets`` and ``method=auto_arima`` are statsforecast's automatic ETS and ARIMA
(Hyndman & Khandakar 2008) with ``season_length`` = the dataset's period, fitted on the raw
series (they model seasonality themselves); ARIMA with R's ``auto.arima`` default of an
approximate likelihood during the order search for long (n > 150) or m > 12 series.

statsforecast is imported when one of these methods forecasts, not when the package loads.
A fit that fails (e.g. a constant series) falls back to the naive forecast of the adjusted
series and is counted in ``fallbacks`` on the method object.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np

from .metrics.naive2 import seasonal_indices, seasonality_test
from .search.classical import ClassicalMethod

log = logging.getLogger(__name__)

__all__ = ["deseasonalise", "SES", "Holt", "Damped", "Theta", "Comb", "AutoETS", "AutoARIMA"]


def deseasonalise(x: np.ndarray, m: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    """(seasonally adjusted x, the h seasonal factors of the forecast steps), as M4 did."""
    x = np.asarray(x, dtype=np.float64)
    n = x.size
    if m <= 1 or np.any(x <= 0) or not seasonality_test(x, m):
        return x, np.ones(h)
    si = seasonal_indices(x, m)
    return x / si[np.arange(n) % m], si[(n + np.arange(h)) % m]


def _ets_forecast(y: np.ndarray, h: int, spec: str, damped: bool = False) -> np.ndarray:
    from statsforecast.models import AutoETS as _AutoETS

    model = _AutoETS(season_length=1, model=spec, damped=damped)
    return np.asarray(model.forecast(y=y, h=h)["mean"], dtype=np.float64)


class _M4Benchmark(ClassicalMethod):
    """Deseasonalise (M4's rule), forecast the adjusted series, reseasonalise."""

    def __init__(self):
        self.fallbacks = 0

    def adjusted_forecast(self, y: np.ndarray, h: int) -> np.ndarray:
        raise NotImplementedError

    def forecast(self, x: np.ndarray, horizon: int, period: int) -> np.ndarray:
        des, si = deseasonalise(x, int(period), int(horizon))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                f = self.adjusted_forecast(des, int(horizon))
            if f.shape != (int(horizon),) or not np.all(np.isfinite(f)):
                raise ValueError(f"non-finite or mis-shaped forecast {f.shape}")
        except Exception as exc:  # noqa: BLE001 - a fit failure on one series
            self.fallbacks += 1
            log.warning("%s: fit failed (%s: %s); naive forecast of the adjusted series",
                        self.name, type(exc).__name__, exc)
            f = np.full(int(horizon), des[-1])
        return f * si


class SES(_M4Benchmark):
    name = "ses"

    def adjusted_forecast(self, y, h):
        return _ets_forecast(y, h, "ANN")


class Holt(_M4Benchmark):
    name = "holt"

    def adjusted_forecast(self, y, h):
        return _ets_forecast(y, h, "AAN")


class Damped(_M4Benchmark):
    name = "damped"

    def adjusted_forecast(self, y, h):
        return _ets_forecast(y, h, "AAN", damped=True)


class Theta(_M4Benchmark):
    name = "theta"

    def adjusted_forecast(self, y, h):
        # M4's Theta.classic: the least-squares line L (theta = 0) and SES on the theta = 2 line
        # 2y − L, averaged with equal weights; negative forecasts become 0
        n = y.size
        t = np.arange(1, n + 1, dtype=np.float64)
        slope, intercept = np.polyfit(t, y, 1)
        line_in = intercept + slope * t
        line_out = intercept + slope * np.arange(n + 1, n + h + 1, dtype=np.float64)
        ses = _ets_forecast(2.0 * y - line_in, h, "ANN")
        return np.maximum(0.5 * ses + 0.5 * line_out, 0.0)


class Comb(_M4Benchmark):
    name = "comb"

    def adjusted_forecast(self, y, h):
        return (_ets_forecast(y, h, "ANN") + _ets_forecast(y, h, "AAN")
                + _ets_forecast(y, h, "AAN", damped=True)) / 3.0


class _Auto(ClassicalMethod):
    def __init__(self):
        self.fallbacks = 0

    def model(self, period: int):
        raise NotImplementedError

    def forecast(self, x: np.ndarray, horizon: int, period: int) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                f = np.asarray(self.model(max(1, int(period))).forecast(y=x, h=int(horizon))["mean"],
                               dtype=np.float64)
            if f.shape != (int(horizon),) or not np.all(np.isfinite(f)):
                raise ValueError(f"non-finite or mis-shaped forecast {f.shape}")
        except Exception as exc:  # noqa: BLE001
            self.fallbacks += 1
            log.warning("%s: fit failed (%s: %s); naive forecast", self.name, type(exc).__name__, exc)
            f = np.full(int(horizon), x[-1])
        return f


class AutoETS(_Auto):
    name = "auto_ets"

    def model(self, period):
        from statsforecast.models import AutoETS as _AutoETS

        return _AutoETS(season_length=period)


class AutoARIMA(_Auto):
    name = "auto_arima"

    def model(self, period):
        from statsforecast.models import AutoARIMA as _AutoARIMA

        # approximation=None: R's auto.arima default (approximate the likelihood during the
        # search when n > 150 or m > 12, then refit the chosen model exactly)
        return _AutoARIMA(season_length=period, approximation=None)
