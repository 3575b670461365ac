"""``logger=wandb``: Weights & Biases logging (offline by default: no account, no network).

Per run: the resolved config, one history step per scored sample (its numeric fields, step =
``sample_index``), the summary (``summary.csv`` means in the run summary and as a table) and the
report figures (:mod:`specdifftree.report`, written into the run dir too). Jobs of a multirun are
grouped (group = the sweep dir, run name = the job's overrides). Files go under
``<run dir>/wandb/`` unless ``logger.dir`` is set; ``wandb sync <run dir>/wandb/offline-run-*``
uploads an offline run later.

The config records ``git_commit`` (the checkout's commit, ``+dirty`` with local changes; null
outside a git checkout) and ``package_version``. The W&B run id is derived from the run dir
(:func:`run_id`), with ``resume="allow"``: a job restarted in the same run dir (resume after a
crash, a SLURM requeue) continues the same W&B run instead of starting a new one.

W&B must never stop an experiment: any error is logged once as a warning and W&B is switched off
for the rest of the run.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

log = logging.getLogger(__name__)

# row fields that are not per-sample metrics
_NOT_METRICS = {"seed", "sample_index", "horizon", "period"}


def _scalar(v):
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, (int, float)):
        return v if (not isinstance(v, float) or math.isfinite(v)) else None
    try:
        import numpy as np

        if isinstance(v, (np.integer, np.floating, np.bool_)):
            return _scalar(v.item())
    except ImportError:  # pragma: no cover
        pass
    return None


def _hydra_names():
    """(group, name) for a multirun job, else (None, None)."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
        if hc.mode != RunMode.MULTIRUN:
            return None, None
        sweep = Path(str(hc.sweep.dir))
        group = "/".join(sweep.parts[-3:])[-128:]
        name = str(hc.job.override_dirname) or f"job{hc.job.num}"
        return group, name[:128]
    except Exception:  # noqa: BLE001 - not under Hydra
        return None, None


def run_id(run_dir) -> str:
    """The W&B run id of a run dir: stable across restarts in that dir, new for a new dir.

    A hash of the absolute run dir and the first start time recorded in its ``run.json`` (kept
    by every resume), so a deleted and recreated dir of the same name gets a new id."""
    import hashlib

    from ..rundir import read_run_file

    started = ((read_run_file(run_dir) or {}).get("provenance") or {}).get("started_at") or ""
    key = f"{Path(run_dir).expanduser().absolute()}|{started}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]


class WandbLogger:
    def __init__(self, project: str = "specdifftree-mlx", entity: str | None = None,
                 mode: str = "offline", group: str | None = None, run_name: str | None = None,
                 tags=(), notes: str | None = None, dir: str | None = None,
                 log_samples: bool = True, log_figures: bool = True, job_type: str | None = None):
        self.project, self.entity, self.mode = project, entity, mode
        self.group, self.name = group, run_name
        self.tags = [str(t) for t in (tags or [])]
        self.notes, self.dir, self.job_type = notes, dir, job_type
        self.log_samples, self.log_figures = bool(log_samples), bool(log_figures)
        self.run = None
        self.failed = False

    # -------------------------------------------------------------------------------- errors

    def _error(self, what: str, exc: BaseException) -> None:
        if not self.failed:
            log.warning("W&B %s failed (%s: %s); the run goes on without W&B", what,
                        type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
        self.failed = True
        run, self.run = self.run, None
        if run is not None and what != "finish":
            try:
                run.finish(exit_code=1)
            except Exception:  # noqa: BLE001
                pass

    # ----------------------------------------------------------------------------- protocol

    def start(self, cfg, run_dir) -> None:
        try:
            import wandb
            from omegaconf import OmegaConf

            group, name = _hydra_names()
            method = str(cfg.method.get("name", "")) if cfg.get("method") is not None else ""
            dataset = str(cfg.dataset.get("name", "")) if cfg.get("dataset") is not None else ""
            wdir = Path(self.dir) if self.dir else Path(run_dir)
            wdir.mkdir(parents=True, exist_ok=True)
            config = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else dict(cfg)
            config["run_dir"] = str(run_dir)
            from ..rundir import _git_commit, package_version

            config["git_commit"] = _git_commit()
            config["package_version"] = package_version()
            self.run = wandb.init(
                project=self.project, entity=self.entity, mode=self.mode, dir=str(wdir),
                group=self.group or group, name=self.name or name or f"{method}-{dataset}-s{cfg.get('seed')}",
                job_type=self.job_type or method or None, tags=self.tags or None, notes=self.notes,
                config=config, reinit="finish_previous", id=run_id(run_dir), resume="allow",
                settings=wandb.Settings(silent=True, console="off", x_disable_stats=True,
                                        disable_git=True, save_code=False))
        except Exception as exc:  # noqa: BLE001 - W&B never stops a run
            self._error("init", exc)

    def log_sample(self, row: dict) -> None:
        if self.run is None or not self.log_samples:
            return
        try:
            data = {}
            for k, v in row.items():
                if k in _NOT_METRICS:
                    continue
                s = _scalar(v)
                if s is not None:
                    data[f"sample/{k}"] = s
            step = row.get("sample_index")
            self.run.log(data, step=int(step) if isinstance(step, int) else None)
        except Exception as exc:  # noqa: BLE001
            self._error("log", exc)

    def log_summary(self, summary, run_dir) -> None:
        if self.run is None:
            return
        try:
            import wandb

            if summary is not None and len(summary):
                first = summary.iloc[0].to_dict()
                self.run.summary.update({k: s for k, v in first.items()
                                         if (s := _scalar(v)) is not None})
                self.run.log({"summary_table": wandb.Table(dataframe=summary.reset_index(drop=True))})
            if self.log_figures:
                from ..report import build_report

                res = build_report(run_dir)
                self.run.log({f"figures/{p.stem}": wandb.Image(str(p)) for p in res["figures"]})
        except Exception as exc:  # noqa: BLE001
            self._error("summary", exc)

    def finish(self) -> None:
        if self.run is None:
            return
        try:
            self.run.finish()
        except Exception as exc:  # noqa: BLE001
            self._error("finish", exc)
        finally:
            self.run = None
