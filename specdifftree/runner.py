"""One experiment: config -> task -> search -> metrics -> results writer.

:func:`run` is what the CLI and notebooks call. The flow of one sample reads top to bottom in
:func:`run_sample`: series -> prompt -> Session -> method.search(session, reward) -> forecast ->
metrics -> row.
"""

from __future__ import annotations

import logging
import time
import traceback
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from .answers import AGGREGATE_RULES
from .config import validate
from .errors import ConfigError, SpecDiffTreeError
from .results import ROW_KEY, ResultsWriter, row_key
from .rollouts import Recorder, SamplesWriter
from .rewards.base import RewardDiagnostics
from .rewards.build import build_reward
from .search.base import Budget, Method, RewardOracle
from .tasks.forecasting import ForecastTask
from .tasks.serialize import Serializer
from .tasks.series import Series

log = logging.getLogger(__name__)


@dataclass
class RunHandle:
    """What the caller of :func:`run` learns while the run goes on, kept when it fails or is
    interrupted: the run dir once it is claimed (the CLI names it on Ctrl-C) and whether the model
    came from the process's model cache (a sweep job's ``job.json``)."""

    run_dir: Path | None = None
    model_cache_hit: bool | None = None


@dataclass
class Experiment:
    """Everything built from the config that stays fixed over the samples of one run."""

    cfg: DictConfig
    method: Method
    task: object  # ForecastTask or CaptionTask
    reward: object
    samples: list
    lm: object | None
    model_cache_hit: bool | None
    answer: str | None = None  # method.answer when the runner applies it (see answers.py)


def build_method(method_cfg) -> Method:
    """The method object of ``cfg.method`` (Hydra's ``instantiate``; see
    :mod:`specdifftree.search.build`)."""
    from .search.build import instantiate_method

    if OmegaConf.is_config(method_cfg):
        method_cfg = OmegaConf.to_container(method_cfg, resolve=True)
    return instantiate_method(method_cfg)


def check_method_config(method_cfg) -> None:
    """The method config builds: every key is a setting of its method and every value is valid
    (one :class:`ConfigError` line otherwise); checked before a run or sweep starts."""
    build_method(method_cfg)


def is_caption_task(cfg: DictConfig) -> bool:
    return cfg.dataset.get("source") == "m4_captions"


def build_task(cfg: DictConfig):
    if is_caption_task(cfg):
        from .tasks.captions import CaptionTask

        task = CaptionTask.from_config(cfg.dataset)
        task.chat = bool(cfg.prompt.chat) or task.chat
        return task
    p = cfg.prompt
    try:
        ser = Serializer(separator=p.separator, decimals=int(p.decimals),
                         scale_quantile=float(p.scale_quantile), scale_target=float(p.scale_target))
    except ValueError as exc:
        raise ConfigError(f"prompt: {exc}") from exc
    chat = p.get("chat")
    task = ForecastTask(ser, context_length=cfg.dataset.get("context_length"),
                        chat=None if chat is None else bool(chat), system=p.get("system") or None)
    if p.get("instruction"):
        task.instruction = str(p.instruction)
    return task


def load_samples(cfg: DictConfig) -> list:
    from .modelcache import get_series  # process-wide dataset cache (shared by sweep jobs)
    from .tasks.sources import select

    series, _ = get_series(cfg.dataset)
    # the series are picked by dataset.subset_seed alone, so every `seed` evaluates the same ones
    subset_seed = cfg.dataset.get("subset_seed")
    return select(series, cfg.num_samples, int(subset_seed or 0))


def _backend_cfg(cfg: DictConfig) -> dict:
    """The keys of ``cfg.backend``: the model handle's session settings."""
    return OmegaConf.to_container(cfg.backend, resolve=True) if cfg.get("backend") else {}


