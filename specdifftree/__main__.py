"""``python -m specdifftree [overrides]`` — thin: compose config, run(cfg), print the summary."""

from __future__ import annotations

import logging
import sys

_HYDRA_FLAGS_WITHOUT_RUN = {"--help", "-h", "--hydra-help", "--info", "-i", "--cfg", "-c",
                            "--shell-completion", "-sc", "--version"}


def _fail(msg: str, code: int = 2) -> None:
    print(f"specdifftree: error: {msg}", file=sys.stderr)
    sys.exit(code)


def _hydra_message(exc: Exception, overrides: list[str]) -> str:
    """One line for a Hydra composition error: unknown keys get the closest key and the ``+``."""
    import difflib
    import re

    from hydra.errors import MissingConfigException

    from hydra.errors import OverrideParseException

    if isinstance(exc, OverrideParseException):
        return _grammar_message(exc, overrides)
    shape = _shape_message(overrides)
    if shape:
        return shape
    text = str(exc)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    m = re.search(r"Ambiguous value for argument '([^'=]+)=([^']*)'", text)
    if m:
        key, value = m.group(1), m.group(2)
        return (f"{key}={value} has several values: to sweep over them add --multirun; for a "
                f"list write {key}=[{value}]; for a string quote it: {key}='{value}'")
    if isinstance(exc, MissingConfigException):
        m = re.search(r"Could not find '([^']+)/([^'/]*)'", text)
        opts = [ln for ln in lines if ln and not ln.startswith(("In ", "Config search", "provider=",
                                                                "Available", "Could not"))]
        if m:
            group, name = m.group(1), m.group(2)
            if not name:
                return f"{group}= names no option of '{group}'; choose one of {', '.join(opts)}"
            return (f"{group}={name} is not an option of '{group}'; choose one of "
                    f"{', '.join(opts)}")
        return lines[0] if lines else type(exc).__name__
    m = re.search(r"Could not override '([^']+)'", text)
    if m:
        key = m.group(1)
        method = next((o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0] == "method"), None)
        if key.startswith("method.") and not method:
            from .search.build import RENAMED

            if key.split(".", 1)[1] in RENAMED:  # an old name (no method=: the default method)
                return RENAMED[key.split(".", 1)[1]]
        if key.startswith("method.") and method:
            searchpath = [o for o in overrides if o.split("=", 1)[0] == "hydra.searchpath"]
            value = next((o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0] == key), "...")
            return _method_key_message(key, method, searchpath, value)
        known = _known_keys()
        close = difflib.get_close_matches(key, known, n=1)
        value = next((o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0] == key), "...")
        hint = f"did you mean {close[0]}={value}? " if close else ""
        return (f"unknown key '{key}': {hint}to add a new key write +{key}={value}")
    hint = next((ln for ln in lines if ln.startswith("Key '")), "")
    first = lines[0] if lines else type(exc).__name__
    return f"{first}{' (' + hint + ')' if hint and hint != first else ''}"


def _method_key_message(key: str, method: str, searchpath: list[str] = (),
                        value: str = "...") -> str:
    """A ``method.<key>`` that the chosen method's config does not hold (e.g. one job of a sweep
    over ``method=``): name the method, the key and its settings (its constructor's arguments,
    :func:`specdifftree.search.build.check_keys`)."""
    from .config import compose
    from .errors import ConfigError
    from .search.build import RENAMED, check_keys, method_class, settings

    sub = key.split(".", 1)[1]
    try:
        cfg = compose([*searchpath, f"method={method}"])
        cls = method_class(cfg.method._target_, method)
    except Exception:  # noqa: BLE001 - the method itself does not compose: reported elsewhere
        return f"{key} is not a setting of method={method}"
    if sub in settings(cls):
        return (f"{key} is a setting of method={method} that its config does not list; "
                f"add it with +{key}={value}")
    try:
        check_keys(cls, method, [sub])
    except ConfigError as exc:
        if sub in RENAMED:
            return str(exc)
        return f"{exc} (sweep methods with different settings in separate runs)"
    return f"{key} is not a setting of method={method}"


def _shape_message(overrides: list[str]) -> str | None:
    """One line for an override without a key (``=5``, ``+=3``, ``~``), or None."""
    for o in overrides:
        key = o.split("=", 1)[0].lstrip("+~")
        if not key:
            if o.startswith("~"):
                return f"the override {o!r} names no key; write ~key to delete a key (e.g. ~logger)"
            return f"the override {o!r} has no key before '='; write key=value (e.g. seed=1)"
    return None


def _parse_reason(text: str) -> str:
    """The informative lines of a Hydra override-grammar error (no URL, no caret lines)."""
    keep = []
    for ln in (x.strip() for x in text.splitlines()):
        if not ln or ln.startswith(("See https://", "Error parsing override")) or set(ln) <= {"^"}:
            continue
        if ln.startswith("LexerNoViableAltException"):
            ln = "an unclosed quote or a character the grammar does not allow"
        keep.append(ln)
    return "; ".join(keep) or "not key=value"


