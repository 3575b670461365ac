"""One experiment: config -> task -> search -> metrics -> results writer.

:func:`run` is what the CLI and notebooks call. The flow of one sample reads top to bottom in
:func:`run_sample`, one path for every task and method: the task's reward context -> the method's
answer (:mod:`specdifftree.solvers`: a search on a Session opened on the task's prompt, or a
classical forecast) -> the task's metrics of the answer and of the answer rule -> one row. The task
(:class:`specdifftree.tasks.base.Task`) and the data source are built from the dataset config's
``_target_`` nodes (:mod:`specdifftree.tasks.build`).
"""

from __future__ import annotations

import logging
import time
import traceback
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from .config import validate
from .errors import SpecDiffTreeError
from .results import ResultsWriter, row_key
from .rewards.build import build_reward
from .rollouts import SamplesWriter
from .search.base import Method

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
    task: object  # a specdifftree.tasks.base.Task
    reward: object
    samples: list
    lm: object | None
    model_cache_hit: bool | None
    answer: str | None = None  # method.answer (see answers.py)
    solver: object = None  # specdifftree.solvers: how the method answers a sample

    def identity(self, s) -> dict:
        return _identity(self, s)


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


def load_samples(cfg: DictConfig) -> list:
    from .modelcache import get_series  # process-wide dataset cache (shared by sweep jobs)
    from .tasks.sources import select

    series, _ = get_series(cfg.dataset)
    # the series are picked by dataset.subset_seed alone, so every `seed` evaluates the same ones
    subset_seed = cfg.dataset.get("subset_seed")
    return select(series, cfg.num_samples, int(subset_seed or 0))


def prepare(cfg: DictConfig, handle: RunHandle | None = None) -> Experiment:
    """Build the experiment of ``cfg``; ``handle``, if given, learns whether the model came from
    the process's model cache as soon as it is got (kept if a later check fails)."""
    from .solvers import backend_settings, solver_for
    from .tasks.build import build_task

    validate(cfg)
    method = build_method(cfg.method)
    task = build_task(cfg.dataset)
    samples = load_samples(cfg)
    reward = build_reward(cfg.reward)
    answer = cfg.method.get("answer")  # checked with the method (search.build)
    task.check_method(method, answer)
    lm, hit = None, None
    if method.needs_model:
        from .modelcache import get_model

        lm, hit = get_model(cfg.model)
        if handle is not None:
            handle.model_cache_hit = hit
        lm.check_backend(**backend_settings(cfg))  # e.g. a quantization the model cannot take
    return Experiment(cfg, method, task, reward, samples, lm, hit,
                      None if answer is None else str(answer), solver_for(method))


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


def run_sample(exp: Experiment, s, index: int, sample_rows: list | None = None) -> dict:
    """Search (or forecast) and score one series; the returned dict is one line of results.jsonl.

    ``sample_rows``: when given, one dict per continuation the search scored is appended to it
    (the lines of samples.jsonl, see :mod:`specdifftree.rollouts`)."""
    from .solvers import score_values

    t0 = time.perf_counter()
    ctx = exp.task.reward_context(s)
    row = _base_row(exp, s, index)
    out = exp.solver.solve(exp, s, index, ctx, sample_rows)
    row.update(out.fields)
    row.update(exp.task.evaluate(out.text, s, values=out.values))
    row.update(exp.task.answer_fields(
        out.rule, row, out.sample_texts, s,
        lambda values, text: score_values(exp, values, text, ctx, out.diagnostics)))
    row.update(out.diagnostics.row())
    row["time_s"] = time.perf_counter() - t0
    return row


def error_row(exp: Experiment, s, index: int, exc: BaseException, elapsed: float) -> dict:
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
    record = bool(cfg.output.get("samples", True)) and exp.solver.records_samples
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