def prepare(cfg: DictConfig, handle: RunHandle | None = None) -> Experiment:
    """Build the experiment of ``cfg``; ``handle``, if given, learns whether the model came from
    the process's model cache as soon as it is got (kept if a later check fails)."""
    validate(cfg)
    method = build_method(cfg.method)
    task = build_task(cfg)
    samples = load_samples(cfg)
    reward = build_reward(cfg.reward)
    lm, hit = None, None
    if not method.needs_model and is_caption_task(cfg):
        raise ConfigError(f"method={method.name} forecasts numbers; the caption task needs a "
                          "language-model method (e.g. method=greedy)")
    if method.needs_model:
        from .modelcache import get_model

        lm, hit = get_model(cfg.model)
        if handle is not None:
            handle.model_cache_hit = hit
        lm.check_backend(**_backend_cfg(cfg))  # e.g. a quantization the model cannot take
    from .answers import check_rule, is_sampling

    answer = check_rule(cfg.method.get("answer"), method.name, is_sampling(method),
                        method.needs_model)
    if answer not in (None, "best") and is_caption_task(cfg):
        raise ConfigError(f"method.answer={answer}: the caption task scores one caption; "
                          "use answer=best")
    return Experiment(cfg, method, task, reward, samples, lm, hit, answer)


def _identity(exp: Experiment, s) -> dict:
    """The row key's fields of series ``s`` in this experiment (see :func:`results.row_key`)."""
    return {"method": exp.method.name, "dataset": exp.cfg.dataset.name, "series_id": s.id,
            "seed": int(exp.cfg.seed)}


def _base_row(exp: Experiment, s, index: int) -> dict:
    return {**_identity(exp, s), "sample_index": index,
            "horizon": getattr(s, "horizon", None), "period": getattr(s, "period", None),
            "model": exp.lm.name if exp.lm else None, "reward_name": exp.cfg.reward.get("name"),
            "budget_rollouts": exp.cfg.budget.get("rollouts"),
            "budget_tokens": exp.cfg.budget.get("tokens"), "error": None}


def sample_set_scores(forecasts: np.ndarray, s: Series) -> dict:
    """CRPS, quantiles, MSIS and coverage of a sample set (N, h) of one series."""
    from .metrics.m4 import mase_scale
    from .metrics.probabilistic import distribution_scores

    if len(s.x) < 2:  # no in-sample scale: the scaled scores are undefined (docs/metrics.md)
        out = distribution_scores(forecasts, s.y, np.array([0.0, 1.0]), 1)
        out.update(crps_mase=float("nan"), msis=float("nan"), mase_scale=float("nan"))
        return out
    out = distribution_scores(forecasts, s.y, s.x, s.period)
    out["mase_scale"] = mase_scale(s.x, s.period)
    return out


def score_forecast(exp: Experiment, values: np.ndarray, text: str, ctx,
                   diagnostics: RewardDiagnostics) -> float:
    """The reward of one forecast that no search scored (a classical method's, an aggregated
    answer's), counted in the sample's ``diagnostics``."""
    t0 = time.perf_counter()
    batch = exp.reward.score(np.asarray(values, dtype=np.float64)[None, :], [text], np.ones(1), ctx)
    diagnostics.add(batch, time.perf_counter() - t0)
    return float(batch.values[0])


def apply_answer(exp: Experiment, s: Series, result, row: dict, ctx, recorder,
                 diagnostics: RewardDiagnostics) -> dict:
    """The answer rule's point forecast and the sample set's distribution scores.

    The rules ``best`` and (for the tree methods) ``sample`` are the method's own answer; the
    runner applies ``median``/``mean`` and, for a method without its own ``answer`` option
    (``best_of_n``), ``sample``. See :mod:`specdifftree.answers`. The reward of an aggregated
    answer is counted in ``diagnostics``."""
    from .answers import aggregate, is_sampling

    task, lm = exp.task, exp.lm
    out: dict = {"answer": exp.answer or getattr(exp.method, "answer", None) or "best"}
    if not is_sampling(exp.method) or not result.samples:
        out.update(sample_set_scores(np.asarray(row["forecast"])[None, :], s))
        return out
    texts = [lm.decode(list(q)) for q in result.samples]
    forecasts, share = task.reward_inputs(texts, s)
    valid = share >= 1.0
    out["samples_valid"] = int(valid.sum())
    if exp.answer == "sample" and not hasattr(exp.method, "answer"):
        first = tuple(result.samples[0])
        lp = recorder.logprob(first)
        mean_lp = lp / len(first) if lp is not None and first else None
        out.update(task.evaluate(texts[0], s), text=texts[0], generated_tokens=len(first),
                   reward=recorder.reward_of(first),
                   mean_logprob=mean_lp,
                   perplexity=float(np.exp(-mean_lp)) if mean_lp is not None else None)
        if mean_lp is not None and row.get("plain_mean_logprob") is not None:
            out["logprob_gap"] = mean_lp - row["plain_mean_logprob"]
    elif exp.answer in AGGREGATE_RULES:
        values, ok = aggregate(exp.answer, forecasts, valid)
        text = task.serializer.encode(values, task.scale(s))
        out.update(task.evaluate_values(values, s), valid=ok,
                   n_parsed=s.horizon if ok else int(row.get("n_parsed") or 0), text=text,
                   reward=score_forecast(exp, values, text, ctx, diagnostics),
                   mean_logprob=None, perplexity=None, logprob_gap=None)
    use = forecasts[valid] if valid.any() else forecasts
    out.update(sample_set_scores(use, s))
    return out


