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


def needs_model(method_cfg) -> bool:
    """Whether the method of ``method_cfg`` uses a language model (False for a bad target: the
    job reports it when it runs)."""
    from hydra.utils import get_class

    try:
        return bool(getattr(get_class(str(method_cfg.get("_target_"))), "needs_model", True))
    except Exception:  # noqa: BLE001 - the job reports a bad target itself
        return False


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
    from ..rundir import atomic_write

    job_dir = Path(job_dir)
    job_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(job_dir / JOB_FILE, json.dumps(info, indent=2, default=str) + "\n")
    return job_dir / JOB_FILE


def result_keys(job_dir: str | Path) -> set[tuple]:
    """The row keys (:func:`specdifftree.results.row_key`) of the rows already in
    ``results.jsonl``."""
    from ..errors import SpecDiffTreeError
    from ..results import read_results, row_key

    try:
        rows = read_results(job_dir)
    except (OSError, SpecDiffTreeError):  # unreadable: the job reports it when it runs
        return set()
    return {row_key(r) for r in rows}


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


def recorded_fingerprint_diff(job_dir: str | Path, cfg) -> list[str] | None:
    """How the job dir's recorded fingerprint (``run.json``) differs from the one a run of
    ``cfg`` will have — config, package version, model weights and adapter, evaluated series —
    computed without loading the model. ``[]``: the same; None: nothing recorded, or the new
    fingerprint cannot be computed (the job then reports the reason when it runs)."""
    from ..rundir import diff_fingerprints, planned_fingerprint, read_run_file
    from ..runner import load_samples

    data = read_run_file(job_dir)
    old = (data or {}).get("fingerprint")
    if not old:
        return None
    try:
        new = planned_fingerprint(cfg, load_samples(cfg), needs_model(cfg.method))
    except Exception:  # noqa: BLE001 - the job reports a bad config, model or dataset itself
        return None
    return diff_fingerprints(old, new)


def recorded_config_matches(job_dir: str | Path, cfg) -> bool:
    """Whether the job dir's ``run.json`` records the fingerprint a run of ``cfg`` will have
    (:func:`recorded_fingerprint_diff`). A complete job is skipped only then, so an edited config,
    other weights in the model folder or changed data never reuse old results."""
    return recorded_fingerprint_diff(job_dir, cfg) == []
