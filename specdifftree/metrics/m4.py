"""The M4 accuracy measures: sMAPE, MASE and OWA (Makridakis, Spiliotis & Assimakopoulos, 2020).

All functions are vectorised numpy. The horizon is always the **last axis**, so a batch of
candidate forecasts for one series (shape ``(k, h)``) is scored in one call.

sMAPE  = (200 / h) · Σ_t |y_t − ŷ_t| / (|y_t| + |ŷ_t|)
         a term with |y_t| + |ŷ_t| = 0 (both zero, i.e. a perfect forecast) counts as 0.
MASE   = mean_t |y_t − ŷ_t| / s,   s = 1/(n − m) · Σ_{t=m+1..n} |x_t − x_{t−m}|
         m is the seasonal period; when n ≤ m the non-seasonal scale (m = 1) is used.
         Zero scale (a constant in-sample series at lag m): MASE = 0 when the forecast is
         exact (0/0 := 0) and +inf otherwise.  A series with n < 2 has no scale: ValueError.
OWA    = ½ · (sMAPE / sMAPE_Naive2 + MASE / MASE_Naive2), each quantity being the **average over
         all series** of a dataset (array arguments are averaged here; scalars are taken as
         averages already).

NaN in the inputs propagates (forecasts are expected to be complete).
"""

from __future__ import annotations

import numpy as np

__all__ = ["smape", "mase", "mase_scale", "owa"]


def smape(y, yhat) -> np.ndarray | float:
    """Symmetric MAPE in percent, in [0, 200]; averaged over the last axis (the horizon)."""
    y = np.asarray(y, dtype=np.float64)
    yhat = np.asarray(yhat, dtype=np.float64)
    num = np.abs(y - yhat)
    den = np.abs(y) + np.abs(yhat)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)
    terms = np.where(np.isnan(num) | np.isnan(den), np.nan, terms)
    out = 200.0 * terms.mean(axis=-1)
    return float(out) if out.ndim == 0 else out


def mase_scale(x_insample, m: int) -> float:
    """In-sample mean absolute seasonal difference at lag m (lag 1 when the series has n ≤ m)."""
    x = np.asarray(x_insample, dtype=np.float64).reshape(-1)
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"MASE needs at least 2 in-sample values, got {n}")
    m = int(m)
    if m < 1 or n <= m:
        m = 1
    return float(np.mean(np.abs(x[m:] - x[:-m])))


def mase(x_insample, y, yhat, m: int) -> np.ndarray | float:
    """Mean absolute scaled error of ``yhat`` (shape ``(..., h)``) for one series.

    ``x_insample`` is the 1-D history of that series, ``m`` its seasonal period.
    """
    scale = mase_scale(x_insample, m)
    y = np.asarray(y, dtype=np.float64)
    yhat = np.asarray(yhat, dtype=np.float64)
    mae = np.abs(y - yhat).mean(axis=-1)
    if scale > 0:
        out = mae / scale
    else:
        with np.errstate(invalid="ignore"):
            out = np.where(mae == 0, 0.0, np.where(np.isnan(mae), np.nan, np.inf))
    out = np.asarray(out, dtype=np.float64)
    return float(out) if out.ndim == 0 else out


def owa(smape_value, mase_value, smape_naive2, mase_naive2) -> float:
    """Overall Weighted Average relative to Naive2; arrays are averaged over series first."""
    s, q = float(np.mean(smape_value)), float(np.mean(mase_value))
    s2, q2 = float(np.mean(smape_naive2)), float(np.mean(mase_naive2))
    if not (s2 > 0 and q2 > 0):
        raise ValueError(f"OWA needs positive Naive2 sMAPE and MASE, got {s2} and {q2}")
    return 0.5 * (s / s2 + q / q2)