def run_sample(exp: Experiment, s: Series, index: int, sample_rows: list | None = None) -> dict:
    """Search and score one series; the returned dict is one line of results.jsonl.

    ``sample_rows``: when given, one dict per continuation the search scored is appended to it
    (the lines of samples.jsonl, see :mod:`specdifftree.rollouts`)."""
    cfg, task, method = exp.cfg, exp.task, exp.method
    t0 = time.perf_counter()
    ctx = task.reward_context(s)
    row = _base_row(exp, s, index)
    if not method.needs_model:
        values = np.asarray(method.forecast(np.asarray(s.x, dtype=np.float64), s.horizon, s.period),
                            dtype=np.float64)
        diagnostics = RewardDiagnostics()
        reward = score_forecast(exp, values, "", ctx, diagnostics)
        row.update(valid=True, n_parsed=s.horizon, reward=reward, text="", model_calls=0,
                   tokens_processed=0, prompt_tokens=0, generated_tokens=0, rollouts=0, nodes=0,
                   max_depth=0, mean_branching=0.0, mean_logprob=None, perplexity=None)
        row.update(task.evaluate_values(values, s))
        row.update(sample_set_scores(values[None, :], s))
    else:
        lm = exp.lm
        if hasattr(task, "prompt"):  # forecasting: BOS/chat as mlx-lm, a natural token boundary
            boundary = task.prompt(s, lm)
            prompt_ids = list(boundary.tokens)
            row["prompt_boundary"] = boundary.status
            max_new = int(cfg.max_new_tokens or task.max_new_tokens(s, lm))
        else:
            prompt_ids = lm.encode_prompt(task.prompt_text(s, lm.tokenizer))
            max_new = int(cfg.max_new_tokens or task.max_new_tokens(s))
        session = lm.session(prompt_ids, max_new_tokens=max_new, **_backend_cfg(cfg))

        def reward_fn(seqs):
            texts = [lm.decode(q) for q in seqs]
            forecasts, valid = task.reward_inputs(texts, s)
            return exp.reward.score(forecasts, texts, valid, ctx)

        oracle = RewardOracle(reward_fn)
        recorder = Recorder(session, oracle)  # every scored continuation -> samples.jsonl
        session, oracle = recorder.session, recorder.oracle
        # method.num_rollouts applies only when neither budget is given (see Meter)
        budget = Budget(rollouts=cfg.budget.rollouts, tokens=cfg.budget.tokens,
                        max_new_tokens=max_new)
        rng = np.random.default_rng([int(cfg.seed), index])
        result = method.search(session, oracle, budget, rng)
        text = lm.decode(list(result.tokens))
        n_gen = len(result.tokens)
        mean_lp = (result.logprob / n_gen) if (result.logprob is not None and n_gen) else None
        row.update(reward=float(result.reward), text=text,
                   model_calls=session.model_calls, tokens_processed=session.tokens_processed,
                   prompt_tokens=session.prompt_tokens, generated_tokens=n_gen,
                   mean_logprob=mean_lp,
                   perplexity=float(np.exp(-mean_lp)) if mean_lp is not None else None,
                   model_time_s=session.stats.model_time_s)
        diagnostics = result.reward_diagnostics.copy()
        st = session.stats
        # how the Session reused work: prefix KV segments, or whole-cache snapshots (non-KVCache
        # models) where tokens fed a second time are counted in recomputed_tokens
        row.update(cache_mode=st.cache_mode, recomputed_tokens=st.recomputed_tokens)
        if st.plain_tokens:
            plain = st.plain_logprob_sum / st.plain_tokens
            row.update(plain_mean_logprob=plain,
                       logprob_gap=(mean_lp - plain) if mean_lp is not None else None)
        row.update({k: v for k, v in result.stats.items() if k not in row})
        row.update(task.evaluate(text, s))
        if isinstance(task, ForecastTask):  # forecasting: answer rule and distribution scores
            row.update(apply_answer(exp, s, result, row, ctx, recorder, diagnostics))
        if sample_rows is not None:
            chosen = tuple(result.tokens)
            if exp.answer in AGGREGATE_RULES:
                chosen = None  # the answer is no single continuation
            elif exp.answer == "sample" and not hasattr(method, "answer") and result.samples:
                chosen = tuple(result.samples[0])
            base = {k: row[k] for k in (*ROW_KEY, "sample_index")}
            sample_rows.extend(recorder.rows(
                base, lm.decode, lambda texts: task.reward_inputs(texts, s), chosen,
                [tuple(q) for q in result.samples], oracle.failed))
    row.update(diagnostics.row())
    row["time_s"] = time.perf_counter() - t0
    return row