def _grammar_message(exc: Exception, overrides: list[str]) -> str:
    """Name the override that does not parse (Hydra's override grammar)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    shape = _shape_message(overrides)
    if shape:
        return shape
    first = _parse_reason(str(exc)) if str(exc).strip() else type(exc).__name__
    for o in overrides:
        try:
            OverridesParser.create().parse_overrides([o])
        except Exception as e:  # noqa: BLE001
            reason = _parse_reason(str(e)) if str(e).strip() else first
            return (f"cannot parse the override {o!r} ({reason}); write key=value, quote "
                    "values with special characters ('key=\"a[b\"')")
    return first


def _known_keys() -> list[str]:
    from omegaconf import OmegaConf

    from .config import compose
    from .rundir import flatten

    try:
        return sorted(flatten(OmegaConf.to_container(compose([]), resolve=False)))
    except Exception:  # noqa: BLE001
        return []


def _compose_checked(overrides: list[str], check_dir: str | None = None, values: bool = True):
    """Compose (and with ``values`` validate) one job's overrides; one line + exit 2 on any
    problem. In a sweep a bad value fails only its job (the others run); a config that does not
    compose stops the whole sweep, as Hydra would, but with one line."""
    from hydra.errors import HydraException

    from .config import compose, validate
    from .errors import SpecDiffTreeError

    try:
        cfg = compose(overrides, return_hydra_config=True)
    except HydraException as exc:
        _fail(_hydra_message(exc, overrides))
    except Exception as exc:  # noqa: BLE001 - e.g. override grammar errors
        _fail(_grammar_message(exc, overrides))
    from omegaconf import OmegaConf, open_dict

    target = OmegaConf.select(cfg, check_dir) if check_dir else None
    with open_dict(cfg):
        cfg.pop("hydra", None)  # resolved by Hydra itself at launch
    try:
        if "method" in cfg and cfg.method.get("_target_"):
            from .runner import check_method_config

            check_method_config(cfg.method)
        if values:
            validate(cfg)
        if target:
            _check_dir(str(target))
    except SpecDiffTreeError as exc:
        _fail(str(exc), exc.exit_code)
    return cfg


def _check_dir(path: str) -> None:
    """The run/sweep dir must be creatable and writable: checked without creating it (its name
    may hold the time, which Hydra resolves again)."""
    import errno
    import os
    from pathlib import Path

    from .rundir import RunDirError, describe_oserror

    p = Path(path).expanduser().absolute()
    try:
        if p.exists() and not p.is_dir():
            raise OSError(errno.EEXIST, "exists")
        anc = p
        while not anc.exists():
            anc = anc.parent
        if not anc.is_dir():
            raise OSError(errno.ENOTDIR, "not a directory")
        probe = anc / f".sdt-write-test-{os.getpid()}"
        with open(probe, "wb") as fh:
            fh.write(b"ok")
        probe.unlink()
    except OSError as exc:
        raise RunDirError(describe_oserror(exc, p)) from None


def _precheck(argv: list[str]) -> None:
    """Compose and validate the config before Hydra starts, so a bad value is one line + exit 2."""
    overrides = [a for a in argv if not a.startswith("-")]
    _compose_checked(overrides, "hydra.run.dir")


def _precheck_multirun(argv: list[str]) -> None:
    """Every value of every swept key composes and validates (each against the others' first
    values), and the sweep dir is writable; one line + exit 2 otherwise."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from .config import compose

    overrides = [a for a in argv if not a.startswith("-")]
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception as exc:  # noqa: BLE001 - grammar errors
        _fail(_grammar_message(exc, overrides))
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    sweeps = {o.get_key_element(): list(o.sweep_string_iterator())
              for o in parsed if o.is_sweep_override()}
    base = _compose_checked(fixed + [f"{k}={v[0]}" for k, v in sweeps.items()],
                            "hydra.sweep.dir", values=False)
    del base
    try:  # presets (+sweep=...) sweep their own hydra.sweeper.params
        params = compose(fixed, return_hydra_config=True).hydra.sweeper.get("params") or {}
    except Exception:  # noqa: BLE001 - reported above
        params = {}
    for key, spec in params.items():
        if key in sweeps or key.lstrip("+") in sweeps:
            continue
        try:
            ov = OverridesParser.create().parse_overrides([f"{key}={spec}"])[0]
            sweeps[key] = list(ov.sweep_string_iterator()) if ov.is_sweep_override() else [str(spec)]
        except Exception:  # noqa: BLE001
            continue
    firsts = {k: v[0] for k, v in sweeps.items()}
    for key, values in sweeps.items():
        for v in values[1:]:
            others = [f"{k}={x}" for k, x in firsts.items() if k != key]
            _compose_checked(fixed + others + [f"{key}={v}"], values=False)


