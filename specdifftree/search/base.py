"""The protocol every search method follows.

A method gets a Session (model access, the :class:`~specdifftree.backend.base.Session` protocol), a batched reward
oracle over complete continuations, a :class:`Budget` and a numpy ``Generator``; it returns a
:class:`SearchResult`. Methods are stateless between samples and never call the model directly.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from ..backend.base import Session
from ..errors import ConfigError
from ..rewards.base import RewardBatch, RewardDiagnostics

Tokens = tuple[int, ...]


@dataclass
class Budget:
    """How much search a method may do on one sample.

    ``rollouts``: number of rollouts (simulations, each ending in a complete continuation);
    ``tokens``: tokens processed by the Session, all model work included (prompt prefill too). A
    method stops when either is used up; ``None`` means unlimited, and a method that draws rollouts
    until the budget stops it needs at least one of them (see :class:`Meter`; the CLI's
    ``budget.rollouts`` is 20 while ``budget.tokens`` is null, conf/config.yaml). ``max_new_tokens``
    is the depth limit D: a complete continuation has at most D tokens after the prompt.
    """

    rollouts: int | None = None
    tokens: int | None = None
    max_new_tokens: int = 50


@dataclass
class SearchResult:
    """What a method returns for one sample; methods build it with
    :func:`specdifftree.search.stats.build_result` (the one place its statistics are made).

    ``tokens``: the chosen continuation; ``reward``: its reward; ``logprob``: log p_θ(tokens) under
    the base model at temperature 1 when the method knows it (else None); ``samples``: the
    method's returned samples (see docs/search.md, per method), with ``sample_rewards`` and
    ``samples_independent`` (whether they are independent draws); ``stats``: tree/search statistics
    (rollouts, nodes, max_depth, mean_branching, distinct_samples, ngram_diversity, ...), all
    JSON-serialisable numbers; ``best_tokens``/``best_reward``: the best-reward complete
    continuation the search evaluated (equal to ``tokens``/``reward`` for the search methods; a
    sampling method's answer is a sample, and it records the best here);
    ``reward_diagnostics``: what the reward did during the search (calls, evaluations, failures,
    non-finite values, last error, time).
    """

    tokens: Tokens
    reward: float
    logprob: float | None = None
    samples: list[Tokens] = field(default_factory=list)
    stats: dict = field(default_factory=dict)
    best_tokens: Tokens | None = None
    best_reward: float | None = None
    #: the reward of each entry of ``samples`` (same order)
    sample_rewards: list[float] = field(default_factory=list)
    #: True when ``samples`` are independent draws (of the law the method's docs name); False
    #: when they are correlated, e.g. several draws from one search's tree or resamples of one
    #: set of rollouts (see docs/search.md, "What samples holds")
    samples_independent: bool = False
    reward_diagnostics: RewardDiagnostics = field(default_factory=RewardDiagnostics)


class RewardOracle:
    """Batched, cached access to the reward of complete continuations, for one search.

    Wraps ``reward_fn(list[Tokens])``, which returns a :class:`RewardBatch` (the runner's reward:
    :meth:`specdifftree.rewards.build.SafeReward.score` after decoding and parsing) or a plain
    array of values, to which the failure rule of :mod:`specdifftree.rewards.base` is applied
    (NaN/±inf → the default ``failure_reward``, flagged). So every value a search sees is
    finite, and a sequence whose value was flagged is *failed* (:meth:`failed`): its stand-in
    value is what a method reports for it, but the search methods never let it into their
    values or their reward normalisation (the rollout is dropped, see docs/search.md).

    Repeated sequences are answered from the cache. ``diagnostics`` adds up every call (a
    :class:`RewardDiagnostics`: calls, evaluations, failures, non-finite values, last error,
    time); an oracle serves one search, so they are that search's.
    """

    def __init__(self, reward_fn: Callable[[list[Tokens]], "RewardBatch | np.ndarray"]):
        self._fn = reward_fn
        self._cache: dict[Tokens, float] = {}
        self._failed: set[Tokens] = set()
        self.diagnostics = RewardDiagnostics()

    def __call__(self, seqs: Sequence[Sequence[int]]) -> np.ndarray:
        keys = [tuple(int(t) for t in s) for s in seqs]
        todo = list(dict.fromkeys(k for k in keys if k not in self._cache))
        if todo:
            t0 = time.perf_counter()
            out = self._fn(todo)
            batch = out if isinstance(out, RewardBatch) else RewardBatch.of(out)
            if batch.values.shape[0] != len(todo):
                raise ValueError(f"reward returned {batch.values.shape[0]} values for "
                                 f"{len(todo)} sequences")
            self.diagnostics.add(batch, time.perf_counter() - t0)
            for k, v, bad in zip(todo, batch.values, batch.failed):
                if bad:
                    self._failed.add(k)
                self._cache[k] = float(v)
        return np.array([self._cache[k] for k in keys], dtype=np.float64)

    def failed(self, seq: Sequence[int]) -> bool:
        """The reward of ``seq`` failed (the failure rule replaced it)."""
        return tuple(int(t) for t in seq) in self._failed

    @property
    def failures(self) -> int:
        """Distinct sequences whose reward failed on this search."""
        return len(self._failed)


class Meter:
    """Budget bookkeeping for one search: how many rollouts the next step may start.

    The rollout limit is ``budget.rollouts`` (None: only tokens limit the search; with no token
    budget either, asking for the limit (:attr:`max_rollouts`, :meth:`allow`) raises a ConfigError:
    nothing would stop the search; greedy and beam never ask). A step may
    start n rollouts only while tokens are left, and n ≤ ⌈tokens left / cost⌉ where ``cost`` =
    D − 1 is the most tokens one rollout can process (D = ``budget.max_new_tokens``: a rollout
    from depth d feeds at most its d prefix tokens — none whose KV the Session holds — and at most
    D − d − 1 generated ones). So a search
    never exceeds ``budget.tokens`` by more than one rollout. The first rollout always runs (so
    every method has an answer), even when the prompt alone used up the token budget.
    """

    def __init__(self, budget: Budget, session: Session):
        if budget.max_new_tokens is None or int(budget.max_new_tokens) < 1:
            raise ConfigError(f"max_new_tokens={budget.max_new_tokens!r}: must be a positive integer")
        self.session = session
        self.depth = int(budget.max_new_tokens)
        self._max_rollouts = None if budget.rollouts is None else int(budget.rollouts)
        if self._max_rollouts is not None and self._max_rollouts < 1:
            raise ConfigError(f"budget.rollouts={self._max_rollouts}: must be at least 1")
        self.max_tokens = None if budget.tokens is None else int(budget.tokens)
        self.cost = max(1, self.depth - 1)
        self.done = 0

    @property
    def max_rollouts(self) -> int | None:
        """The rollout limit (None: only the token budget limits the search)."""
        if self._max_rollouts is None and self.max_tokens is None:
            raise ConfigError("budget.rollouts and budget.tokens are both null: set budget.rollouts "
                              "(rollouts per sample, e.g. 20) or budget.tokens (tokens per sample)")
        return self._max_rollouts

    def tokens_left(self) -> int | None:
        if self.max_tokens is None:
            return None
        return self.max_tokens - int(self.session.tokens_processed)

    def allow(self, want: int) -> int:
        """How many rollouts the next step may start (0: stop)."""
        n = max(0, int(want))
        if (limit := self.max_rollouts) is not None:
            n = min(n, limit - self.done)
        left = self.tokens_left()
        if left is not None:
            if left <= 0:
                n = min(n, 1 if self.done == 0 else 0)
            else:
                n = min(n, -(-left // self.cost))
        return max(0, n)


def check_positive(name: str, value, *, integer: bool = False, allow_zero: bool = False,
                   note: str = ""):
    """Validate a method config value; raise ConfigError naming ``method.<name>`` (``note``: what
    the value means, appended to the message)."""
    try:
        v = int(value) if integer else float(value)
        if integer and v != float(value):
            raise ValueError
    except (TypeError, ValueError):
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"method.{name}={value!r}: must be {kind}{note}") from None
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"method.{name}={value!r}: must be finite and {bound}{note}")
    return v


def check_choice(name: str, value, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ConfigError(f"method.{name}={value!r}: must be one of {', '.join(choices)}")
    return str(value)


class Method(ABC):
    """A search method. Subclasses set ``name`` and implement :meth:`search`."""

    name: str = "method"
    needs_model: bool = True

    @abstractmethod
    def search(self, session: Session, reward: RewardOracle, budget: Budget,
               rng: np.random.Generator) -> SearchResult:
        ...
