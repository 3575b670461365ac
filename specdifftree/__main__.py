"""``python -m specdifftree [overrides]`` — thin: compose config, run(cfg), print the summary."""

from __future__ import annotations

import logging
import sys

_HYDRA_FLAGS_WITHOUT_RUN = {"--help", "-h", "--hydra-help", "--info", "-i", "--cfg", "-c",
                            "--shell-completion", "-sc", "--version"}


def _fail(msg: str, code: int = 2) -> None:
    print(f"specdifftree: error: {msg}", file=sys.stderr)
    sys.exit(code)


def _precheck(argv: list[str]) -> None:
    """Compose and validate the config before Hydra starts, so a bad value is one line + exit 2."""
    from hydra.errors import HydraException, MissingConfigException

    from .config import compose, validate
    from .errors import SpecDiffTreeError

    overrides = [a for a in argv if not a.startswith("-")]
    try:
        cfg = compose(overrides, return_hydra_config=True)
    except MissingConfigException as exc:  # wrong group option: Hydra's own message lists them
        print(str(exc), file=sys.stderr)
        sys.exit(2)
    except HydraException as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        hint = next((ln for ln in lines if ln.startswith("Key '")), "")
        first = lines[0] if lines else type(exc).__name__
        _fail(f"{first}{' (' + hint + ')' if hint and hint != first else ''}")
    except Exception as exc:  # noqa: BLE001 - e.g. override grammar errors
        _fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    from omegaconf import open_dict

    with open_dict(cfg):
        cfg.pop("hydra", None)  # resolved by Hydra itself at launch
    try:
        validate(cfg)
    except SpecDiffTreeError as exc:
        _fail(str(exc), exc.exit_code)


def _task(cfg) -> None:
    from .blas import log_blas
    from .errors import SpecDiffTreeError
    from .runner import run

    log_blas()
    try:
        df = run(cfg)
    except SpecDiffTreeError as exc:
        _fail(str(exc), exc.exit_code)
    run_dir = df.attrs.get("run_dir")
    if cfg.output.get("print_summary", True):
        from .report_table import summary_table

        print(summary_table(run_dir))
    print(f"run dir: {run_dir}")


def main() -> None:
    from .blas import ensure_fast_blas

    ensure_fast_blas()
    argv = sys.argv[1:]
    multirun = any(a in ("--multirun", "-m") for a in argv)
    if not multirun and not any(a.split("=")[0] in _HYDRA_FLAGS_WITHOUT_RUN for a in argv):
        _precheck(argv)

    import hydra

    from .config import conf_dir

    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    hydra.main(config_path=str(conf_dir()), config_name="config", version_base="1.3")(_task)()


if __name__ == "__main__":
    main()
