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
from .rewards.base import RewardContext
from .rewards.build import build_reward
from .search.base import Budget, Method, RewardOracle
from .tasks.forecasting import ForecastEvaluator, ForecastTask
from .tasks.serialize import Serializer
from .tasks.series import Series

log = logging.getLogger(__name__)


@dataclass
class Experiment:
    """Everything built from the config that stays fixed over the samples of one run."""

    cfg: DictConfig
    method: Method
    task: ForecastTask
    evaluator: ForecastEvaluator
    reward: object
    samples: list[Series]
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


def build_task(cfg: DictConfig) -> ForecastTask:
    p = cfg.prompt
    try:
        ser = Serializer(separator=p.separator, decimals=int(p.decimals),
                         scale_quantile=float(p.scale_quantile), scale_target=float(p.scale_target))
    except ValueError as exc:
        raise ConfigError(f"prompt: {exc}") from exc
    return ForecastTask(ser, context_length=cfg.dataset.get("context_length"), chat=bool(p.chat))


def load_samples(cfg: DictConfig) -> list[Series]:
    from .modelcache import get_series  # sweep hook: process-wide dataset cache
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
    if method.needs_model:
        from .modelcache import get_model

        lm, hit = get_model(cfg.model)
    return Experiment(cfg, method, task, ForecastEvaluator(task), reward, samples, lm, hit)


def _reward_context(task: ForecastTask, s: Series) -> RewardContext:
    return RewardContext(history=task.context(s), full_history=np.asarray(s.x, dtype=np.float64),
                         horizon=s.horizon, period=s.period, truth=np.asarray(s.y), sample=s)


def run_sample(exp: Experiment, s: Series, index: int) -> dict:
    """Search and score one series; the returned dict is one line of results.jsonl."""
    cfg, task, method = exp.cfg, exp.task, exp.method
    t0 = time.perf_counter()
    ctx = _reward_context(task, s)
    row: dict = {"method": method.name, "dataset": cfg.dataset.name, "series_id": s.id,
                 "seed": int(cfg.seed), "sample_index": index, "horizon": s.horizon,
                 "period": s.period, "model": exp.lm.name if exp.lm else None,
                 "reward_name": cfg.reward.get("name")}
    if not method.needs_model:
        values = np.asarray(method.forecast(np.asarray(s.x, dtype=np.float64), s.horizon, s.period),
                            dtype=np.float64)
        reward = float(np.asarray(exp.reward(values[None, :], [""], np.ones(1), ctx)).reshape(-1)[0])
        row.update(valid=True, n_parsed=s.horizon, reward=reward, text="", model_calls=0,
                   tokens_processed=0, prompt_tokens=0, generated_tokens=0, rollouts=0, nodes=0,
                   max_depth=0, mean_branching=0.0, mean_logprob=None, perplexity=None)
    else:
        from .backend.session import Session

        lm = exp.lm
        prompt = task.prompt_text(s, lm.tokenizer)
        max_new = int(cfg.max_new_tokens or task.max_new_tokens(s))
        session = Session(lm, lm.encode(prompt), max_new_tokens=max_new,
                          logprob_cache_mb=float(cfg.backend.logprob_cache_mb))

        def reward_fn(seqs):
            texts = [lm.decode(q) for q in seqs]
            fcs = [task.parse(t, s) for t in texts]
            return exp.reward(np.stack([f.values for f in fcs]), texts,
                              np.array([f.parsed_share for f in fcs]), ctx)

        oracle = RewardOracle(reward_fn)
        rollouts = cfg.budget.rollouts or cfg.method.get("num_rollouts")
        budget = Budget(rollouts=int(rollouts) if rollouts else None,
                        tokens=cfg.budget.tokens, max_new_tokens=max_new)
        rng = np.random.default_rng([int(cfg.seed), index])
        result = method.search(session, oracle, budget, rng)
        text = lm.decode(list(result.tokens))
        fc = task.parse(text, s)
        values = fc.values
        n_gen = len(result.tokens)
        mean_lp = (result.logprob / n_gen) if (result.logprob is not None and n_gen) else None
        row.update(valid=fc.valid, n_parsed=fc.n_parsed, reward=float(result.reward), text=text,
                   model_calls=session.model_calls, tokens_processed=session.tokens_processed,
                   prompt_tokens=session.prompt_tokens, generated_tokens=n_gen,
                   mean_logprob=mean_lp,
                   perplexity=float(np.exp(-mean_lp)) if mean_lp is not None else None,
                   reward_evaluations=oracle.evaluated, reward_nonfinite=oracle.nonfinite,
                   reward_time_s=oracle.time_s, model_time_s=session.stats.model_time_s)
        row.update({k: v for k, v in result.stats.items() if k not in row})
    row.update(exp.evaluator.score(values, s))
    row["forecast"] = values
    # sweep hook: truth and the last context values, so reports plot forecasts from results only
    row["truth"] = np.asarray(s.y, dtype=np.float64)
    row["history_tail"] = np.asarray(s.x, dtype=np.float64)[-3 * s.horizon:]
    row["time_s"] = time.perf_counter() - t0
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
    from tqdm import tqdm

    exp = prepare(cfg)
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
            row = run_sample(exp, s, index)
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
