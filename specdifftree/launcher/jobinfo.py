"""``job.json``: what the sweep launcher records about each job, and the resume test.

Fields (all jobs): ``job_num`` (Hydra's job number, names the job dir), ``order`` (position in
the execution order), ``overrides`` (the job's command-line overrides), ``status``
(``done | failed | skipped``), ``model_cache_hit`` (true: the model came from the process cache;
false: this job loaded it; null: no model was used, e.g. a classical method or a skipped job),
``wall_time_s``, ``error`` (one line, null unless failed), ``traceback`` (unexpected errors only),
``n_expected`` (samples the job selects, null if unknown), ``n_results`` (rows in results.jsonl),
``started_at`` / ``finished_at`` (ISO times), ``launcher``. A skipped job keeps the record of the
run that completed it under ``previous``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

JOB_FILE = "job.json"
STATUSES = ("done", "failed", "skipped")


# overrides that do not change a job's results: ignored when matching a job to its dir
_NEUTRAL = ("output.", "hydra.", "logger.", "logger=")


def job_identity(overrides) -> tuple[str, ...]:
    """What identifies a job's results: its overrides in any order, display/logging ones aside.
    ``++key=v`` counts as ``key=v`` (both set the same value; the CLI writes ``method.<key>``
    settings as ``++`` in sweeps over ``method=``)."""
    def norm(o: str) -> str:
        return o[2:] if o.startswith("++") else o

    return tuple(sorted(norm(str(o)) for o in overrides
                        if not str(o).lstrip("+~").startswith(_NEUTRAL)))


def read_job_info(job_dir: str | Path) -> dict | None:
    path = Path(job_dir) / JOB_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def write_job_info(job_dir: str | Path, info: dict) -> Path:
    """Write ``job.json`` atomically (a crash never leaves a half-written file)."""
    job_dir = Path(job_dir)
    job_dir.mkdir(parents=True, exist_ok=True)
    tmp = job_dir / (JOB_FILE + ".tmp")
    tmp.write_text(json.dumps(info, indent=2, default=str) + "\n")
    os.replace(tmp, job_dir / JOB_FILE)
    return job_dir / JOB_FILE


def result_keys(job_dir: str | Path) -> set[tuple]:
    """``(method, dataset, seed, series_id)`` of the rows already in ``results.jsonl``."""
    from ..errors import SpecDiffTreeError
    from ..results import read_results

    try:
        rows = read_results(job_dir)
    except (OSError, SpecDiffTreeError):  # unreadable: the job reports it when it runs
        return set()
    return {(r.get("method"), r.get("dataset"), r.get("seed"), r.get("series_id")) for r in rows}


def expected_keys(cfg) -> set[tuple] | None:
    """The result keys a job with config ``cfg`` (no ``hydra`` node) will write, or None.

    Uses the runner's own sample selection (and the process-wide dataset cache); None when it
    cannot be determined without running the job (e.g. the config or data is bad: the job itself
    then reports the error).
    """
    try:
        from ..runner import load_samples

        name = cfg.method.get("name")
        if not name:
            return None
        return {(str(name), str(cfg.dataset.name), int(cfg.seed), s.id) for s in load_samples(cfg)}
    except Exception:  # noqa: BLE001 - the job will raise the real error when it runs
        return None


def recorded_config_matches(job_dir: str | Path, cfg) -> bool:
    """Whether the job dir's ``run.json`` was written by this config and package version (the
    cheap part of the run fingerprint; the runner checks the rest when the job runs). A complete
    job is skipped only then, so an edited config never reuses old results."""
    from ..rundir import package_version, read_run_file, result_config

    data = read_run_file(job_dir)
    fp = (data or {}).get("fingerprint") or {}
    try:
        return (fp.get("config") == result_config(cfg)
                and fp.get("package_version") == package_version())
    except Exception:  # noqa: BLE001 - the job reports a bad config when it runs
        return False
