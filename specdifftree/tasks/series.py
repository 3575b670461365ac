"""A forecasting sample: one series with its held-out future."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Series:
    """One series of a forecasting dataset.

    ``x`` and ``y`` are read-only float64 arrays (copies of what was given). ``x`` is the in-sample history (what a method may see), ``y`` the held-out future of length
    ``horizon`` (used only for scoring and by oracle rewards), ``period`` the seasonal period m
    used by MASE and Naive2 (M4 rules: yearly 1, quarterly 4, monthly 12, weekly 1, daily 1,
    hourly 24).
    """

    id: str
    x: np.ndarray
    y: np.ndarray
    horizon: int
    period: int
    frequency: str = ""
    meta: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
        # the arrays are shared by every run of the process (dataset cache): never writable
        for name in ("x", "y"):
            arr = np.array(getattr(self, name), dtype=np.float64)
            arr.flags.writeable = False
            object.__setattr__(self, name, arr)
        if len(self.y) != self.horizon:
            raise ValueError(f"series {self.id}: {len(self.y)} test values for horizon {self.horizon}")
