"""The commands in README.md and docs/*.md that are marked runnable (an HTML comment
``<!-- test -->`` on the line before a ```bash block) run, offline, as a user would type them:
bash with ``set -e``, the venv's ``bin`` first on PATH, in a fresh folder that has the checkout's
Makefile and .venv, so ``make run``/``make report`` and relative output paths work unchanged."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

MARK = "<!-- test -->"
BLOCK = re.compile(r"^<!-- test -->\n```(?:bash|sh)\n(.*?)^```", re.M | re.S)
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def runnable_blocks() -> list[tuple[str, str]]:
    out = []
    for path in DOCS:
        text = path.read_text()
        blocks = BLOCK.findall(text)
        assert len(blocks) == text.count(MARK), f"{path.name}: a {MARK} not followed by a bash block"
        out += [(f"{path.relative_to(REPO)}#{i}", b) for i, b in enumerate(blocks)]
    return out


BLOCKS = runnable_blocks()


def test_the_docs_have_runnable_blocks():
    assert len(BLOCKS) >= 3 and any(n.startswith("README.md") for n, _ in BLOCKS)


@pytest.mark.parametrize("name,script", BLOCKS, ids=[n for n, _ in BLOCKS])
def test_documented_commands_run(tmp_path, name, script):
    work = tmp_path / "work"
    work.mkdir()
    for item in ("Makefile", ".venv"):
        os.symlink(REPO / item, work / item)
    bindir = str(Path(sys.executable).parent)
    env = dict(os.environ, PATH=bindir + os.pathsep + os.environ.get("PATH", ""),
               WANDB_MODE="offline", PYTHONPATH=str(REPO))
    env.pop("WANDB_API_KEY", None)
    out = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], cwd=work, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, f"{name}:\n{script}\n--- stdout\n{out.stdout[-3000:]}\n" \
                                f"--- stderr\n{out.stderr[-3000:]}"
    if "wandb sync --dry-run" in script:  # the documented path really names the offline run
        assert "Would sync 1 run" in out.stdout + out.stderr, out.stdout + out.stderr


def test_documented_wandb_sync_flags_exist_in_the_pinned_wandb():
    """Every ``wandb sync`` flag the docs use is one that the installed wandb accepts."""
    wandb = shutil.which("wandb", path=str(Path(sys.executable).parent))
    assert wandb, "wandb's command is installed with the package"
    help_ = subprocess.run([wandb, "sync", "--help"], capture_output=True, text=True, timeout=120)
    assert help_.returncode == 0, help_.stderr
    flags = set()
    for path in DOCS + [REPO / "specdifftree" / "loggers" / "wandb.py",
                        REPO / "specdifftree" / "conf" / "logger" / "wandb.yaml"]:
        for cmd in re.findall(r"wandb sync[^`\n]*", path.read_text()):
            flags |= set(re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)", cmd))
    assert "--dry-run" in flags  # the docs show the check before an upload
    known = set(re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)", help_.stdout))
    assert flags <= known, f"flags the pinned wandb does not know: {sorted(flags - known)}"


def test_docs_hold_no_development_paths_or_authoring_notes():
    files = DOCS + sorted((REPO / "specdifftree" / "conf").rglob("*.yaml"))
    for path in files:
        text = path.read_text()
        assert "../shared" not in text, f"{path.name}: a path of the development layout"
        for note in ("Text for the README", "for the integrator", "to go into pyproject"):
            assert note not in text, f"{path.name}: {note!r}"
