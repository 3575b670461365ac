"""What the command line prints: log records that never break a progress bar, bars only on a
terminal, the BLAS/device line once per process.

* :class:`ConsoleHandler` is the console handler of the Hydra logging configs
  (``conf/hydra/job_logging/specdifftree.yaml``, ``conf/hydra/hydra_logging/specdifftree.yaml``):
  each record is written with ``tqdm.write``, which clears the open bars, prints the record on its
  own line and draws the bars again below it.
* :func:`bars_enabled`: a bar is drawn only when asked for and stderr is a terminal (under
  SLURM/submitit or with output redirected to a file, no bar escape codes end up in the logs).
* :func:`announce_runtime`: the BLAS and device lines, logged once per process (a multirun's
  jobs share the process).
"""

from __future__ import annotations

import logging
import sys

_ANNOUNCED: dict = {}


class ConsoleHandler(logging.StreamHandler):
    """A StreamHandler whose records go through ``tqdm.write`` (bars cleared and redrawn)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = self.format(record)
            from tqdm import tqdm

            tqdm.write(msg, file=self.stream)
            self.flush()
        except RecursionError:  # pragma: no cover - as logging.StreamHandler
            raise
        except Exception:  # noqa: BLE001
            self.handleError(record)


def write(text: str, file=None) -> None:
    """Print ``text`` (any number of lines) without breaking an open progress bar."""
    from tqdm import tqdm

    stream = file if file is not None else sys.stdout
    for line in str(text).splitlines() or [""]:
        tqdm.write(line, file=stream)
    stream.flush()


def bars_enabled(requested: bool = True, stream=None) -> bool:
    """True when a progress bar was asked for and ``stream`` (default stderr) is a terminal."""
    stream = stream if stream is not None else sys.stderr
    try:
        return bool(requested) and bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or replaced streams
        return False


def announce_runtime(logger: logging.Logger | None = None, echo: bool = False) -> dict:
    """Log the BLAS in use and the MLX device, the first time only in this process.

    Returns ``{"blas": ..., "device": ...}``. With ``echo`` (the Python API, where logging is
    usually not configured) the line is also printed on stderr, once.
    """
    if _ANNOUNCED:
        return dict(_ANNOUNCED)
    from .backend.mlx.device import describe, log_device
    from .backend.mlx.blas import log_blas

    blas = log_blas()
    info = log_device()
    _ANNOUNCED.update(blas=blas, device=describe(info))
    if echo:
        print(f"specdifftree: BLAS: {blas}; {_ANNOUNCED['device']}", file=sys.stderr, flush=True)
    return dict(_ANNOUNCED)
