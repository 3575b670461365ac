"""The sequential sweep launcher: every job of a multirun in this process, one after another.

* Models and datasets are loaded once per process (:mod:`specdifftree.modelcache`) and shared by
  the jobs that need them; jobs are reordered so that jobs sharing a model (then a dataset) run
  together, and a model is released — MLX's buffer cache cleared — once no remaining job needs it.
  Job numbers (and so job dirs) keep Hydra's order, so a re-run maps each job to the same dir.
* Each job runs through the task wrapper (:class:`.task.JobTask`), which holds the job's
  bookkeeping: it skips a complete job (resume), catches a failure, writes ``job.json``
  (:mod:`.jobinfo`) and returns a :class:`.task.JobResult`. A failing job does not stop the
  sweep: Hydra hands each job's result to the callbacks, and
  :class:`specdifftree.launcher.callback.SweepExitCode` lists the failures at the end with their
  overrides and errors, and exits 1.
* This module keeps the rest: composing each job's config, its dir (a grown or reordered sweep
  finds the dirs of its jobs again), the order of the jobs, releasing models, ``sweep.json``.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from .jobinfo import job_identity, needs_model, read_job_info
from .task import JobResult, JobTask, now_iso

log = logging.getLogger(__name__)

CALLBACK_TARGET = "specdifftree.launcher.callback.SweepExitCode"
SWEEP_FILE = "sweep.json"


@dataclass
class PlannedJob:
    num: int
    overrides: list[str]
    config: DictConfig | None = None      # full sweep config (with the hydra node)
    task_cfg: DictConfig | None = None    # what the task function receives
    job_dir: Path | None = None
    model_key: str | None = None          # None: the job's method needs no model
    dataset_key: str | None = None
    error: BaseException | None = None    # the config could not be composed
    extra: dict = field(default_factory=dict)


def _task_config(config: DictConfig) -> DictConfig:
    task_cfg = copy.deepcopy(config)
    with read_write(task_cfg), open_dict(task_cfg):
        task_cfg.pop("hydra", None)
    return task_cfg


def order_jobs(jobs: Sequence[PlannedJob]) -> list[PlannedJob]:
    """Jobs grouped by model (first appearance order), then by dataset; stable otherwise."""
    model_rank: dict = {}
    data_rank: dict = {}
    for j in jobs:
        model_rank.setdefault(j.model_key, len(model_rank))
        data_rank.setdefault(j.dataset_key, len(data_rank))
    return sorted(jobs, key=lambda j: (model_rank[j.model_key], data_rank[j.dataset_key], j.num))


def assign_dirs(jobs: Sequence[PlannedJob], sweep_dir: Path) -> None:
    """Keep each job in the dir that already holds its results, so a grown or reordered sweep
    (e.g. one more seed or method) resumes: a job whose overrides match a ``job.json`` of the
    sweep dir goes to that dir; a job whose own dir holds another job gets a fresh one."""
    recorded: dict[tuple, Path] = {}
    for info_path in sorted(sweep_dir.glob("*/" + "job.json")):
        info = read_job_info(info_path.parent)
        if info and info.get("overrides") is not None:
            recorded.setdefault(job_identity(info["overrides"]), info_path.parent)
    if not recorded:
        return
    taken = {p.name for p in sweep_dir.iterdir() if p.is_dir()}
    claimed: set[str] = set()
    wanted = [j for j in jobs if j.job_dir is not None and j.config is not None]
    for j in wanted:  # first the jobs that have a dir already
        d = recorded.get(job_identity(j.overrides))
        if d is not None:
            j.extra["dir"] = d.name
            claimed.add(d.name)
    fresh = (str(n) for n in range(len(taken) + len(jobs) + 1) if str(n) not in taken)
    for j in wanted:
        if "dir" in j.extra:
            name = j.extra["dir"]
        elif j.job_dir.parent == sweep_dir and (j.job_dir.name in claimed
                                                or (j.job_dir / "job.json").exists()):
            name = next(n for n in fresh if n not in claimed)  # its default dir holds another job
        else:
            claimed.add(j.job_dir.name)
            continue
        claimed.add(name)
        if name != j.job_dir.name:
            with open_dict(j.config):
                j.config.hydra.sweep.subdir = name
            j.job_dir = sweep_dir / name


class SequentialSweep:
    """What :class:`hydra_plugins.specdifftree_launcher.sequential_launcher.SequentialLauncher`
    does; kept here so it is importable and documented with the rest of the package."""

    def __init__(self, *, hydra_context, task_function, config: DictConfig,
                 skip_complete: bool = True, release_models: bool = True,
                 progress: bool | None = None):
        self.hydra_context = hydra_context
        self.task_function = task_function
        self.config = config
        self.skip_complete = bool(skip_complete)
        self.release_models = bool(release_models)
        if progress is None:
            progress = bool(OmegaConf.select(config, "output.progress", default=True))
        self.progress = bool(progress)
        callbacks = OmegaConf.select(config, "hydra.callbacks", default=None) or {}
        # Without our exit-code callback, failed jobs go back to Hydra as failures (it then stops
        # after the batch and exits 1); with it, they do after every batch has run.
        self.exit_code_by_callback = any(
            str((c or {}).get("_target_", "")) == CALLBACK_TARGET for c in callbacks.values())
        self.records: dict[int, dict] = {}  # job.json of every job launched, for sweep.json

    # ------------------------------------------------------------------------------- planning

    def plan(self, num: int, overrides: Sequence[str]) -> PlannedJob:
        from .. import modelcache

        job = PlannedJob(num=num, overrides=list(overrides))
        try:
            sweep_config = self.hydra_context.config_loader.load_sweep_config(
                self.config, list(overrides))
            with open_dict(sweep_config):
                sweep_config.hydra.job.id = num
                sweep_config.hydra.job.num = num
            job.config = sweep_config
            job.job_dir = (Path(str(OmegaConf.select(sweep_config, "hydra.sweep.dir")))
                           / str(OmegaConf.select(sweep_config, "hydra.sweep.subdir")))
            job.task_cfg = _task_config(sweep_config)
        except Exception as exc:  # noqa: BLE001 - reported as this job's failure
            job.error = exc
            return job
        try:
            if needs_model(job.task_cfg.method):
                job.model_key = modelcache.model_key(job.task_cfg.model)
        except Exception:  # noqa: BLE001 - e.g. a missing model.path; the job reports it
            job.model_key = None
        try:
            job.dataset_key = modelcache.dataset_key(job.task_cfg.dataset)
        except Exception:  # noqa: BLE001
            job.dataset_key = None
        return job

    # -------------------------------------------------------------------------------- running

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list:
        from hydra.core.utils import configure_log, filter_overrides, setup_globals
        from tqdm import tqdm

        from .. import modelcache
        from ..console import bars_enabled

        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        from ..rundir import remove_stale_temporaries

        remove_stale_temporaries(sweep_dir, locked=False)  # sweep.json's, of a killed sweep
        jobs = [self.plan(initial_job_idx + i, ov) for i, ov in enumerate(job_overrides)]
        assign_dirs(jobs, sweep_dir)
        order = order_jobs(jobs)
        log.info(f"Launching {len(jobs)} jobs sequentially in this process (sweep dir {sweep_dir})")
        returns: dict[int, Any] = {}
        counts = {"done": 0, "failed": 0, "skipped": 0}
        bar = tqdm(total=len(order), desc="sweep", unit="job", disable=not bars_enabled(self.progress),
                   dynamic_ncols=True)
        try:
            for pos, job in enumerate(order):
                log.info(f"\t#{job.num} : {' '.join(filter_overrides(job.overrides))}")
                result, ret = self.run_one(job, pos)
                info = result.record
                returns[job.num] = ret
                counts[info["status"]] += 1
                self.records[job.num] = info
                self._write_sweep_file(sweep_dir)
                configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
                log.info(f"\t#{job.num} {info['status']} in {info['wall_time_s']:.2f}s"
                         + (f": {info['error']}" if info.get("error") else ""))
                if self.release_models:
                    rest = order[pos + 1:]
                    modelcache.release_unused({j.model_key for j in rest if j.model_key},
                                              {j.dataset_key for j in rest if j.dataset_key})
                bar.set_postfix(counts, refresh=False)
                bar.update(1)
        finally:
            bar.close()
        log.info("Sweep batch finished: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
        return [returns[j.num] for j in jobs]

    def _write_sweep_file(self, sweep_dir: Path) -> None:
        import json

        from ..rundir import atomic_write

        data = {"sweep_dir": str(sweep_dir), "updated_at": now_iso(),
                "jobs": [self.records[k] for k in sorted(self.records)]}
        atomic_write(sweep_dir / SWEEP_FILE, json.dumps(data, indent=2, default=str) + "\n")

    def run_one(self, job: PlannedJob, position: int) -> tuple[JobResult, Any]:
        """Run one job through its task wrapper in its dir (Hydra's ``run_job``: the job's
        config, logging and callbacks); returns its result and what goes back to Hydra."""
        from hydra.core.utils import run_job

        task = JobTask(self.task_function, num=job.num, overrides=job.overrides,
                       job_dir=job.job_dir, order=position, skip_complete=self.skip_complete)
        failure, ret = job.error, None
        if failure is None:
            try:
                ret = run_job(hydra_context=self.hydra_context, task_function=task,
                              config=job.config, job_dir_key="hydra.sweep.dir",
                              job_subdir_key="hydra.sweep.subdir")
            except Exception as exc:  # noqa: BLE001 - raised outside the job (e.g. its dir)
                failure = exc
        if ret is not None:
            return ret.return_value, self._job_return(job, ret.return_value, ret)
        # the job did not get to run: record it, and tell the callbacks as run_job would have
        result = task.fail(failure)
        ret = self._job_return(job, result)
        self.hydra_context.callbacks.on_job_end(
            config=job.config if job.config is not None else self.config, job_return=ret)
        return result, ret

    def _job_return(self, job: PlannedJob, result: JobResult, ret=None):
        """What goes back to Hydra for a job: its result (a failed one too, when
        :class:`.callback.SweepExitCode` reports failures at the end); without that callback a
        failure goes back as Hydra's own, which stops the sweep after this batch."""
        from hydra.core.utils import JobReturn, JobStatus

        if ret is None:
            ret = JobReturn()
            ret.overrides = list(job.overrides)
            ret.cfg = job.task_cfg
            ret.hydra_cfg = job.config
            ret.working_dir = str(job.job_dir) if job.job_dir else None
            ret.task_name = OmegaConf.select(job.config, "hydra.job.name") if job.config else None
        if result.failed and not self.exit_code_by_callback:
            ret.status = JobStatus.FAILED
            ret.return_value = result.exception or RuntimeError(result.error)
        else:
            ret.status = JobStatus.COMPLETED
            ret.return_value = result
        return ret
