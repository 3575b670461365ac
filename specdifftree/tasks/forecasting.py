"""The forecasting task: series -> prompt text; generated text -> forecast."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .boundary import Boundary, clean_boundary
from .serialize import Serializer, complete
from .series import Series


@dataclass
class Forecast:
    values: np.ndarray
    n_parsed: int
    horizon: int

    @property
    def valid(self) -> bool:
        return self.n_parsed == self.horizon

    @property
    def parsed_share(self) -> float:
        return self.n_parsed / self.horizon if self.horizon else 0.0


DEFAULT_INSTRUCTION = ("Continue this time series. Reply with the next {horizon} values only, "
                       "in the same format:\n{history}")


@dataclass
class ForecastTask:
    """Prompting and parsing for one dataset.

    ``context_length``: how many of the last history values go into the prompt (None = all).
    ``chat``: wrap the serialized history in the tokenizer's chat template with ``instruction``
    (``{horizon}`` and ``{history}`` are filled in) and the optional ``system`` message; None =
    automatic: on when the model is an instruct model (its preset says so) and its tokenizer has
    a chat template.
    """

    serializer: Serializer
    context_length: int | None = 200
    chat: bool | None = False
    instruction: str | None = DEFAULT_INSTRUCTION
    system: str | None = None

    def __post_init__(self):
        self.instruction = str(self.instruction) if self.instruction else DEFAULT_INSTRUCTION
        self.system = str(self.system) if self.system else None
        if self.chat is not None:
            self.chat = bool(self.chat)

    def context(self, s: Series) -> np.ndarray:
        x = np.asarray(s.x, dtype=np.float64)
        return x[-self.context_length:] if self.context_length else x

    def scale(self, s: Series) -> float:
        return self.serializer.scale_for(self.context(s))

    def uses_chat(self, lm=None) -> bool:
        if self.chat is not None:
            return bool(self.chat)
        return bool(lm is not None and getattr(lm, "instruct", False) and lm.has_chat_template)

    def prompt_text(self, s: Series, tokenizer=None, chat: bool | None = None) -> str:
        history = self.serializer.encode(self.context(s), self.scale(s))
        if not (self.chat if chat is None else chat):
            return history + self.serializer.separator
        if tokenizer is None or not (getattr(tokenizer, "chat_template", None)
                                     or getattr(tokenizer, "has_chat_template", False)):
            raise ValueError("prompt.chat=true needs a model whose tokenizer has a chat template")
        msg = self.instruction.format(horizon=s.horizon, history=history)
        messages = ([{"role": "system", "content": self.system}] if self.system else [])
        messages.append({"role": "user", "content": msg})
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def typical_continuations(self, s: Series) -> list[str]:
        """Texts the model is expected to write first: values of the context itself (its last
        three, its smallest and its largest), serialized as in the prompt."""
        ctx, scale = self.context(s), self.scale(s)
        if ctx.size == 0:
            return []
        picks = [ctx[-3:], ctx[[int(np.argmin(ctx))]], ctx[[int(np.argmax(ctx))]]]
        return [self.serializer.encode(v, scale) + self.serializer.separator for v in picks]

    def prompt(self, s: Series, lm) -> Boundary:
        """The prompt's text and tokens for model ``lm``, ending at a natural token boundary
        (see :mod:`.boundary`): encoded as mlx-lm encodes a text prompt (BOS when the tokenizer
        has one; none added when a chat template already wrote it)."""
        text = self.prompt_text(s, lm.tokenizer, chat=self.uses_chat(lm))
        return clean_boundary(lm.encode_prompt, text, self.typical_continuations(s))

    def parse(self, text: str, s: Series, scale: float | None = None) -> Forecast:
        """The forecast in ``text`` (``scale``: the series' scale, when the caller has it)."""
        vals, n_ok = self.serializer.parse(text, s.horizon, self.scale(s) if scale is None else scale)
        return Forecast(values=complete(vals, float(np.asarray(s.x)[-1])), n_parsed=n_ok,
                        horizon=s.horizon)

    def max_new_tokens(self, s: Series, lm=None) -> int:
        """Token budget per continuation when none is configured: h values with 25% slack, at the
        context's tokens per value under ``lm``'s tokenizer (characters when none is given)."""
        ctx = self.serializer.encode(self.context(s), self.scale(s))
        size = len(lm.encode(ctx)) if lm is not None else len(ctx)
        per_value = size / max(1, len(self.context(s)))  # tokens per value incl. separator
        return int(np.ceil(s.horizon * per_value * 1.25)) + 4

    # ------------------------------------------------------------------ runner interface
    def reward_context(self, s: Series):
        from ..rewards.base import RewardContext

        def ro(a):  # read-only views: a reward cannot change the shared series
            a = np.asarray(a, dtype=np.float64).view()
            a.flags.writeable = False
            return a

        return RewardContext(history=ro(self.context(s)), full_history=ro(s.x),
                             horizon=s.horizon, period=s.period, truth=ro(s.y), sample=s)

    def reward_inputs(self, texts: list[str], s: Series) -> tuple[np.ndarray, np.ndarray]:
        """(forecasts (B, h), share of values parsed (B,)) for a batch of generated texts."""
        scale = self.scale(s)  # once per batch, not per candidate
        fcs = [self.parse(t, s, scale) for t in texts]
        return np.stack([f.values for f in fcs]), np.array([f.parsed_share for f in fcs])

    def evaluate_values(self, values: np.ndarray, s: Series) -> dict:
        """M4 metrics of a forecast, with Naive2's on the same series (for OWA)."""
        from ..metrics.m4 import mase, smape
        from ..metrics.naive2 import naive2

        def mase_or_nan(fc) -> float:  # undefined with < 2 history values (docs/metrics.md)
            return float(mase(s.x, s.y, fc, s.period)) if len(s.x) >= 2 else float("nan")

        n2 = naive2(np.asarray(s.x, dtype=np.float64), s.horizon, s.period)
        return {"smape": float(smape(s.y, values)), "mase": mase_or_nan(values),
                "smape_naive2": float(smape(s.y, n2)), "mase_naive2": mase_or_nan(n2),
                "forecast": np.asarray(values, dtype=np.float64),
                # truth and the last history values, so reports plot forecasts from results alone
                "truth": np.asarray(s.y, dtype=np.float64),
                "history_tail": np.asarray(s.x, dtype=np.float64)[-3 * s.horizon:]}

    def evaluate(self, text: str, s: Series, values: np.ndarray | None = None) -> dict:
        if values is not None:  # numbers given directly (a classical forecast): nothing to parse
            return {"valid": True, "n_parsed": s.horizon, **self.evaluate_values(values, s)}
        fc = self.parse(text, s)
        out = {"valid": fc.valid, "n_parsed": fc.n_parsed}
        out.update(self.evaluate_values(fc.values, s))
        return out

    def min_new_tokens(self, s: Series, lm) -> int | None:
        """Tokens ``lm`` needs to write the true future in the prompt's number format: what even
        a perfect forecast costs."""
        text = self.serializer.encode(np.asarray(s.y, dtype=np.float64), self.scale(s))
        return len(lm.encode(text))

    def check_method(self, method, answer: str | None) -> None:
        """Every method and answer rule forecasts (the rule itself is checked with the method,
        :func:`specdifftree.answers.check_rule`)."""

    def answer_fields(self, rule: str, row: dict, sample_texts: list[str], s: Series,
                      score) -> dict:
        """The answer rule (``median``/``mean`` aggregate the sample set's parsed forecasts, see
        :mod:`specdifftree.answers`) and the distribution scores of the sample set (of the point
        forecast alone when there is none)."""
        from ..answers import AGGREGATE_RULES, aggregate

        out: dict = {"answer": rule}
        if not sample_texts:
            out.update(sample_set_scores(np.asarray(row["forecast"])[None, :], s))
            return out
        forecasts, share = self.reward_inputs(sample_texts, s)
        valid = share >= 1.0
        out["samples_valid"] = int(valid.sum())
        if rule in AGGREGATE_RULES:
            values, ok = aggregate(rule, forecasts, valid)
            text = self.serializer.encode(values, self.scale(s))
            out.update(self.evaluate_values(values, s), valid=ok,
                       n_parsed=s.horizon if ok else int(row.get("n_parsed") or 0), text=text,
                       reward=score(values, text), mean_logprob=None, perplexity=None,
                       logprob_gap=None)
        out.update(sample_set_scores(forecasts[valid] if valid.any() else forecasts, s))
        return out


def sample_set_scores(forecasts: np.ndarray, s: Series) -> dict:
    """CRPS, quantiles, MSIS and coverage of a sample set (N, h) of one series."""
    from ..metrics.m4 import mase_scale
    from ..metrics.probabilistic import distribution_scores

    if len(s.x) < 2:  # no in-sample scale: the scaled scores are undefined (docs/metrics.md)
        out = distribution_scores(forecasts, s.y, np.array([0.0, 1.0]), 1)
        out.update(crps_mase=float("nan"), msis=float("nan"), mase_scale=float("nan"))
        return out
    out = distribution_scores(forecasts, s.y, s.x, s.period)
    out["mase_scale"] = mase_scale(s.x, s.period)
    return out
