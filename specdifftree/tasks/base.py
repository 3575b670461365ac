"""The Task protocol: everything the runner needs from a task kind, and the data-source protocol.

A *data source* turns its config into the samples of a dataset (``load()``); a *task* says how a
sample is prompted, what a continuation may cost, what a reward sees and how an answer is scored.
Both are built from the dataset config by ``_target_`` (:mod:`specdifftree.tasks.build`).
Forecasting (:class:`~specdifftree.tasks.forecasting.ForecastTask`) and captions
(:class:`~specdifftree.tasks.captions.CaptionTask`) implement it; the runner has no other
knowledge of either.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence

import numpy as np


@dataclass(frozen=True)
class Prompt:
    """A prompt's text and token ids; ``status``: how its end sits on a token boundary
    (forecasting's ``natural`` / ``whitespace_moved`` / ``split``, see :mod:`.boundary`), None
    when the task does not check it."""

    text: str
    tokens: tuple[int, ...]
    status: str | None = None


class Source(Protocol):
    """A data source: its ``__init__`` arguments are its dataset keys (checked there)."""

    def load(self) -> list: ...


class Task(Protocol):
    def prompt(self, sample: Any, lm) -> Prompt:
        """The prompt for ``sample`` under model ``lm`` (tokens as mlx-lm encodes a text prompt)."""

    def max_new_tokens(self, sample: Any, lm=None) -> int:
        """The continuation budget when ``max_new_tokens`` is not configured."""

    def min_new_tokens(self, sample: Any, lm) -> int | None:
        """Tokens a correct answer takes at least (the preflight compares ``max_new_tokens``
        with it); None when the task has no such bound."""

    def check_method(self, method, answer: str | None) -> None:
        """Raise a one-line ConfigError when the task cannot score ``method`` with the answer
        rule ``answer`` (``method.answer``, None when unset)."""

    def reward_context(self, sample: Any):
        """The :class:`~specdifftree.rewards.base.RewardContext` of ``sample``."""

    def reward_inputs(self, texts: Sequence[str], sample: Any) -> tuple[np.ndarray, np.ndarray]:
        """(forecasts (B, h), valid share (B,)) that a reward receives with ``texts``."""

    def evaluate(self, text: str, sample: Any, values: np.ndarray | None = None) -> dict:
        """The metrics of an answer: its ``text``, or ``values`` when a method gave numbers
        directly (a classical forecast: nothing to parse)."""

    def answer_fields(self, rule: str, row: dict, sample_texts: list[str], sample: Any,
                      score: Callable[[np.ndarray, str], float]) -> dict:
        """Fields that the answer rule ``rule`` and the method's sample set (``sample_texts``,
        empty when it returns none) add to the row: an aggregated answer (``median``/``mean``,
        its reward from ``score(values, text)``) and distribution scores."""
