"""The task wrapper: one sweep job's bookkeeping around its job function.

A *job function* ``job_fn(cfg, handle) -> value`` runs one job (``cfg`` without the ``hydra``
node) and raises its failures; while it runs it notes what it learns on ``handle``
(:class:`specdifftree.runner.RunHandle`: the run dir, whether the model came from the process's
model cache), which the wrapper still holds when the job fails. The CLI's task function is one
(:func:`specdifftree.__main__.task_function`).

:class:`JobTask` wraps it, and is what Hydra's ``run_job`` calls: it skips a job that is complete
already, refuses a job dir that holds another job's or another configuration's results, runs the
job function, catches its failure, writes ``job.json`` (:mod:`.jobinfo`) and *returns* a
:class:`JobResult` — done, skipped or failed — instead of raising. Only ``KeyboardInterrupt``
goes on (after the job is recorded as failed), so that Ctrl-C stops the sweep.
"""

from __future__ import annotations

import logging
import time
import traceback
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Sequence

from omegaconf import OmegaConf

from .jobinfo import (expected_keys, job_identity, read_job_info, recorded_fingerprint_diff,
                      result_keys, write_job_info)

log = logging.getLogger(__name__)


@dataclass
class JobResult:
    """What one job came to: ``status`` (``done | failed | skipped``), ``record`` (the fields of
    its ``job.json``), ``value`` (what the job function returned; None unless done) and
    ``exception`` (what made it fail)."""

    status: str
    record: dict
    value: Any = None
    exception: BaseException | None = None

    @property
    def failed(self) -> bool:
        return self.status == "failed"

    @property
    def error(self) -> str | None:
        return self.record.get("error")

    def __repr__(self) -> str:
        tail = f": {self.error}" if self.error else ""
        return f"JobResult(#{self.record.get('job_num')} {self.status}{tail})"


def now_iso() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


def error_line(exc: BaseException) -> str:
    """One line for a job's failure: a user error's own message, else ``Type: first line``."""
    from ..errors import SpecDiffTreeError

    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, SpecDiffTreeError):
        return msg or type(exc).__name__
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


class JobTask:
    """The task wrapper of one sweep job (see the module's text).

    ``num``, ``overrides`` and ``job_dir`` name the job; ``order`` is its place in the launch's
    execution order; ``skip_complete=False`` runs complete jobs again (they resume, so nothing is
    recomputed); ``launcher`` is recorded in ``job.json``.
    """

    def __init__(self, job_fn: Callable, *, num: int, overrides: Sequence[str],
                 job_dir: str | Path | None, order: int | None = None,
                 skip_complete: bool = True, launcher: str = "sequential"):
        self.job_fn = job_fn
        self.num = num
        self.overrides = list(overrides)
        self.job_dir = Path(job_dir) if job_dir is not None else None
        self.order = order
        self.skip_complete = bool(skip_complete)
        self.launcher = launcher

    def __call__(self, cfg) -> JobResult:
        """Run the job with its config (no ``hydra`` node) and return what it came to."""
        from ..runner import RunHandle

        record = self._record()
        t0 = time.perf_counter()
        handle = RunHandle()
        value, exc = None, None
        try:
            try:
                early = self._check(cfg, record)
                if early is not None:
                    return self._finish(record, t0, *early)
                value = self.job_fn(cfg, handle)
            except SystemExit as sysexit:  # a job function raises; one that exits fails too
                if sysexit.code not in (None, 0):
                    try:  # raised, so that its traceback shows where the job exited
                        raise RuntimeError(f"job exited with code {sysexit.code}") from sysexit
                    except RuntimeError as err:
                        exc = err
            except Exception as err:  # noqa: BLE001 - recorded; the sweep goes on
                exc = err
        except KeyboardInterrupt as kbd:
            record["model_cache_hit"] = handle.model_cache_hit
            self._finish(record, t0, "failed", kbd)
            raise
        record["model_cache_hit"] = handle.model_cache_hit
        if exc is not None:
            return self._finish(record, t0, "failed", exc)
        return self._finish(record, t0, "done", value=value)

    def fail(self, exc: BaseException) -> JobResult:
        """Record a job that failed before or outside its job function (its config does not
        compose, its dir cannot be made)."""
        return self._finish(self._record(), time.perf_counter(), "failed", exc)

    # ------------------------------------------------------------------------------- internals

    def _record(self) -> dict:
        return {"job_num": self.num, "order": self.order, "overrides": list(self.overrides),
                "status": None, "model_cache_hit": None, "wall_time_s": 0.0, "error": None,
                "traceback": None, "n_expected": None, "n_results": None,
                "job_dir": str(self.job_dir) if self.job_dir is not None else None,
                "started_at": now_iso(), "finished_at": None, "launcher": self.launcher}

    def _check(self, cfg, record: dict) -> tuple[str, BaseException | None] | None:
        """Before the job runs: ``("failed", error)`` for a job dir of another job or
        configuration, ``("skipped", None)`` for a complete job, None to run it."""
        from ..errors import ConfigError
        from ..rundir import FingerprintMismatch

        if self.job_dir is None:
            return None
        prev = read_job_info(self.job_dir)
        if prev is not None and prev.get("overrides") is not None \
                and job_identity(prev["overrides"]) != job_identity(self.overrides):
            return "failed", ConfigError(
                f"job dir {self.job_dir} holds results of another job (overrides "
                f"{' '.join(prev['overrides'])}); run this sweep with a new hydra.sweep.dir")
        expected = expected_keys(cfg)
        record["n_expected"] = len(expected) if expected is not None else None
        resume = bool(OmegaConf.select(cfg, "resume", default=True))
        # a job dir holding another configuration's results is never reused (nor run into: the
        # run would refuse it after loading the model); resume=false starts clean in a new dir
        diff = recorded_fingerprint_diff(self.job_dir, cfg) if resume else None
        if diff:
            return "failed", FingerprintMismatch(
                f"job dir {self.job_dir} holds results of another configuration (differs in: "
                f"{', '.join(diff)}); run this sweep with a new hydra.sweep.dir, or add "
                "resume=false to start clean in new job dirs")
        if self.skip_complete and expected and resume and diff == [] \
                and expected <= result_keys(self.job_dir):
            if prev is not None:
                record["previous"] = {k: v for k, v in prev.items() if k != "previous"}
            log.info(f"\t#{self.num} already complete ({len(expected)} samples): skipped")
            return "skipped", None
        return None

    def _finish(self, record: dict, t0: float, status: str, exc: BaseException | None = None,
                value: Any = None) -> JobResult:
        from ..errors import SpecDiffTreeError

        record["status"] = status
        record["wall_time_s"] = round(time.perf_counter() - t0, 4)
        record["finished_at"] = now_iso()
        if exc is not None:
            record["error"] = error_line(exc)
            if not isinstance(exc, SpecDiffTreeError):  # a user error needs no traceback
                record["traceback"] = "".join(traceback.format_exception(
                    type(exc), exc, exc.__traceback__))
        if self.job_dir is not None:
            record["n_results"] = len(result_keys(self.job_dir))
            try:
                write_job_info(self.job_dir, record)
            except OSError as werr:  # the job dir itself is unusable
                log.error(f"cannot write job.json in {self.job_dir}: {werr}")
        return JobResult(status, record, value, exc)
