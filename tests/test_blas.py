"""The fast-BLAS preload must be in place on Linux; a silent fallback to reference BLAS fails."""

import os
import platform
import subprocess
import sys

import pytest

from specdifftree.backend.mlx import blas

linux_only = pytest.mark.skipif(platform.system() != "Linux", reason="the preload is Linux-only")


@linux_only
def test_openblas_is_installed():
    assert blas.find_openblas(), "no OpenBLAS found: `make setup` must install libopenblas0-pthread"


@linux_only
def test_entry_point_reexecs_with_openblas():
    code = ("import sys; sys.argv=['x']; from specdifftree.backend.mlx import blas; blas.ensure_fast_blas(); "
            "import mlx.core as mx; mx.eval(mx.ones((4,4)) @ mx.ones((4,4))); print(blas.blas_in_use())")
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", blas.OPT_OUT_ENV)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().startswith("OpenBLAS"), out.stdout


@linux_only
def test_opt_out_keeps_reference_blas():
    code = ("from specdifftree.backend.mlx import blas; blas.ensure_fast_blas(); import mlx.core as mx; "
            "print(blas.blas_in_use())")
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    env[blas.OPT_OUT_ENV] = "1"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "reference BLAS" in out.stdout and "SPECDIFFTREE_NO_OPENBLAS=1" in out.stdout


@linux_only
def test_this_test_process_runs_with_openblas():
    """`make test` runs pytest through `python -m specdifftree.backend.mlx.blas exec`."""
    import mlx.core as mx

    mx.eval(mx.ones((2, 2)) @ mx.ones((2, 2)))
    if os.environ.get(blas.OPT_OUT_ENV):
        pytest.skip("opted out")
    assert blas.blas_in_use().startswith("OpenBLAS"), blas.blas_in_use()
