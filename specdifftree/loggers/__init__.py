"""Experiment loggers: receive each results row as it is written, then the summary.

A logger is built from the ``logger`` config group by :func:`build_logger`; ``logger=none`` is
:class:`NullLogger`. Loggers must never stop a run: their errors are logged and swallowed.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


class NullLogger:
    def start(self, cfg, run_dir) -> None:
        pass

    def log_sample(self, row: dict) -> None:
        pass

    def log_summary(self, summary, run_dir) -> None:
        pass

    def finish(self) -> None:
        pass


def build_logger(logger_cfg):
    name = (logger_cfg or {}).get("name", "none") if logger_cfg is not None else "none"
    if name in (None, "none"):
        return NullLogger()
    target = logger_cfg.get("_target_")
    if not target:
        from ..errors import ConfigError

        raise ConfigError(f"logger={name}: logger._target_ is missing")
    from hydra.utils import get_class

    cls = get_class(str(target))
    return cls(**{k: v for k, v in logger_cfg.items() if k not in ("_target_", "name")})
