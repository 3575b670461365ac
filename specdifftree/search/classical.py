"""Methods with no model: classical benchmarks that forecast from the history alone.

They do not follow the search :class:`~specdifftree.search.base.Method` protocol; the runner
recognises them by ``needs_model = False`` and calls :meth:`forecast` on the full in-sample
history of each series (not the prompt context). Constructors ignore unknown keyword arguments
because the method config also carries the search knobs shared by all methods.
"""

from __future__ import annotations

import numpy as np

from ..metrics.naive2 import naive2, seasonal_naive


class ClassicalMethod:
    name: str = "classical"
    needs_model: bool = False

    def forecast(self, x: np.ndarray, horizon: int, period: int) -> np.ndarray:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Naive2(ClassicalMethod):
    """M4's Naive2 (naive forecast of the seasonally adjusted series), see metrics.naive2."""

    name = "naive2"

    def forecast(self, x: np.ndarray, horizon: int, period: int) -> np.ndarray:
        return naive2(x, horizon, period)


class SeasonalNaive(ClassicalMethod):
    """Repeat the last season (period ≤ 1 or a history shorter than one season: naive)."""

    name = "seasonal_naive"

    def forecast(self, x: np.ndarray, horizon: int, period: int) -> np.ndarray:
        return seasonal_naive(x, horizon, period)
