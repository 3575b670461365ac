"""Every command in README.md and docs/*.md is checked by a test.

A command block is a fenced ```bash/```sh block, or an untyped ``` block with a line that starts
with a command (``specdifftree``, ``python``, ``make``, ``pip``, ``wandb``). The line before each
one is a marker:

* ``<!-- test -->``: the block runs, offline, as a user would type it: bash with ``set -e``, the
  venv's ``bin`` first on PATH, in a fresh folder that has the checkout's Makefile and .venv, so
  ``make run``/``make report`` and relative output paths work unchanged. A ```python block marked
  ``<!-- test -->`` whose first line is ``# <name>.py`` (or ``# <folder>/<name>.py``) is a file: it is written into that folder
  (which is on PYTHONPATH) for the later blocks of the same document.
* ``<!-- check: <reason> -->``: the block is not run in full (the reason says why: hours of
  compute, network, a GPU, files of one's own); each of its commands is checked instead:
  ``specdifftree``/``python -m specdifftree`` lines compose every job of the command (a
  ``--multirun`` is expanded into its jobs, presets' sweeps included) and validate its values, and
  the real CLI prints the (first) job's config with ``--cfg job``; ``python experiments/<x>.py``
  lines must parse with the script's ``build_parser()``; ``python -m specdifftree.report`` lines
  must get past the report's argument parser; ``make`` lines must be known targets
  (``make -n``); ``pip install`` lines may only name extras that pyproject.toml defines;
  ``wandb`` lines may only use flags of the pinned wandb. Placeholders (``<sweep dir>``,
  ``/path/to/m4``, ``/models/...``, ``...``) appear only in ``check`` blocks.
"""

import importlib.util
import itertools
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import REPO

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
BIN = Path(sys.executable).parent
FENCE = re.compile(r"^(`{3,})[ \t]*([\w+-]*)[ \t]*$")
MARKER = re.compile(r"^<!--\s*(test|check)\b(?::\s*(.*?))?\s*-->$")
COMMAND_LINE = re.compile(r"^\s*(?:nice\s+)?(?:specdifftree|python3?|\S*/python3?|make|pip|wandb)"
                          r"(?:\s|$)")
SHELL_LANGS = {"bash", "sh", "shell", "console"}
PLACEHOLDER = re.compile(r"<[A-Za-z][^<>\n]*>|(?<![\w/])/?path/to/|/models/|(?:^|\s)\.\.\.(?:\s|$)")
FILE_BLOCK = re.compile(r"^#\s*((?:\w+/)*\w+\.py)\b")


@dataclass
class Block:
    doc: str          # path relative to the repository
    line: int         # the opening fence's line (1-based)
    lang: str
    body: str
    marker: str | None    # "test", "check" or None
    reason: str

    @property
    def name(self) -> str:
        return f"{self.doc}:{self.line}"

    @property
    def is_command(self) -> bool:
        if self.lang in SHELL_LANGS:
            return True
        return self.lang == "" and any(COMMAND_LINE.match(ln) for ln in self.body.splitlines())


