"""How a method answers one sample, behind one interface: :meth:`solve` returns an
:class:`Outcome` for a language-model search and for a classical forecast alike, so the runner
builds every row in one place (:func:`specdifftree.runner.run_sample`).

- :class:`ModelSolver`: open a Session on the task's prompt, ``method.search``, decode; the answer
  rule ``sample`` for a method without its own ``answer`` option takes the first returned sample;
  the scored continuations go to ``samples.jsonl``.
- :class:`ForecastSolver`: ``method.forecast`` on the full history (no model); the forecast is
  scored as numbers (no text to parse).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .answers import AGGREGATE_RULES, is_sampling
from .gcpause import paused_gc
from .results import ROW_KEY
from .rewards.base import RewardDiagnostics
from .rollouts import Recorder
from .search.base import Budget, RewardOracle


def backend_settings(cfg) -> dict:
    """The keys of ``cfg.backend``: the model handle's session settings."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg.backend, resolve=True) if cfg.get("backend") else {}


@dataclass
class Outcome:
    """What a method produced for one sample.

    ``text``: the answer's text; ``values``: the answer as numbers when the method gave numbers
    (else None: the task parses ``text``); ``fields``: what the method measured (reward, cost
    counters, search statistics, log-probabilities); ``rule``: the answer rule in force;
    ``sample_texts``: the returned sample set (empty: the answer alone); ``diagnostics``: what the
    reward did."""

    text: str
    fields: dict
    rule: str
    diagnostics: RewardDiagnostics
    values: np.ndarray | None = None
    sample_texts: list[str] = field(default_factory=list)


def score_values(exp, values: np.ndarray, text: str, ctx, diagnostics: RewardDiagnostics) -> float:
    """The reward of one forecast that no search scored (a classical method's, an aggregated
    answer's), counted in ``diagnostics``."""
    t0 = time.perf_counter()
    batch = exp.reward.score(np.asarray(values, dtype=np.float64)[None, :], [text], np.ones(1), ctx)
    diagnostics.add(batch, time.perf_counter() - t0)
    return float(batch.values[0])


class ForecastSolver:
    """A method that forecasts numbers from the history (``needs_model = False``)."""

    records_samples = False

    def solve(self, exp, s, index: int, ctx, sample_rows: list | None) -> Outcome:
        values = np.asarray(exp.method.forecast(np.asarray(s.x, dtype=np.float64), s.horizon,
                                                s.period), dtype=np.float64)
        diagnostics = RewardDiagnostics()
        reward = score_values(exp, values, "", ctx, diagnostics)
        fields = dict(reward=reward, text="", model_calls=0, tokens_processed=0, prompt_tokens=0,
                      generated_tokens=0, rollouts=0, nodes=0, max_depth=0, mean_branching=0.0,
                      mean_logprob=None, perplexity=None)
        return Outcome("", fields, exp.answer or "best", diagnostics, values=values)


class ModelSolver:
    """A method that searches with the language model ``exp.lm``."""

    records_samples = True

    def solve(self, exp, s, index: int, ctx, sample_rows: list | None) -> Outcome:
        cfg, task, method, lm = exp.cfg, exp.task, exp.method, exp.lm
        prompt = task.prompt(s, lm)
        max_new = int(cfg.max_new_tokens or task.max_new_tokens(s, lm))
        with paused_gc():  # no collector pass inside the timed search (specdifftree/gcpause.py)
            session = lm.session(list(prompt.tokens), max_new_tokens=max_new, **backend_settings(cfg))

            def reward_fn(seqs):
                texts = [lm.decode(q) for q in seqs]
                forecasts, valid = task.reward_inputs(texts, s)
                return exp.reward.score(forecasts, texts, valid, ctx)

            recorder = Recorder(session, RewardOracle(reward_fn))  # scored continuations -> samples.jsonl
            session, oracle = recorder.session, recorder.oracle
            # budget.rollouts is 20 unless budget.tokens is set (conf/config.yaml; see Meter)
            budget = Budget(rollouts=cfg.budget.rollouts, tokens=cfg.budget.tokens,
                            max_new_tokens=max_new)
            result = method.search(session, oracle, budget, np.random.default_rng([int(cfg.seed), index]))
        text = lm.decode(list(result.tokens))
        n_gen = len(result.tokens)
        mean_lp = (result.logprob / n_gen) if (result.logprob is not None and n_gen) else None
        fields: dict = {}
        if prompt.status is not None:
            fields["prompt_boundary"] = prompt.status
        fields.update(reward=float(result.reward), text=text,
                      model_calls=session.model_calls, tokens_processed=session.tokens_processed,
                      prompt_tokens=session.prompt_tokens, generated_tokens=n_gen,
                      mean_logprob=mean_lp,
                      perplexity=float(np.exp(-mean_lp)) if mean_lp is not None else None,
                      model_time_s=session.stats.model_time_s)
        st = session.stats
        # how the Session reused work: prefix KV segments, or whole-cache snapshots (non-KVCache
        # models) where tokens fed a second time are counted in recomputed_tokens
        fields.update(cache_mode=st.cache_mode, recomputed_tokens=st.recomputed_tokens)
        plain = st.plain_logprob_sum / st.plain_tokens if st.plain_tokens else None
        if plain is not None:
            fields.update(plain_mean_logprob=plain,
                          logprob_gap=(mean_lp - plain) if mean_lp is not None else None)
        fields.update({k: v for k, v in result.stats.items() if k not in fields})
        rule = exp.answer or getattr(method, "answer", None) or "best"
        chosen = tuple(result.tokens)
        if exp.answer == "sample" and not hasattr(method, "answer") and result.samples:
            chosen = tuple(result.samples[0])  # the runner applies the rule (answers.py)
            text = lm.decode(list(chosen))
            lp = recorder.logprob(chosen)
            mean_lp = lp / len(chosen) if lp is not None and chosen else None
            fields.update(text=text, generated_tokens=len(chosen), reward=recorder.reward_of(chosen),
                          mean_logprob=mean_lp,
                          perplexity=float(np.exp(-mean_lp)) if mean_lp is not None else None)
            if mean_lp is not None and plain is not None:
                fields["logprob_gap"] = mean_lp - plain
        elif exp.answer in AGGREGATE_RULES:
            chosen = None  # the answer is no single continuation
        sample_texts = ([lm.decode(list(q)) for q in result.samples]
                        if is_sampling(method) and result.samples else [])
        if sample_rows is not None:
            base = {**exp.identity(s), "sample_index": index}
            base = {k: base[k] for k in (*ROW_KEY, "sample_index")}
            sample_rows.extend(recorder.rows(
                base, lm.decode, lambda texts: task.reward_inputs(texts, s), chosen,
                [tuple(q) for q in result.samples], oracle.failed))
        return Outcome(text, fields, rule, result.reward_diagnostics.copy(),
                       sample_texts=sample_texts)


def solver_for(method):
    """The solver of ``method``: a model search, or a forecast from the history."""
    return ModelSolver() if method.needs_model else ForecastSolver()