def error_row(exp: Experiment, s: Series, index: int, exc: BaseException, elapsed: float) -> dict:
    """The row of a sample whose processing raised: scored as an invalid (empty) forecast."""
    row = _base_row(exp, s, index)
    row.update(reward=None, text="", model_calls=None, tokens_processed=None, prompt_tokens=None,
               generated_tokens=0)
    try:
        row.update(exp.task.evaluate("", s))
    except Exception as err:  # noqa: BLE001 - the row is written without metrics, never lost
        log.warning("sample %s: its error row cannot be scored either (%s: %s)", s.id,
                    type(err).__name__, err)
    row.update(valid=False,
               error=f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    row["time_s"] = elapsed
    return row


def default_run_dir() -> Path:
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir)
    except (ImportError, ValueError):
        return Path("outputs/runs") / datetime.now().strftime("%Y-%m-%d/%H-%M-%S-%f")


def run(cfg: DictConfig, run_dir: str | Path | None = None,
        handle: RunHandle | None = None) -> pd.DataFrame:
    """Run one experiment and return its per-sample results as a DataFrame.

    Results are written to ``run_dir`` (default: the Hydra run dir, or ``outputs/runs/<time>``
    outside Hydra): ``results.jsonl``, ``summary.csv``, ``run.json`` and, outside Hydra,
    ``config.yaml``. The DataFrame holds exactly this config's rows, one per selected series in
    sample order (resumed ones included). ``handle``, if given, is filled in as the run goes on.
    """
    return execute(prepare(cfg, handle), run_dir, handle)


def _expected_keys(exp: Experiment) -> list[tuple]:
    return [row_key(_identity(exp, s)) for s in exp.samples]