def _force_method_settings(argv: list[str]) -> list[str]:
    """With ``method=`` swept, write ``method.<key>=v`` as ``++method.<key>=v``.

    Hydra composes the sweep's launch config with the *default* method (a swept config group is
    left out of that composition), so a setting that every swept method has but the default one
    lacks (``method=best_of_n,sir method.answer=median``) would stop the sweep before its first
    job. Each job was already composed with the plain override and its keys checked against its
    method (:func:`_precheck_multirun`), so forcing the key changes no job's config."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides([a for a in argv if not a.startswith("-")])
    except Exception:  # noqa: BLE001 - reported by the precheck
        return argv
    if not any(o.get_key_element() == "method" and o.is_sweep_override() for o in parsed):
        return argv
    return [f"++{a}" if (not a.startswith(("-", "+", "~")) and a.split("=", 1)[0].startswith("method.")
                         and "=" in a) else a for a in argv]


def _interrupted(run_dir: str | None, multirun: bool) -> None:
    if multirun:
        where = (f"; run the same command with hydra.sweep.dir={run_dir} to resume" if run_dir
                 else "; run the same command with the same hydra.sweep.dir to resume")
    else:
        where = (f"; rows written so far are kept in {run_dir}: run the same command with "
                 f"hydra.run.dir={run_dir} to resume" if run_dir else "")
    print(f"specdifftree: interrupted{where}", file=sys.stderr)
    sys.exit(130)


def _in_multirun() -> bool:
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        return HydraConfig.get().mode == RunMode.MULTIRUN
    except Exception:  # noqa: BLE001 - not under Hydra
        return False


def _run(cfg, handle):
    """The CLI's job: run the experiment, then print its summary (a single run) or log its flags
    (a sweep job: the sweep's table comes at its end). Raises the run's failures; ``handle``
    (:class:`specdifftree.runner.RunHandle`) keeps what the run reported, e.g. its dir."""
    from .console import announce_runtime, write
    from .flags import summary_flags
    from .runner import run

    announce_runtime()
    df = run(cfg, handle=handle)
    run_dir = df.attrs.get("run_dir")
    if _in_multirun():  # one table for the whole sweep at its end (SweepTable)
        for line in summary_flags(run_dir):
            logging.getLogger("specdifftree").warning(line)
        return df
    sys.stderr.flush()
    if cfg.output.get("print_summary", True):
        from .report_table import summary_table

        write(summary_table(run_dir))
    for line in summary_flags(run_dir):
        write(f"warning: {line}", file=sys.stderr)
    write(f"run dir: {run_dir}")
    return df


def _fail_with(exc: Exception) -> None:
    """A run's failure as one line and its exit code (2 for a user error, 1 for a bug)."""
    from .errors import SpecDiffTreeError

    if isinstance(exc, SpecDiffTreeError):
        _fail(str(exc), exc.exit_code)
    logging.getLogger("specdifftree").debug("unexpected error", exc_info=exc)
    _fail(f"unexpected {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} "
          "(a bug: please report it with the command line; HYDRA_FULL_ERROR=1 shows the "
          "traceback)", 1)


def task_function(runs: list):
    """The function Hydra runs for each job. Each run's handle is appended to ``runs``: the run
    dir that :func:`main` names on Ctrl-C is the latest one claimed."""
    from .runner import RunHandle

    def task(cfg, handle=None):
        """The sweep's task wrapper (:class:`specdifftree.launcher.task.JobTask`) passes its
        ``handle`` and records a failure itself; otherwise (a single run, a job of another
        launcher) a failure ends the process with one line."""
        wrapped = handle is not None
        handle = handle if wrapped else RunHandle()
        runs.append(handle)
        if wrapped:
            return _run(cfg, handle)
        try:
            return _run(cfg, handle)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 - never a bare traceback; the log keeps it
            _fail_with(exc)

    return task


def main() -> None:
    from .backend.mlx.blas import ensure_fast_blas

    ensure_fast_blas()
    argv = sys.argv[1:]
    multirun = any(a in ("--multirun", "-m") for a in argv)
    informational = any(a.split("=")[0] in _HYDRA_FLAGS_WITHOUT_RUN for a in argv)
    if not informational:
        if multirun:
            _precheck_multirun(argv)
            sys.argv[1:] = argv = _force_method_settings(argv)
        else:
            _precheck(argv)

    import hydra

    from .config import conf_dir

    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    runs: list = []  # the RunHandle of each run of this process, latest last
    try:
        hydra.main(config_path=str(conf_dir()), config_name="config",
                   version_base="1.3")(task_function(runs))()
    except KeyboardInterrupt:
        d = next((h.run_dir for h in reversed(runs) if h.run_dir is not None), None)
        if multirun:  # a job's run dir is <sweep dir>/<job>
            _interrupted(str(d.parent) if d else None, True)
        _interrupted(str(d) if d else None, False)


if __name__ == "__main__":
    main()
