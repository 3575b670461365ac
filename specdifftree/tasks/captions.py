"""The M4 caption task: a series -> a detailed text caption, scored against a reference caption.

Data: :mod:`specdifftree.tasks.caption_data` (:class:`CaptionSource`).

Prompt: the series (its last ``context_length`` values, all by default) normalised as
z = (x − mean)/std (population std; std 0 counts as 1), with the mean and std stated, serialized
with the project's serializer (``decimals`` fixed decimals, ", " between values), then the request
for a detailed caption. Results: ``valid`` (non-empty caption), ``caption_rougeL_f1``,
``caption_token_f1`` (see :mod:`specdifftree.metrics.text`), ``caption`` and ``reference``.

The task scores one caption: it takes the language-model methods with the answer rule ``best``
(:meth:`CaptionTask.check_method`).
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import ConfigError
from ..metrics.text import rouge_l_f1, token_f1
from ..rewards.base import RewardContext
from .base import Prompt
from .caption_data import CaptionSample
from .serialize import Serializer

INSTRUCTION = ("Here is a time series of {n} values{source}. It is shown normalised: its "
               "mean ({mean}) was subtracted and the result divided by its standard "
               "deviation ({std}).\nNormalised values: {values}\n"
               "Generate a detailed caption of this time series, describing its trend, "
               "seasonality, volatility and notable features.")


def _positive_int(key: str, value, allow_none: bool) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"dataset.{key}={value!r} must be a positive integer"
                          + (" or null" if allow_none else ""))
    return value


class CaptionTask:
    """Prompting and scoring for the caption task (see the module docstring).

    ``decimals``: of the normalised values; ``context_length``: last values in the prompt (None =
    all); ``chat``: wrap the prompt in the tokenizer's chat template (None = no);
    ``max_new_tokens``: the caption's token budget."""

    instruction = INSTRUCTION

    def __init__(self, decimals: int = 2, context_length: int | None = None,
                 chat: bool | None = False, max_new_tokens: int = 256):
        try:
            self.serializer = Serializer(separator=", ", decimals=int(decimals))
        except (TypeError, ValueError) as e:
            raise ConfigError(f"dataset.decimals={decimals!r}: {e}") from None
        self.context_length = _positive_int("context_length", context_length, True)
        if chat is not None and not isinstance(chat, bool):
            raise ConfigError(f"dataset.chat={chat!r} must be true, false or null")
        self.chat = bool(chat)
        self.caption_tokens = _positive_int("max_new_tokens", max_new_tokens, False)

    def context(self, s: CaptionSample) -> np.ndarray:
        x = np.asarray(s.series, dtype=np.float64)
        return x[-self.context_length:] if self.context_length else x

    @staticmethod
    def normalise(x: np.ndarray) -> tuple[np.ndarray, float, float]:
        """(z, mean, std) with z = (x − mean)/std; std 0 counts as 1."""
        x = np.asarray(x, dtype=np.float64)
        mean = float(x.mean())
        std = float(x.std())
        if not std > 0 or not math.isfinite(std):
            std = 1.0
        return (x - mean) / std, mean, std

    def prompt_body(self, s: CaptionSample) -> str:
        x = self.context(s)
        z, mean, std = self.normalise(x)
        source = f" from the M4 {s.frequency} data" if s.frequency else ""
        return self.instruction.format(n=len(x), source=source, mean=f"{mean:.6g}",
                                       std=f"{std:.6g}", values=self.serializer.encode(z, 1.0))

    def prompt_text(self, s: CaptionSample, tokenizer=None) -> str:
        body = self.prompt_body(s)
        if not self.chat:
            return body + "\nCaption:"
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise ValueError("prompt.chat=true needs a model whose tokenizer has a chat template")
        return tokenizer.apply_chat_template([{"role": "user", "content": body}],
                                             add_generation_prompt=True, tokenize=False)

    # ------------------------------------------------------------------ the Task protocol
    def prompt(self, s: CaptionSample, lm) -> Prompt:
        text = self.prompt_text(s, lm.tokenizer)
        return Prompt(text, tuple(int(t) for t in lm.encode_prompt(text)))

    def max_new_tokens(self, s: CaptionSample, lm=None) -> int:
        return self.caption_tokens

    def min_new_tokens(self, s: CaptionSample, lm) -> int | None:
        return None  # a caption has no length a correct answer needs

    def check_method(self, method, answer: str | None) -> None:
        if not getattr(method, "needs_model", True):
            raise ConfigError(f"method={method.name} forecasts numbers; the caption task needs a "
                              "language-model method (e.g. method=greedy)")
        if answer not in (None, "best"):
            raise ConfigError(f"method.answer={answer}: the caption task scores one caption; "
                              "use answer=best")

    @staticmethod
    def caption_of(text: str) -> str:
        return str(text).strip()

    def evaluate(self, text: str, s: CaptionSample, values=None) -> dict:
        cap = self.caption_of(text)
        return {"valid": bool(cap), "caption_rougeL_f1": rouge_l_f1(cap, s.caption),
                "caption_token_f1": token_f1(cap, s.caption), "caption": cap,
                "reference": s.caption}

    def answer_fields(self, rule: str, row: dict, sample_texts: list[str], s: CaptionSample,
                      score) -> dict:
        return {}  # one caption, no sample-set scores (check_method allows only answer=best)

    def reward_context(self, s: CaptionSample) -> RewardContext:
        x = np.array(s.series, dtype=np.float64)
        x.flags.writeable = False  # a reward cannot change the shared sample
        return RewardContext(history=self.context(s), full_history=x, horizon=0, period=1,
                             truth=None, sample=s,
                             extra={"reference": s.caption, "frequency": s.frequency})

    def reward_inputs(self, texts: list[str], s: CaptionSample) -> tuple[np.ndarray, np.ndarray]:
        """(forecasts, valid) to pass to a reward with these texts: an empty (B, 0) forecast
        array and valid = 1.0 for a non-empty caption, else 0.0."""
        valid = np.array([1.0 if self.caption_of(t) else 0.0 for t in texts])
        return np.zeros((len(texts), 0)), valid