def execute(exp: Experiment, run_dir: str | Path | None = None,
            handle: RunHandle | None = None) -> pd.DataFrame:
    """Run the samples of a prepared experiment, writing each row as it is produced.

    The run dir is locked and checked against this experiment's fingerprint first
    (:mod:`specdifftree.rundir`); rows already written for this config are kept (resume).
    ``handle``, if given, gets the run dir as soon as it is claimed.
    """
    from .preflight import preflight
    from .rundir import (RunDirError, atomic_write, claim, describe_oserror, fingerprint,
                         note_run, provenance)

    cfg = exp.cfg
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir()
    preflight(exp)
    fp = fingerprint(cfg, exp.lm, exp.samples)
    c = claim(run_dir, fp, provenance(cfg, exp.lm, fp), resume=bool(cfg.get("resume", True)))
    run_dir = c.run_dir
    if handle is not None:
        handle.run_dir = run_dir
    status = "failed"
    writer = None
    try:
        try:
            writer = ResultsWriter(run_dir)
            reused = len(writer.rows)
            note_run(run_dir, rows_reused=reused, lines_rejected=len(writer.rejected))
            # the config copy is written only now, after the fingerprint check passed: a refused
            # run never overwrites the copy of the config whose rows the dir holds
            if not save_hydra_copy(run_dir, cfg):
                atomic_write(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        except OSError as exc:
            raise RunDirError(describe_oserror(exc, run_dir)) from None
        try:
            _loop(exp, writer, run_dir)
            status = "completed"
        except OSError as exc:
            raise RunDirError(describe_oserror(exc, run_dir)) from None
        except KeyboardInterrupt:
            status = "interrupted"
            raise
        finally:
            writer.close()
    finally:
        try:
            if writer is not None:
                note_run(run_dir, finished_at=_now(), status=status,
                         rows_written=writer.lines_appended())
        except OSError:  # the run's own error (e.g. a full disk) is the one reported
            pass
        finally:
            c.lock.release()
    by_key = {row_key(r): r for r in writer.rows}
    rows = [by_key[k] for k in _expected_keys(exp) if k in by_key]
    df = pd.DataFrame(rows)
    df.attrs["run_dir"] = str(run_dir)
    df.attrs["model_cache_hit"] = exp.model_cache_hit
    df.attrs["rejected_lines"] = len(writer.rejected)
    return df


def _now() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


def save_hydra_copy(run_dir: Path, cfg: DictConfig) -> bool:
    """Write Hydra's copy of the job's config into ``<run_dir>/.hydra`` (``config.yaml``,
    ``hydra.yaml``, ``overrides.yaml``, as Hydra writes them), each file atomically.

    The primary config sets ``hydra.output_subdir: null`` so that Hydra does not write them itself
    before the run dir's fingerprint is checked; False outside a Hydra job."""
    try:
        from hydra.core.hydra_config import HydraConfig

        hc = HydraConfig.get()
    except (ImportError, ValueError):
        return False
    from .rundir import atomic_write

    folder = Path(run_dir) / ".hydra"
    folder.mkdir(exist_ok=True)
    atomic_write(folder / "config.yaml", OmegaConf.to_yaml(cfg))
    atomic_write(folder / "hydra.yaml", OmegaConf.to_yaml({"hydra": hc}))
    atomic_write(folder / "overrides.yaml",
                 OmegaConf.to_yaml(OmegaConf.create(list(hc.overrides.task))))
    return True


def _loop(exp: Experiment, writer: ResultsWriter, run_dir: Path) -> None:
    from tqdm import tqdm

    from .console import bars_enabled
    from .loggers import build_logger

    cfg = exp.cfg
    done = writer.done_keys()
    record = bool(cfg.output.get("samples", True)) and exp.method.needs_model
    samples_writer = SamplesWriter(run_dir, done) if record else None
    logger = build_logger(cfg.get("logger"))
    logger.start(cfg, run_dir)
    try:
        bar = tqdm(exp.samples, desc=f"{exp.method.name} {cfg.dataset.name}", unit="sample",
                   disable=not bars_enabled(cfg.output.get("progress", True)), leave=False,
                   dynamic_ncols=True)
        for index, s in enumerate(bar):
            if row_key(_identity(exp, s)) in done:
                continue
            t0 = time.perf_counter()
            sample_rows: list | None = [] if samples_writer is not None else None
            try:
                row = run_sample(exp, s, index, sample_rows)
            except SpecDiffTreeError:
                raise  # a user error (config, data, model) is the same for every sample
            except (Exception, SystemExit) as exc:  # noqa: BLE001 - one bad sample must not stop the run
                log.warning("sample %s failed: %s: %s", s.id, type(exc).__name__, exc)
                log.debug("traceback of sample %s:\n%s", s.id, traceback.format_exc())
                row = error_row(exp, s, index, exc, time.perf_counter() - t0)
                sample_rows = None  # a failed sample records no continuations
            if sample_rows:
                samples_writer.write(sample_rows)
            writer.write(row)
            logger.log_sample(row)
    finally:
        summary = writer.write_summary()
        if samples_writer is not None:
            samples_writer.close()
        logger.log_summary(summary, run_dir)
        logger.finish()
