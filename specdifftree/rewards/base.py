"""The reward protocol.

A reward is a callable scoring a batch of candidate outputs for one sample::

    reward(forecasts, texts, valid, context) -> np.ndarray of shape (B,)

- ``forecasts``: float array (B, h) — the parsed, completed forecasts (see the parsing rule);
- ``texts``: the B generated texts;
- ``valid``: float array (B,) — share of the h values that parsed (1.0 = fully valid);
- ``context``: a :class:`RewardContext` for the sample.

It is vectorised over the batch and knows nothing about the search. Invalid outputs must still get
a finite reward. Rewards are built from the ``reward`` config by :func:`specdifftree.rewards.build`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np


@dataclass
class RewardContext:
    """What a reward may know about the sample.

    ``history``: the values shown to the model (the prompt's context); ``full_history``: the whole
    in-sample series; ``horizon``, ``period``; ``truth``: the held-out future — only *oracle*
    rewards may read it; ``sample``: the task's sample object (e.g. a Series or a caption sample);
    ``extra``: task-specific fields (e.g. ``reference`` caption).
    """

    history: np.ndarray
    full_history: np.ndarray
    horizon: int
    period: int
    truth: np.ndarray | None = None
    sample: Any = None
    extra: dict = field(default_factory=dict)


class Reward(Protocol):
    def __call__(self, forecasts: np.ndarray, texts: list[str], valid: np.ndarray,
                 context: RewardContext) -> np.ndarray: ...
