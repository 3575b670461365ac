"""Format reward: the share of the h values that parsed.

    r = valid ∈ [0, 1]

(1.0 when every one of the h fields is a plain number; for captions 1.0 for a non-empty caption.)
It reads neither the truth nor the context and is finite by construction.
"""

from __future__ import annotations

import numpy as np

from .base import BaseReward, RewardContext


class FormatReward(BaseReward):
    name = "format"

    def __call__(self, forecasts, texts, valid, context: RewardContext) -> np.ndarray:
        v = np.asarray(valid, dtype=np.float64).reshape(-1)
        if v.shape[0] != len(texts):
            raise ValueError(f"valid has {v.shape[0]} entries for {len(texts)} texts")
        return np.clip(v, 0.0, 1.0)
