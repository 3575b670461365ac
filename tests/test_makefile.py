"""`make blas` / `make setup` on machines without root or sudo: one line about OpenBLAS, never an
abort. The Makefile runs for real; the system commands it asks about (uname, id, ldconfig, sudo,
apt-get) are small scripts on a PATH of their own, so every case runs on any machine."""

import os
import shutil
import subprocess
import textwrap

import pytest

from conftest import REPO

MAKE = shutil.which("make")
pytestmark = pytest.mark.skipif(MAKE is None, reason="make is not installed")


def _bin(tmp_path, uid="1000", openblas=False, sudo=None, apt_ok=True):
    """A PATH holding only the tools the blas target uses; apt-get and sudo record their calls."""
    b = tmp_path / "bin"
    b.mkdir()
    calls = tmp_path / "calls.txt"
    scripts = {
        "uname": "echo Linux",
        "id": f"echo {uid}",
        "ldconfig": ("echo '\tlibopenblas.so.0 (libc6,x86-64) => /usr/lib/libopenblas.so.0'"
                     if openblas else "echo '\tlibc.so.6 (libc6,x86-64) => /lib/libc.so.6'"),
        "apt-get": f'echo "apt-get $*" >> {calls}; exit {0 if apt_ok else 100}',
    }
    if sudo == "nopasswd":
        scripts["sudo"] = f'[ "$1" = -n ] && shift; echo "sudo $*" >> {calls}; "$@"'
    elif sudo == "password":  # sudo -n fails: a password would be needed
        scripts["sudo"] = f'echo "sudo $*" >> {calls}; exit 1'
    for name, body in scripts.items():
        p = b / name
        p.write_text("#!/bin/sh\n" + body + "\n")
        p.chmod(0o755)
    for tool in ("grep", "cat", "true", "mkdir", "ln"):
        src = shutil.which(tool)
        if src:
            os.symlink(src, b / tool)
    return str(b), calls


def _make(path, *args, cwd=REPO, extra_env=None):
    env = {"PATH": path, "HOME": os.environ.get("HOME", "/tmp")}
    env.update(extra_env or {})
    return subprocess.run([MAKE, "--no-print-directory", "-C", str(cwd), *args], env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("sudo", [None, "password"])
def test_no_root_no_sudo_prints_one_line_and_goes_on(tmp_path, sudo):
    path, calls = _bin(tmp_path, sudo=sudo)
    out = _make(path, "blas")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("OpenBLAS: not found, and no root or sudo")
    assert "libopenblas0-pthread" in lines[0] and "SPECDIFFTREE_OPENBLAS" in lines[0]
    assert "apt-get" not in (calls.read_text() if calls.exists() else "")


def test_root_installs_with_apt_get(tmp_path):
    path, calls = _bin(tmp_path, uid="0")
    out = _make(path, "blas")
    assert out.returncode == 0 and out.stdout == "", out.stdout + out.stderr
    assert calls.read_text().splitlines() == [
        "apt-get update -qq", "apt-get install -y -qq libopenblas0-pthread"]


def test_passwordless_sudo_installs(tmp_path):
    path, calls = _bin(tmp_path, sudo="nopasswd")
    out = _make(path, "blas")
    assert out.returncode == 0 and out.stdout == "", out.stdout + out.stderr
    assert "sudo apt-get install -y -qq libopenblas0-pthread" in calls.read_text()


def test_failed_apt_get_is_one_line_not_an_abort(tmp_path):
    path, _ = _bin(tmp_path, uid="0", apt_ok=False)
    out = _make(path, "blas")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [out.stdout.strip()]
    assert out.stdout.startswith("OpenBLAS: apt-get could not install it")


@pytest.mark.parametrize("how", ["ldconfig", "env"])
def test_present_openblas_needs_nothing(tmp_path, how):
    path, calls = _bin(tmp_path, openblas=how == "ldconfig")
    env = {"SPECDIFFTREE_OPENBLAS": "/opt/libopenblas.so.0"} if how == "env" else {}
    out = _make(path, "blas", extra_env=env)
    assert out.returncode == 0 and out.stdout == "" and not calls.exists()


def test_setup_finishes_when_the_blas_check_fails(tmp_path):
    """The whole setup recipe without root: the blas line, the Python install, and a failing
    `specdifftree.backend.mlx.blas check` (no OpenBLAS) that does not make `make setup` fail."""
    path, _ = _bin(tmp_path)
    venv = tmp_path / "venv"
    log = tmp_path / "python.log"
    fake_python = tmp_path / "python3"
    # stands in for the interpreter: `-m venv DIR` makes DIR/bin/python (this same script)
    fake_python.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        echo "$*" >> {log}
        if [ "$1 $2" = "-m venv" ]; then mkdir -p "$3/bin"; ln -sf {fake_python} "$3/bin/python"; fi
        if [ "$2" = "specdifftree.backend.mlx.blas" ]; then echo "BLAS: no OpenBLAS found" >&2; exit 1; fi
        exit 0
        """))
    fake_python.chmod(0o755)
    out = _make(path, "setup", f"PYTHON={fake_python}", f"VENV={venv}")
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.startswith("OpenBLAS: not found, and no root or sudo")
    ran = log.read_text().splitlines()
    assert ran[0] == f"-m venv {venv}" and any("install -q -e .[test]" in r for r in ran)
    assert ran[-1] == "-m specdifftree.backend.mlx.blas check"
