"""The protocol every search method follows.

A method gets a Session (model access, see :mod:`specdifftree.backend.session`), a batched reward
oracle over complete continuations, a :class:`Budget` and a numpy ``Generator``; it returns a
:class:`SearchResult`. Methods are stateless between samples and never call the model directly.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

import numpy as np

Tokens = tuple[int, ...]


class SessionLike(Protocol):
    """What a search method may use (the real Session and the toy table-LM both provide it)."""

    eos_ids: frozenset[int]
    vocab_size: int

    @property
    def tokens_processed(self) -> int: ...

    @property
    def model_calls(self) -> int: ...

    def logprobs(self, prefixes: Sequence[Sequence[int]]) -> np.ndarray: ...

    def rollout(self, prefixes: Sequence[Sequence[int]], max_new_tokens: int, *,
                temperature: float = 1.0, rng: np.random.Generator | None = None,
                top_k: int = 0, top_p: float = 1.0) -> list: ...


@dataclass
class Budget:
    """How much search a method may do on one sample.

    ``rollouts``: number of rollouts (complete continuations generated); ``tokens``: tokens
    processed by the Session, all model work included (prompt prefill too). A method stops when
    either is used up; ``None`` means unlimited. ``max_new_tokens`` bounds each continuation.
    """

    rollouts: int | None = None
    tokens: int | None = None
    max_new_tokens: int = 50

    def exhausted(self, session: SessionLike, rollouts_done: int) -> bool:
        if self.rollouts is not None and rollouts_done >= self.rollouts:
            return True
        if self.tokens is not None and session.tokens_processed >= self.tokens:
            return True
        return False


@dataclass
class SearchResult:
    """What a method returns for one sample.

    ``tokens``: the chosen continuation; ``reward``: its reward; ``logprob``: log p_θ(tokens) under
    the base model at temperature 1 when the method knows it (else None); ``samples``: returned
    samples for sampling methods; ``stats``: tree/search statistics (rollouts, nodes, max_depth,
    mean_branching, ...), all JSON-serialisable numbers.
    """

    tokens: Tokens
    reward: float
    logprob: float | None = None
    samples: list[Tokens] = field(default_factory=list)
    stats: dict = field(default_factory=dict)


class RewardOracle:
    """Batched, cached access to the reward of complete continuations.

    Wraps the raw ``reward_fn(list[Tokens]) -> array``. A NaN (or ±inf) reward is replaced by the
    worst finite reward seen so far on this sample (or ``floor`` before any) and counted in
    ``nonfinite``. Repeated sequences are answered from the cache.
    """

    def __init__(self, reward_fn: Callable[[list[Tokens]], np.ndarray], floor: float = -1e9):
        self._fn = reward_fn
        self._cache: dict[Tokens, float] = {}
        self.floor = floor
        self.worst = math.inf
        self.calls = 0
        self.evaluated = 0
        self.nonfinite = 0
        self.time_s = 0.0

    def __call__(self, seqs: Sequence[Sequence[int]]) -> np.ndarray:
        keys = [tuple(int(t) for t in s) for s in seqs]
        todo = list(dict.fromkeys(k for k in keys if k not in self._cache))
        if todo:
            t0 = time.perf_counter()
            raw = np.asarray(self._fn(todo), dtype=np.float64).reshape(-1)
            self.time_s += time.perf_counter() - t0
            if raw.shape[0] != len(todo):
                raise ValueError(f"reward returned {raw.shape[0]} values for {len(todo)} sequences")
            self.calls += 1
            self.evaluated += len(todo)
            finite = raw[np.isfinite(raw)]
            if finite.size:
                self.worst = min(self.worst, float(finite.min()))
            for k, v in zip(todo, raw):
                if not math.isfinite(v):
                    self.nonfinite += 1
                    v = self.worst if math.isfinite(self.worst) else self.floor
                self._cache[k] = float(v)
        return np.array([self._cache[k] for k in keys], dtype=np.float64)


class Method(ABC):
    """A search method. Subclasses set ``name`` and implement :meth:`search`."""

    name: str = "method"
    needs_model: bool = True

    @abstractmethod
    def search(self, session: SessionLike, reward: RewardOracle, budget: Budget,
               rng: np.random.Generator) -> SearchResult:
        ...
