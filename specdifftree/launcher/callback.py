"""Hydra callbacks of a multirun: the failed jobs and exit code 1, the sweep's table.

The sequential launcher keeps failed jobs from stopping the sweep: each job's task wrapper returns
a :class:`specdifftree.launcher.task.JobResult`, which Hydra hands to the callbacks when the job
ends. :class:`SweepExitCode` keeps the failed ones; once every batch has run, it lists them (job
number, overrides, error, job dir) on stderr and exits 1.
"""

from __future__ import annotations

import sys

from hydra.experimental.callback import Callback


def format_failures(failures: list[dict]) -> str:
    lines = [f"specdifftree: {len(failures)} sweep job(s) failed:"]
    for f in failures:
        overrides = " ".join(o for o in f.get("overrides", []) if not o.startswith("hydra."))
        lines.append(f"  #{f.get('job_num')} [{overrides}]: {f.get('error')}")
        if f.get("job_dir"):
            lines.append(f"      job dir: {f['job_dir']} (job.json has the traceback, if any)")
    return "\n".join(lines)


class SweepExitCode(Callback):
    """Lists the sweep's failed jobs at its end and exits 1 (none failed: nothing)."""

    def __init__(self) -> None:
        self.failures: list[dict] = []  # job.json records of this multirun's failed jobs

    def on_multirun_start(self, config, **kwargs) -> None:
        self.failures = []

    def on_job_end(self, config, job_return, **kwargs) -> None:
        from hydra.core.utils import JobStatus

        from .task import JobResult

        if job_return.status != JobStatus.COMPLETED:  # Hydra's own failure: Hydra reports it
            return
        result = job_return.return_value
        if isinstance(result, JobResult) and result.failed:
            self.failures.append(dict(result.record))

    def on_multirun_end(self, config, **kwargs) -> None:
        if self.failures:
            print(format_failures(self.failures), file=sys.stderr, flush=True)
            raise SystemExit(1)


class SweepTable(Callback):
    """After a multirun: one table row per job (its overrides and summary) and the command that
    builds the full report (``make report DIR=<sweep dir>``)."""

    def on_multirun_end(self, config, **kwargs) -> None:
        from pathlib import Path

        from omegaconf import OmegaConf

        from ..console import write
        from ..report_table import sweep_table

        sweep_dir = OmegaConf.select(config, "hydra.sweep.dir")
        if not sweep_dir or not Path(str(sweep_dir)).is_dir():
            return
        sys.stderr.flush()
        write("\n" + sweep_table(sweep_dir))
        write(f"full report: make report DIR={sweep_dir}   "
              f"(or: python -m specdifftree.report {sweep_dir})")
