"""The BLAS-finding core of :mod:`specdifftree.backend.mlx.blas`, importable without it: the package's
``__init__`` calls :func:`preload` from here (``python -m specdifftree.backend.mlx.blas`` then runs
``blas`` fresh as ``__main__``)."""

from __future__ import annotations

import glob
import logging
import os
import platform
import subprocess
import sys

log = logging.getLogger("specdifftree.backend.mlx.blas")

OPT_OUT_ENV = "SPECDIFFTREE_NO_OPENBLAS"
PATH_ENV = "SPECDIFFTREE_OPENBLAS"
_REEXEC_MARK = "SPECDIFFTREE_BLAS_REEXEC"

_CANDIDATE_GLOBS = (
    "/usr/lib/*-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/*-linux-gnu/libopenblas.so.0",
    "/usr/lib64/libopenblas*.so.0",
    "/usr/lib/libopenblas.so.0",
)


def is_linux() -> bool:
    return platform.system() == "Linux"


def opted_out() -> bool:
    return os.environ.get(OPT_OUT_ENV, "").strip().lower() in {"1", "true", "yes"}


def find_openblas() -> str | None:
    """Path of an OpenBLAS shared library on this machine, or None."""
    explicit = os.environ.get(PATH_ENV)
    if explicit:
        return explicit if os.path.exists(explicit) else None
    for pattern in _CANDIDATE_GLOBS:
        hits = sorted(glob.glob(pattern))
        if hits:
            return hits[0]
    try:
        out = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.splitlines():
        if "libopenblas.so.0" in line and "=>" in line:
            return line.split("=>", 1)[1].strip()
    return None


def preloaded() -> bool:
    return "openblas" in os.environ.get("LD_PRELOAD", "").lower()


def blas_in_use() -> str:
    """Which BLAS this process has loaded, as a short human-readable string."""
    if platform.system() == "Darwin":
        return "Accelerate (macOS)"
    try:
        with open("/proc/self/maps") as fh:
            maps = fh.read()
    except OSError:
        return "unknown"
    for line in maps.splitlines():
        if "libopenblas" in line:
            return f"OpenBLAS ({line.split()[-1]})"
    if opted_out():
        return f"reference BLAS bundled with mlx-cpu ({OPT_OUT_ENV}=1)"
    return "reference BLAS bundled with mlx-cpu (slow: install OpenBLAS, see README)"


_PRELOAD_STATE: dict = {}


def preload() -> str:
    """Load OpenBLAS into this process for MLX (the Python API's counterpart of the entry points'
    re-execution). Returns what happened: ``"loaded"``, ``"already"`` (preloaded or loaded
    before), ``"too-late"`` (MLX was imported first: warned once), ``"not-found"``,
    ``"opted-out"`` or ``"not-linux"``. Safe to call any number of times."""
    if "state" in _PRELOAD_STATE:
        return _PRELOAD_STATE["state"]
    if not is_linux():
        state = "not-linux"
    elif opted_out():
        state = "opted-out"
    elif preloaded():
        state = "already"
    elif "mlx.core" in sys.modules:
        state = "already" if blas_in_use().startswith("OpenBLAS") else "too-late"
        if state == "too-late":
            import warnings

            warnings.warn("MLX was imported before specdifftree, so its matmuls use the slow "
                          "reference BLAS; import specdifftree first, or start Python as "
                          "`python -m specdifftree.backend.mlx.blas exec -- python ...`", stacklevel=3)
    else:
        lib = find_openblas()
        if lib is None:
            state = "not-found"
        else:
            import ctypes

            try:
                ctypes.CDLL(lib, mode=ctypes.RTLD_GLOBAL)
                state = "loaded"
            except OSError as exc:
                log.warning("BLAS: cannot load %s (%s)", lib, exc)
                state = "not-found"
    _PRELOAD_STATE["state"] = state
    return state