def parse_blocks(text: str, doc: str) -> tuple[list[Block], list[str]]:
    """The fenced blocks of a markdown text with their markers, and the problems found
    (a marker that is not right before a fence, a check marker without a reason)."""
    lines = text.split("\n")
    blocks, problems, i = [], [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            mk = MARKER.match(lines[i].strip())
            if mk and not (i + 1 < len(lines) and FENCE.match(lines[i + 1])):
                problems.append(f"{doc}:{i + 1}: {lines[i].strip()} is not on the line before a ``` block")
            i += 1
            continue
        end = i + 1
        while end < len(lines) and not lines[end].startswith(m.group(1)):
            end += 1
        mk = MARKER.match(lines[i - 1].strip()) if i else None
        b = Block(doc, i + 1, m.group(2), "\n".join(lines[i + 1:end]) + "\n",
                  mk.group(1) if mk else None, (mk.group(2) or "") if mk else "")
        if b.marker == "check" and not b.reason:
            problems.append(f"{b.name}: <!-- check: ... --> needs a reason (why it is not run in full)")
        blocks.append(b)
        i = end + 1
    return blocks, problems


def all_blocks() -> list[Block]:
    out = []
    for path in DOCS:
        out += parse_blocks(path.read_text(), str(path.relative_to(REPO)))[0]
    return out


BLOCKS = all_blocks()
TEST_BLOCKS = [b for b in BLOCKS if b.marker == "test" and b.lang in ("bash", "sh")]
CHECK_BLOCKS = [b for b in BLOCKS if b.marker == "check"]


def unmarked(text: str, doc: str) -> list[str]:
    blocks, problems = parse_blocks(text, doc)
    problems += [f"{b.name}: a command block without <!-- test --> or <!-- check: <reason> -->"
                 for b in blocks if b.is_command and b.marker is None]
    problems += [f"{b.name}: a <!-- test --> ```{b.lang} block that is neither bash nor a "
                 "'# <name>.py' python file" for b in blocks if b.marker == "test"
                 and b.lang not in ("bash", "sh")
                 and not (b.lang == "python" and FILE_BLOCK.match(b.body))]
    problems += [f"{b.name}: a marker on a block that holds no command" for b in blocks
                 if b.marker and not b.is_command and not (b.lang == "python" and b.marker == "test")]
    return problems


def test_every_command_block_is_marked():
    problems = []
    for path in DOCS:
        problems += unmarked(path.read_text(), str(path.relative_to(REPO)))
    assert not problems, "\n".join(problems)
    assert len(TEST_BLOCKS) >= 5 and len(CHECK_BLOCKS) >= 15


def test_the_marker_check_finds_unmarked_and_misplaced_blocks():
    text = ("```bash\nspecdifftree seed=1\n```\n\n```\nmake test\n```\n\n```\nspecdifftree/conf/ x\n```\n"
            "<!-- check -->\n```bash\nmake bench\n```\n<!-- test -->\n\n```bash\nmake run\n```\n")
    problems = unmarked(text, "x.md")
    assert [p.split(":")[1] for p in problems] == ["13", "16", "1", "5", "18"], problems


def test_the_docs_have_runnable_blocks():
    assert any(b.doc == "README.md" for b in TEST_BLOCKS)


def test_test_blocks_hold_no_placeholders():
    for b in TEST_BLOCKS:
        assert not PLACEHOLDER.search(b.body), f"{b.name}: a placeholder in a runnable block"


def _env(work: Path) -> dict:
    env = dict(os.environ, PATH=str(BIN) + os.pathsep + os.environ.get("PATH", ""),
               WANDB_MODE="offline", PYTHONPATH=os.pathsep.join([str(work), str(REPO)]))
    env.pop("WANDB_API_KEY", None)
    return env


def _workdir(tmp_path: Path) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    for item in ("Makefile", ".venv"):
        os.symlink(REPO / item, work / item)
    return work


@pytest.mark.parametrize("block", TEST_BLOCKS, ids=[b.name for b in TEST_BLOCKS])
def test_documented_commands_run(tmp_path, block):
    work = _workdir(tmp_path)
    for b in BLOCKS:  # '# <name>.py' files shown earlier in the same document
        m = FILE_BLOCK.match(b.body)
        if m and b.doc == block.doc and b.line < block.line and b.marker == "test" \
                and b.lang == "python":
            (work / m.group(1)).parent.mkdir(parents=True, exist_ok=True)
            (work / m.group(1)).write_text(b.body)
    out = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", block.body], cwd=work,
                         env=_env(work), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, f"{block.name}:\n{block.body}\n--- stdout\n{out.stdout[-3000:]}\n" \
                                f"--- stderr\n{out.stderr[-3000:]}"
    if "wandb sync --dry-run" in block.body:  # the documented path really names the offline run
        assert "Would sync 1 run" in out.stdout + out.stderr, out.stdout + out.stderr


# ---- check blocks: each command is checked without running it ----------------------------

def command_lines(body: str) -> list[list[str]]:
    """The commands of a block as argv lists: continuations joined, comments dropped,
    ``a && b`` split, placeholders ``<...>`` made one word."""
    text = re.sub(r"\\\n", " ", body)
    out = []
    for line in text.splitlines():
        line = re.sub(r"<[A-Za-z][^<>\n]*>", "placeholder", line)
        words = shlex.split(line, comments=True)
        cmd: list[str] = []
        for w in words + ["&&"]:
            if w in ("&&", "||", ";"):
                if cmd:
                    out.append(cmd)
                cmd = []
            else:
                cmd.append(w)
    return out


def _is_python(word: str) -> bool:
    return re.fullmatch(r"(?:\S*/)?python3?", word) is not None


def _run(argv: list[str], cwd: Path, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=cwd, env=_env(cwd), capture_output=True, text=True,
                          timeout=timeout)


def jobs_of(overrides: list[str], multirun: bool) -> list[list[str]]:
    """The override lists of the jobs a command launches: Hydra's basic sweeper's cartesian
    product of the comma lists, with the ``hydra.sweeper.params`` of presets (``+sweep=...``)
    for the keys the command line does not sweep."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from specdifftree.config import compose

    if not multirun:
        return [overrides]
    parser = OverridesParser.create()
    parsed = parser.parse_overrides(overrides)
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    sweeps = {o.get_key_element(): list(o.sweep_string_iterator())
              for o in parsed if o.is_sweep_override()}
    params = compose(fixed, return_hydra_config=True).hydra.sweeper.get("params") or {}
    for key, spec in params.items():
        if key not in sweeps and key not in [o.get_key_element() for o in parsed]:
            ov = parser.parse_overrides([f"{key}={spec}"])[0]
            sweeps[key] = list(ov.sweep_string_iterator()) if ov.is_sweep_override() else [str(spec)]
    return [fixed + [f"{k}={v}" for k, v in zip(sweeps, combo)]
            for combo in itertools.product(*sweeps.values())]


_COMPOSED: dict[tuple[str, ...], str | None] = {}  # job -> problem; blocks share sweeps


def compose_job(job: list[str]) -> str | None:
    """Compose one job as the CLI does (Hydra's compose API, the package's config) and validate
    its values and method settings; None or the problem in one line."""
    from hydra import compose as hydra_compose
    from omegaconf import open_dict

    from specdifftree.config import validate
    from specdifftree.runner import check_method_config

    if tuple(job) not in _COMPOSED:
        try:
            cfg = hydra_compose(config_name="config", overrides=job, return_hydra_config=True)
            with open_dict(cfg):
                cfg.pop("hydra")
            validate(cfg)
            check_method_config(cfg.method)
            _COMPOSED[tuple(job)] = None
        except Exception as exc:  # noqa: BLE001
            _COMPOSED[tuple(job)] = (f"job {job}: "
                                     f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
    return _COMPOSED[tuple(job)]


def check_specdifftree(args: list[str], work: Path) -> str | None:
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from specdifftree.config import conf_dir

    flags = [a for a in args if a.startswith("-")]
    overrides = [a for a in args if not a.startswith("-")]
    multirun = bool({"--multirun", "-m"} & set(flags))
    if set(flags) - {"--multirun", "-m"}:
        return f"flags {flags}: only --multirun is checked; show the command in a test block"
    try:
        jobs = jobs_of(overrides, multirun)
    except Exception as exc:  # noqa: BLE001 - the sweep itself does not parse/compose
        return f"the sweep does not compose: {str(exc).splitlines()[0]}"
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        problem = next((p for job in jobs if (p := compose_job(job))), None)
    GlobalHydra.instance().clear()
    if problem:
        return problem
    out = _run([str(BIN / "specdifftree"), *jobs[0], "--cfg", "job"], work)
    if out.returncode != 0:
        return f"specdifftree {' '.join(jobs[0])} --cfg job: exit {out.returncode}: {out.stderr[-800:]}"
    return None


def check_script(path: str, args: list[str]) -> str | None:
    script = REPO / path
    if not script.is_file():
        return f"{path}: no such script"
    spec = importlib.util.spec_from_file_location(f"_doc_{script.stem}", script)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while the script loads
    spec.loader.exec_module(mod)
    if not hasattr(mod, "build_parser"):
        return f"{path} has no build_parser()"
    args = ["placeholder" if a == "..." else a for a in args]
    parser = mod.build_parser()
    parser.allow_abbrev = False  # the documented flag must be the flag's full name
    try:
        parser.parse_args(args)
    except SystemExit as exc:
        return f"{path} rejects {args} (argparse exit {exc.code})"
    return None


def check_report(args: list[str], work: Path) -> str | None:
    """The report's own CLI on the documented arguments; the folder is the user's (here it
    does not exist), so the report must stop on the folder, not on its arguments."""
    out = _run([sys.executable, "-m", "specdifftree.report", *args], work)
    if out.returncode == 0 or "usage:" in out.stderr or not out.stderr.startswith("specdifftree: error:"):
        return f"python -m specdifftree.report {' '.join(args)}: {out.stderr[-500:]}"
    return None


def check_make(args: list[str], work: Path) -> str | None:
    out = _run(["make", "-n", *args], work)
    return None if out.returncode == 0 else f"make -n {' '.join(args)}: {out.stderr.strip()}"


def check_pip(args: list[str]) -> str | None:
    if args[:1] != ["install"]:
        return f"pip {' '.join(args)}: only pip install is checked"
    defined = set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
                  ["optional-dependencies"])
    for a in args[1:]:
        m = re.fullmatch(r"(?:\.|specdifftree)\[([\w,-]+)\]", a)
        if m and not set(m.group(1).split(",")) <= defined:
            return f"pip {' '.join(args)}: extras {sorted(set(m.group(1).split(',')) - defined)} " \
                   f"are not in pyproject.toml ({sorted(defined)})"
    return None


def check_wandb(args: list[str], work: Path) -> str | None:
    sub = [a for a in args if not a.startswith("-")][:1]
    out = _run([str(BIN / "wandb"), *sub, "--help"], work)
    if out.returncode != 0:
        return f"wandb {' '.join(sub)} --help: exit {out.returncode}"
    known = set(re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)", out.stdout))
    flags = {a.split("=")[0] for a in args if a.startswith("-")}
    return None if flags <= known else f"wandb {' '.join(args)}: unknown flags {sorted(flags - known)}"


def check_command(argv: list[str], work: Path) -> str | None:
    """None when the command checks out, else one line saying what is wrong."""
    if argv[:1] == ["nice"]:
        argv = argv[1:]
    if len(argv) > 4 and _is_python(argv[0]) and argv[1:5] == ["-m", "specdifftree.backend.mlx.blas", "exec", "--"]:
        out = _run([sys.executable, "-m", "specdifftree.backend.mlx.blas", "exec", "--", "true"], work)
        if out.returncode != 0:
            return f"python -m specdifftree.backend.mlx.blas exec -- true: exit {out.returncode}"
        argv = argv[5:]
    if argv[:1] == ["specdifftree"]:
        return check_specdifftree(argv[1:], work)
    if argv[:1] and _is_python(argv[0]):
        if argv[1:3] == ["-m", "specdifftree"]:
            return check_specdifftree(argv[3:], work)
        if argv[1:3] == ["-m", "specdifftree.report"]:
            return check_report(argv[3:], work)
        if argv[1:3] == ["-m", "pip"]:
            return check_pip(argv[3:])
        if len(argv) > 1 and argv[1].startswith("experiments/") and argv[1].endswith(".py"):
            return check_script(argv[1], argv[2:])
    if argv[:1] == ["make"]:
        return check_make(argv[1:], work)
    if argv[:1] == ["pip"]:
        return check_pip(argv[1:])
    if argv[:1] == ["wandb"]:
        return check_wandb(argv[1:], work)
    if argv[:1] == ["Rscript"]:  # an R script of the repository, run outside the test suite
        if len(argv) < 2 or not (REPO / argv[1]).is_file():
            return f"Rscript: no such script {argv[1:2]}"
        return None
    if argv[:2] == ["apt-get", "install"]:  # Debian packages: they must exist
        pkgs = [a for a in argv[2:] if not a.startswith("-")]
        if not pkgs:
            return "apt-get install names no package"
        if shutil.which("apt-cache"):
            for pkg in pkgs:
                if subprocess.run(["apt-cache", "show", pkg], capture_output=True).returncode:
                    return f"apt-get install: no Debian package {pkg}"
        return None
    return f"no check for {' '.join(argv)!r}: add one to tests/test_docs.py or run it in a test block"


@pytest.mark.parametrize("block", CHECK_BLOCKS, ids=[b.name for b in CHECK_BLOCKS])
def test_check_blocks_compose_and_parse(tmp_path, block):
    work = _workdir(tmp_path)
    cmds = command_lines(block.body)
    assert cmds, f"{block.name}: no command found"
    problems = [f"{' '.join(c)}\n    -> {p}" for c in cmds if (p := check_command(c, work))]
    assert not problems, f"{block.name} ({block.reason}):\n" + "\n".join(problems)


@pytest.mark.parametrize("line,expected", [
    ("specdifftree method=no_such_method", "no_such_method"),
    ("specdifftree --multirun method=greedy,no_such seed=0,1", "no_such"),
    ("specdifftree seed=-1", "seed=-1"),
    ("specdifftree method=greedy method.no_such_key=1", "no_such_key"),
    ("python -m specdifftree +sweep=smoke --multirun budget.token=5", "budget.token"),
    ("python experiments/bench_perf.py --shape llama-1b --no-such-flag", "rejects"),
    ("python -m specdifftree.backend.mlx.blas exec -- python experiments/bench_methods.py --serie 2", "rejects"),
    ("make no_such_target", "no_such_target"),
    ("pip install -e '.[test,no_such_extra]'", "no_such_extra"),
    ("python -m specdifftree.report a b", "report"),
    ("wandb sync --no-such-flag x", "--no-such-flag"),
    ("Rscript experiments/no_such_script.R", "no such script"),
    ("apt-get install -y", "names no package"),
    ("curl https://example.org", "no check"),
])
def test_the_command_checks_reject_wrong_commands(tmp_path, line, expected):
    work = _workdir(tmp_path)
    [argv] = command_lines(line)
    problem = check_command(argv, work)
    assert problem and expected in problem, problem


def test_a_multirun_is_checked_job_by_job():
    jobs = jobs_of(["+sweep=budget_scaling", "seed=0,1"], multirun=True)
    assert len(jobs) == 9 * 5 * 2
    assert ["+sweep=budget_scaling", "seed=1", "method=smc", "budget.tokens=16000"] == jobs[-1]


def test_documented_wandb_sync_flags_exist_in_the_pinned_wandb():
    """Every ``wandb sync`` flag the docs use is one that the installed wandb accepts."""
    wandb = shutil.which("wandb", path=str(BIN))
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
    files = (DOCS + sorted((REPO / "specdifftree" / "conf").rglob("*.yaml"))
             + sorted((REPO / "experiments").glob("*.py")) + sorted((REPO / "experiments").glob("*.R"))
             + sorted((REPO / "specdifftree" / "assets").rglob("*.md")))
    for path in files:
        text = path.read_text()
        assert "../shared" not in text, f"{path.name}: a path of the development layout"
        for note in ("Text for the README", "for the integrator", "to go into pyproject"):
            assert note not in text, f"{path.name}: {note!r}"
