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
:class:`specdifftree.rewards.build.SafeReward`.

**The failure rule** (the one rule of the project, see docs/rewards.md): a reward call that raises
(anything but the project's own errors) or returns the wrong number of values fails whole; a
NaN/±inf value fails alone. A failed value becomes the reward's ``failure_reward`` (default
:data:`DEFAULT_FAILURE_REWARD`) and is flagged *failed*. :class:`RewardBatch` is the outcome of
one call after the rule (every value finite); :class:`RewardDiagnostics` adds up the batches of
one sample (the ``reward_*`` columns of results.jsonl). The search's reward oracle
(:class:`specdifftree.search.base.RewardOracle`) receives batches, so no NaN reaches a search, and
the methods drop a failed rollout.

A reward object may carry two attributes that the framework reads:

- ``oracle`` (bool): it reads ``context.truth`` or a reference (``context.extra``) — information a
  real user would not have. An oracle reward's ``name`` must contain ``"oracle"`` so that every
  config value and output column that names it says so; :func:`build_reward` enforces it.
- ``name`` (str): set from the config by :func:`build_reward`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np

#: the value a failed reward gets unless the reward config sets ``failure_reward``
DEFAULT_FAILURE_REWARD = -1000.0


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


def describe_error(exc: BaseException) -> str:
    """``"Type: first line of the message"`` (the form of ``reward_error`` and ``error``)."""
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


@dataclass(frozen=True)
class RewardBatch:
    """The rewards of one batch after the failure rule (module docstring).

    ``values``: (B,) finite floats; ``failed``: (B,) bools, True where the value is the failure
    stand-in; ``error``: ``"Type: message"`` when the whole call failed, else None;
    ``nonfinite``: values the reward returned as NaN/±inf (each failed alone).
    """

    values: np.ndarray
    failed: np.ndarray
    error: str | None = None
    nonfinite: int = 0

    def __post_init__(self):
        v = np.asarray(self.values, dtype=np.float64).reshape(-1)
        f = np.asarray(self.failed, dtype=bool).reshape(-1)
        if f.shape != v.shape:
            raise ValueError(f"RewardBatch: {f.shape[0]} failed flags for {v.shape[0]} values")
        if not np.isfinite(v).all():
            raise ValueError("RewardBatch values must be finite: build it with RewardBatch.of, "
                             "which applies the failure rule")
        object.__setattr__(self, "values", v)
        object.__setattr__(self, "failed", f)

    @classmethod
    def of(cls, values, failure_reward: float = DEFAULT_FAILURE_REWARD) -> "RewardBatch":
        """The batch of a call that returned ``values``: NaN/±inf ones become ``failure_reward``
        and are flagged."""
        v = np.asarray(values, dtype=np.float64).reshape(-1)
        bad = ~np.isfinite(v)
        if bad.any():
            v = np.where(bad, float(failure_reward), v)
        return cls(v, bad, None, int(bad.sum()))

    @classmethod
    def failure(cls, size: int, error: str,
                failure_reward: float = DEFAULT_FAILURE_REWARD) -> "RewardBatch":
        """The batch of a call that failed whole: every value ``failure_reward``, flagged."""
        return cls(np.full(size, float(failure_reward)), np.ones(size, dtype=bool), error, 0)

    def shifted(self, delta: np.ndarray) -> "RewardBatch":
        """The same batch with ``values + delta`` (e.g. a penalty; the flags are kept)."""
        return replace(self, values=self.values + np.asarray(delta, dtype=np.float64))


@dataclass
class RewardDiagnostics:
    """What the reward did on one sample: the sum of its batches (see :meth:`row`)."""

    #: reward calls (batches)
    calls: int = 0
    #: values computed (for a search: distinct continuations scored)
    evaluations: int = 0
    #: calls that failed whole (raised or returned the wrong shape)
    failures: int = 0
    #: values returned as NaN/±inf
    nonfinite_values: int = 0
    #: ``"Type: message"`` of the latest call that failed whole (None: none did)
    last_error: str | None = None
    #: seconds spent in the reward (as the caller timed it; the search's include decoding and
    #: parsing the continuations)
    time_s: float = 0.0

    def add(self, batch: RewardBatch, time_s: float = 0.0) -> None:
        self.calls += 1
        self.evaluations += int(batch.values.shape[0])
        if batch.error is not None:
            self.failures += 1
            self.last_error = batch.error
        self.nonfinite_values += int(batch.nonfinite)
        self.time_s += float(time_s)

    def copy(self) -> "RewardDiagnostics":
        return replace(self)

    def row(self) -> dict:
        """The results.jsonl columns (README, "results.jsonl")."""
        return {"reward_calls": self.calls, "reward_evaluations": self.evaluations,
                "reward_failures": self.failures, "reward_nonfinite_values": self.nonfinite_values,
                "reward_error": self.last_error, "reward_time_s": self.time_s}
