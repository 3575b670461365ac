"""ORACLE rewards: minus the error against the held-out truth.

They read ``context.truth`` — information no real forecaster has. They exist to study search as an
optimiser of a known objective (as the DTS paper does with known rewards) and are never the
default; their names (``oracle_smape``, ``oracle_mase``) say so in configs and output columns.

    oracle_smape:  r = −sMAPE(y, ŷ),  sMAPE = (200/h) Σ_t |y_t − ŷ_t| / (|y_t| + |ŷ_t|)
    oracle_mase:   r = −MASE(x, y, ŷ, m),
                   MASE = mean_t |y_t − ŷ_t| / ((1/(n−m)) Σ_{t=m+1..n} |x_t − x_{t−m}|)

Conventions: a sMAPE term with |y_t| + |ŷ_t| = 0 counts 0. MASE uses the whole in-sample series
x = ``context.full_history`` and m = ``context.period`` (m = 1 when n ≤ m); when the in-sample
naive error is 0 (constant series) the scale is ``1e-8 · max(mean|x|, 1)`` so the value is defined
and finite. Partially parsed forecasts are scored on their completed values (always finite).
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from ..metrics.m4 import mase_scale, smape
from .base import BaseReward, RewardContext, as_forecasts


def batch_smape(y: np.ndarray, yhat: np.ndarray) -> np.ndarray:
    """sMAPE (in %, 0..200) of each row of yhat (B, h) against y (h,) or (B, h): the M4 metric."""
    return np.asarray(smape(y, yhat), dtype=np.float64)


def naive_scale(x: np.ndarray, m: int) -> float:
    """The MASE denominator (the metric's own, lag 1 when n ≤ m); a zero scale falls back to
    1e-8·max(mean|x|, 1) so the reward stays finite (see module doc)."""
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    d = mase_scale(x, m) if x.size >= 2 else 0.0
    if not d > 0:
        d = 1e-8 * max(float(np.mean(np.abs(x))) if x.size else 0.0, 1.0)
    return d


def batch_mase(x: np.ndarray, y: np.ndarray, yhat: np.ndarray, m: int) -> np.ndarray:
    """MASE of each row of yhat (B, h) against y, scaled by the in-sample series x."""
    y = np.asarray(y, dtype=np.float64)
    yhat = np.asarray(yhat, dtype=np.float64)
    return np.abs(y - yhat).mean(axis=-1) / naive_scale(x, m)


class _Oracle(BaseReward):
    oracle = True

    def _truth(self, context: RewardContext, h: int) -> np.ndarray:
        if context.truth is None:
            raise ConfigError(f"reward {self.name} is an oracle reward and needs the held-out truth, "
                              "which this task does not have; choose another reward")
        y = np.asarray(context.truth, dtype=np.float64).reshape(-1)
        if y.size != h:
            raise ValueError(f"truth has {y.size} values, forecasts have {h}")
        return y


class OracleSMAPE(_Oracle):
    """r = −sMAPE(truth, forecast). ORACLE."""

    name = "oracle_smape"

    def __call__(self, forecasts, texts, valid, context: RewardContext) -> np.ndarray:
        f = as_forecasts(forecasts, len(texts))
        return 0.0 - batch_smape(self._truth(context, f.shape[1]), f)


class OracleMASE(_Oracle):
    """r = −MASE(full_history, truth, forecast, period). ORACLE."""

    name = "oracle_mase"

    def __init__(self):
        self._scale_key = None

    def __call__(self, forecasts, texts, valid, context: RewardContext) -> np.ndarray:
        f = as_forecasts(forecasts, len(texts))
        y = self._truth(context, f.shape[1])
        key = self._scale_key
        if key is None or key[0] is not context.full_history or key[1] != context.period:
            key = (context.full_history, context.period,
                   naive_scale(context.full_history, context.period))
            self._scale_key = key
        return 0.0 - np.abs(y - f).mean(axis=-1) / key[2]
