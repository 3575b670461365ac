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

from .config import validate
from .errors import ConfigError, SpecDiffTreeError
from .results import ResultsWriter
from .rewards.build import build_reward
from .search.base import Budget, Method, RewardOracle
from .tasks.forecasting import ForecastTask
from .tasks.serialize import Serializer
from .tasks.series import Series

log = logging.getLogger(__name__)


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


def build_method(method_cfg) -> Method:
    from hydra.utils import get_class

    target = str(method_cfg.get("_target_"))
    try:
        cls = get_class(target)
    except Exception as exc:  # noqa: BLE001
        raise ConfigError(f"method._target_={target!r} cannot be imported: {exc}") from exc
    kwargs = {k: v for k, v in OmegaConf.to_container(method_cfg, resolve=True).items()
              if k not in ("_target_", "name")}
    try:
        method = cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"method={method_cfg.get('name')}: {exc}") from exc
    method.name = str(method_cfg.get("name") or method.name)
    return method


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
    return ForecastTask(ser, context_length=cfg.dataset.get("context_length"), chat=bool(p.chat))


def load_samples(cfg: DictConfig) -> list:
    from .modelcache import get_series  # process-wide dataset cache (shared by sweep jobs)
    from .tasks.sources import select

    series, _ = get_series(cfg.dataset)
    seed = cfg.dataset.get("subset_seed")
    return select(series, cfg.num_samples, int(cfg.seed if seed is None else seed))


def prepare(cfg: DictConfig) -> Experiment:
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
    return Experiment(cfg, method, task, reward, samples, lm, hit)


def _base_row(exp: Experiment, s, index: int) -> dict:
    return {"method": exp.method.name, "dataset": exp.cfg.dataset.name, "series_id": s.id,
            "seed": int(exp.cfg.seed), "sample_index": index,
            "horizon": getattr(s, "horizon", None), "period": getattr(s, "period", None),
            "model": exp.lm.name if exp.lm else None, "reward_name": exp.cfg.reward.get("name"),
            "error": None}


def run_sample(exp: Experiment, s: Series, index: int) -> dict:
    """Search and score one series; the returned dict is one line of results.jsonl."""
    cfg, task, method = exp.cfg, exp.task, exp.method
    t0 = time.perf_counter()
    ctx = task.reward_context(s)
    row = _base_row(exp, s, index)
    failures0 = getattr(exp.reward, "failures", 0), getattr(exp.reward, "nonfinite", 0)
    if not method.needs_model:
        values = np.asarray(method.forecast(np.asarray(s.x, dtype=np.float64), s.horizon, s.period),
                            dtype=np.float64)
        reward = float(np.asarray(exp.reward(values[None, :], [""], np.ones(1), ctx)).reshape(-1)[0])
        row.update(valid=True, n_parsed=s.horizon, reward=reward, text="", model_calls=0,
                   tokens_processed=0, prompt_tokens=0, generated_tokens=0, rollouts=0, nodes=0,
                   max_depth=0, mean_branching=0.0, mean_logprob=None, perplexity=None)
        row.update(task.evaluate_values(values, s))
    else:
        from .backend.session import Session

        lm = exp.lm
        prompt = task.prompt_text(s, lm.tokenizer)
        max_new = int(cfg.max_new_tokens or task.max_new_tokens(s))
        session = Session(lm, lm.encode(prompt), max_new_tokens=max_new,
                          logprob_cache_mb=float(cfg.backend.logprob_cache_mb),
                          kv_cache_mb=float(cfg.backend.get("kv_cache_mb", 1024)))

        def reward_fn(seqs):
            texts = [lm.decode(q) for q in seqs]
            forecasts, valid = task.reward_inputs(texts, s)
            return exp.reward(forecasts, texts, valid, ctx)

        oracle = RewardOracle(reward_fn)
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
                   reward_evaluations=oracle.evaluated,
                   reward_time_s=oracle.time_s, model_time_s=session.stats.model_time_s)
        st = session.stats
        if st.plain_tokens:
            plain = st.plain_logprob_sum / st.plain_tokens
            row.update(plain_mean_logprob=plain,
                       logprob_gap=(mean_lp - plain) if mean_lp is not None else None)
        row.update({k: v for k, v in result.stats.items() if k not in row})
        row.update(task.evaluate(text, s))
    row["reward_failures"] = getattr(exp.reward, "failures", 0) - failures0[0]
    row["reward_nonfinite_values"] = getattr(exp.reward, "nonfinite", 0) - failures0[1]
    row["reward_error"] = getattr(exp.reward, "last_error", None) if row["reward_failures"] else None
    row["time_s"] = time.perf_counter() - t0
    return row


def error_row(exp: Experiment, s: Series, index: int, exc: BaseException, elapsed: float) -> dict:
    """The row of a sample whose processing raised: scored as an invalid (empty) forecast."""
    row = _base_row(exp, s, index)
    row.update(reward=None, text="", model_calls=None, tokens_processed=None, prompt_tokens=None,
               generated_tokens=0)
    row.update(exp.task.evaluate("", s))
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


def run(cfg: DictConfig, run_dir: str | Path | None = None) -> pd.DataFrame:
    """Run one experiment and return its per-sample results as a DataFrame.

    Results are written to ``run_dir`` (default: the Hydra run dir, or ``outputs/runs/<time>``
    outside Hydra): ``results.jsonl``, ``summary.csv`` and, outside Hydra, ``config.yaml``.
    """
    return execute(prepare(cfg), run_dir)


def execute(exp: Experiment, run_dir: str | Path | None = None) -> pd.DataFrame:
    """Run the samples of a prepared experiment, writing each row as it is produced."""
    from tqdm import tqdm

    cfg = exp.cfg
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir()
    writer = ResultsWriter(run_dir)
    if not (run_dir / ".hydra").exists():
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    done = writer.done_keys()
    from .loggers import build_logger

    logger = build_logger(cfg.get("logger"))
    logger.start(cfg, run_dir)
    try:
        bar = tqdm(exp.samples, desc=f"{exp.method.name} {cfg.dataset.name}", unit="sample",
                   disable=not cfg.output.get("progress", True), leave=False)
        for index, s in enumerate(bar):
            if (exp.method.name, cfg.dataset.name, int(cfg.seed), s.id) in done:
                continue
            t0 = time.perf_counter()
            try:
                row = run_sample(exp, s, index)
            except SpecDiffTreeError:
                raise  # a user error (config, data, model) is the same for every sample
            except Exception as exc:  # noqa: BLE001 - one bad sample must not stop the run
                log.warning("sample %s failed: %s: %s", s.id, type(exc).__name__, exc)
                log.debug("traceback of sample %s:\n%s", s.id, traceback.format_exc())
                row = error_row(exp, s, index, exc, time.perf_counter() - t0)
            writer.write(row)
            logger.log_sample(row)
    finally:
        summary = writer.write_summary()
        writer.close()
        logger.log_summary(summary, run_dir)
        logger.finish()
    df = pd.DataFrame(writer.rows)
    df.attrs["run_dir"] = str(run_dir)
    df.attrs["model_cache_hit"] = exp.model_cache_hit
    return df
