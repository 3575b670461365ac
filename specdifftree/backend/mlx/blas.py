"""Make MLX's CPU backend use a real BLAS on Linux.

The ``mlx[cpu]`` wheel links the reference BLAS, whose fp32 matmul is ~40x slower than
OpenBLAS. MLX resolves ``cblas_sgemm`` at load time, so preloading OpenBLAS
(``LD_PRELOAD``) makes every matmul use it. The preload has to be in place before the
process starts, so the entry points re-execute themselves once with it set.

Environment variables:
- ``SPECDIFFTREE_OPENBLAS``: path of the OpenBLAS shared library to preload.
- ``SPECDIFFTREE_NO_OPENBLAS=1``: opt out (keep the bundled reference BLAS).

Python API: ``import specdifftree`` calls :func:`preload`, which loads OpenBLAS into the running
process (``RTLD_GLOBAL``) before MLX is imported, so MLX binds its BLAS symbols to it as it would
with ``LD_PRELOAD``. When MLX was imported first, it warns once with the fix.

Command line: ``python -m specdifftree.backend.mlx.blas check`` reports what is found;
``python -m specdifftree.backend.mlx.blas exec -- CMD ...`` runs CMD with the preload set.
"""

from __future__ import annotations

import logging
import os
import sys

from ._blaslib import (_CANDIDATE_GLOBS, _REEXEC_MARK, OPT_OUT_ENV, PATH_ENV, blas_in_use,  # noqa: F401
                       find_openblas, is_linux, opted_out, preload, preloaded)

log = logging.getLogger(__name__)


def env_with_preload(env: dict[str, str] | None = None) -> dict[str, str]:
    """A copy of ``env`` with OpenBLAS added to LD_PRELOAD (unchanged when not applicable)."""
    env = dict(os.environ if env is None else env)
    if not is_linux() or env.get(OPT_OUT_ENV, "").strip().lower() in {"1", "true", "yes"}:
        return env
    if "openblas" in env.get("LD_PRELOAD", "").lower():
        return env
    lib = find_openblas()
    if lib:
        env["LD_PRELOAD"] = ":".join(p for p in (lib, env.get("LD_PRELOAD", "")) if p)
    return env


def ensure_fast_blas() -> None:
    """Re-execute the current process with OpenBLAS preloaded when that is needed and possible.

    Returns normally when nothing is to be done (not Linux, opted out, already preloaded, or no
    OpenBLAS found — the last is logged as a warning by :func:`log_blas`).
    """
    if not is_linux() or opted_out() or preloaded() or os.environ.get(_REEXEC_MARK):
        return
    lib = find_openblas()
    if not lib:
        return
    env = env_with_preload()
    env[_REEXEC_MARK] = "1"
    argv = list(getattr(sys, "orig_argv", [sys.executable] + sys.argv))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable] + argv[1:], env)


def log_blas() -> str:
    desc = blas_in_use()
    if desc.startswith("reference") and is_linux() and not opted_out():
        log.warning("BLAS: %s", desc)
    else:
        log.info("BLAS: %s", desc)
    return desc


def _main(argv: list[str]) -> int:
    if argv[:1] == ["exec"]:
        cmd = argv[1:]
        if cmd[:1] == ["--"]:
            cmd = cmd[1:]
        if not cmd:
            print("usage: python -m specdifftree.backend.mlx.blas exec -- CMD [ARGS...]", file=sys.stderr)
            return 2
        os.execvpe(cmd[0], cmd, env_with_preload())
    if argv[:1] in (["check"], []):
        if not is_linux():
            print(f"BLAS: {blas_in_use()}")
            return 0
        lib = find_openblas()
        if lib is None:
            print(
                "BLAS: no OpenBLAS found; MLX will use the slow reference BLAS. "
                "Install it (Debian/Ubuntu: apt-get install libopenblas0-pthread) "
                f"or set {PATH_ENV}=/path/to/libopenblas.so.0",
                file=sys.stderr,
            )
            return 1
        print(f"BLAS: OpenBLAS found at {lib}; entry points preload it ({OPT_OUT_ENV}=1 to opt out)")
        return 0
    print("usage: python -m specdifftree.backend.mlx.blas [check | exec -- CMD ...]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
