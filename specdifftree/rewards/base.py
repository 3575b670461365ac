"""The reward protocol.

A reward is a callable scoring a batch of candidate outputs for one sample::

    reward(forecasts, texts, valid, context) -> np.ndarray of shape (B,)

- ``forecasts``: float array (B, h) — the parsed, completed forecasts (see the parsing rule);
  for tasks without a numeric output (captions) it is an empty (B, 0) array;
- ``texts``: the B generated texts;
- ``valid``: float array (B,) — share of the h values that parsed (1.0 = fully valid; for
  captions 1.0 for a non-empty caption, else 0.0);
- ``context``: a :class:`RewardContext` for the sample.

It is vectorised over the batch and knows nothing about the search. Invalid outputs must still get
a finite reward. Rewards are built from the ``reward`` config by
:func:`specdifftree.rewards.build_reward`, which wraps them in a
:class:`specdifftree.rewards.build.SafeReward` (failures and non-finite values become a defined
finite value and are counted; see docs/rewards.md).

A reward object may carry two attributes that the framework reads:

- ``oracle`` (bool): it reads ``context.truth`` or a reference (``context.extra``) — information a
  real user would not have. An oracle reward's ``name`` must contain ``"oracle"`` so that every
  config value and output column that names it says so; :func:`build_reward` enforces it.
- ``name`` (str): set from the config by :func:`build_reward`.
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


class BaseReward:
    """Convenience base for the built-in rewards: a ``name`` and the ``oracle`` flag."""

    name: str = "reward"
    oracle: bool = False

    def __call__(self, forecasts: np.ndarray, texts: list[str], valid: np.ndarray,
                 context: RewardContext) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError


def as_forecasts(forecasts, batch: int) -> np.ndarray:
    """``forecasts`` as a float64 (B, h) array (a 1-D input of length B*h is not guessed at)."""
    f = np.asarray(forecasts, dtype=np.float64)
    if f.ndim == 1 and batch == 1:
        f = f[None, :]
    if f.ndim != 2 or f.shape[0] != batch:
        raise ValueError(f"forecasts must have shape (B, h) with B={batch}, got {f.shape}")
    return f
