"""Config composition (Hydra compose API) and validation of user-supplied values."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

from omegaconf import DictConfig, OmegaConf

from .errors import ConfigError

CONF_DIR = Path(__file__).resolve().parent / "conf"


def rollouts_unless_tokens(rollouts, tokens):
    """``budget.rollouts``'s default (conf/config.yaml): ``rollouts`` while no token budget is set,
    None (no rollout limit: the token budget alone stops the search) once one is."""
    return rollouts if tokens is None else None


if not OmegaConf.has_resolver("rollouts_unless_tokens"):  # the config's one resolver
    OmegaConf.register_new_resolver("rollouts_unless_tokens", rollouts_unless_tokens)


def conf_dir() -> Path:
    """The package's Hydra config folder (``specdifftree/conf``, shipped in the wheel)."""
    if not (CONF_DIR / "config.yaml").exists():
        raise ConfigError(f"config folder {CONF_DIR} not found: the installation is incomplete; "
                          "reinstall the package (pip install specdifftree or make setup)")
    return CONF_DIR


def compose(overrides: Sequence[str] = (), config_name: str = "config",
            return_hydra_config: bool = False) -> DictConfig:
    """The same config tree as the CLI, for notebooks and tests: ``compose(["method=dts"])``."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=list(overrides),
                             return_hydra_config=return_hydra_config)


def _int_or_none(cfg, key: str, minimum: int, what: str) -> None:
    v = OmegaConf.select(cfg, key, default=None)
    if v is None:
        return
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise ConfigError(f"{key}={v!r}: must be an integer >= {minimum}{what}")


def _number(cfg, key: str, lo: float | None = None, hi: float | None = None,
            lo_open: bool = False, allow_none: bool = True) -> None:
    v = OmegaConf.select(cfg, key, default=None)
    if v is None:
        if allow_none:
            return
        raise ConfigError(f"{key} is missing")
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ConfigError(f"{key}={v!r}: must be a number")
    if not math.isfinite(v):
        raise ConfigError(f"{key}={v!r}: must be a finite number")
    if lo is not None and (v < lo or (lo_open and v == lo)):
        raise ConfigError(f"{key}={v!r}: must be {'>' if lo_open else '>='} {lo}")
    if hi is not None and v > hi:
        raise ConfigError(f"{key}={v!r}: must be <= {hi}")


def _kv_quantization(cfg) -> None:
    """backend.kv_bits / kv_group_size / quantized_kv_start: the values MLX's quantization takes."""
    bits = OmegaConf.select(cfg, "backend.kv_bits", default=None)
    if bits is not None and (isinstance(bits, bool) or bits not in (2, 3, 4, 5, 6, 8)):
        raise ConfigError(f"backend.kv_bits={bits!r}: must be 2, 3, 4, 5, 6 or 8 (bits per KV "
                          "entry) or null (no KV cache quantization)")
    group = OmegaConf.select(cfg, "backend.kv_group_size", default=64)
    if isinstance(group, bool) or group not in (32, 64, 128):
        raise ConfigError(f"backend.kv_group_size={group!r}: must be 32, 64 or 128")
    _int_or_none(cfg, "backend.quantized_kv_start", 0, " (positions before the cache is quantized)")


def _prompt_text_keys(cfg) -> None:
    chat = OmegaConf.select(cfg, "prompt.chat", default=None)
    if chat is not None and not isinstance(chat, bool):
        raise ConfigError(f"prompt.chat={chat!r}: must be true, false or null (on for instruct models)")
    instr = OmegaConf.select(cfg, "prompt.instruction", default=None)
    if instr is not None:
        if not isinstance(instr, str) or "{history}" not in instr:
            raise ConfigError(f"prompt.instruction={instr!r}: must be text containing {{history}} "
                              "(and optionally {horizon})")
        try:
            instr.format(history="", horizon=1)
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError(f"prompt.instruction: only {{history}} and {{horizon}} can be filled "
                              f"in ({type(exc).__name__}: {exc}); write literal braces as {{{{ }}}}") from exc


def validate(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` with one clear line for the first invalid value."""
    for group in ("method", "dataset", "model", "reward"):
        if OmegaConf.select(cfg, group) is None:
            raise ConfigError(f"config group '{group}' is missing")
    if not cfg.model.get("builtin") and OmegaConf.is_missing(cfg.model, "path"):
        raise ConfigError("model.path is missing: model=hf needs model.path=<local mlx-lm folder "
                          "or Hugging Face id>")
    try:
        OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except Exception as exc:  # noqa: BLE001 - omegaconf reports missing/interpolation errors
        msg = str(exc).splitlines()[0]
        key = getattr(exc, "full_key", None)
        raise ConfigError(f"{key + ': ' if key else ''}{msg}") from exc
    _int_or_none(cfg, "seed", 0, "")
    _int_or_none(cfg, "dataset.subset_seed", 0, " (it picks the series; seed drives sampling)")
    resume = OmegaConf.select(cfg, "resume", default=True)
    if not isinstance(resume, bool):
        raise ConfigError(f"resume={resume!r}: must be true (continue the run dir's results) or "
                          "false (start clean in a new dir)")
    check = OmegaConf.select(cfg, "max_new_tokens_check", default=True)
    if not isinstance(check, bool):
        raise ConfigError(f"max_new_tokens_check={check!r}: must be true (stop when "
                          "max_new_tokens cannot hold a forecast) or false (run anyway)")
    _int_or_none(cfg, "num_samples", 1, " or null (every series)")
    _int_or_none(cfg, "max_new_tokens", 1, " or null (derived from the horizon)")
    _int_or_none(cfg, "budget.rollouts", 1, " or null")
    _int_or_none(cfg, "budget.tokens", 1, " or null (unlimited)")
    _int_or_none(cfg, "dataset.context_length", 2, " or null (whole history)")
    _int_or_none(cfg, "prompt.decimals", 0, "")
    _number(cfg, "prompt.decimals", 0, 8)
    _number(cfg, "prompt.scale_quantile", 0, 1, lo_open=True)
    _number(cfg, "prompt.scale_target", 0, lo_open=True)
    _number(cfg, "backend.logprob_cache_mb", 0, lo_open=True)
    _number(cfg, "backend.kv_cache_mb", 0)
    _kv_quantization(cfg)
    sep = OmegaConf.select(cfg, "prompt.separator", default=", ")
    if not isinstance(sep, str) or not sep.strip() or any(c.isdigit() or c in ".-" for c in sep):
        raise ConfigError(f"prompt.separator={sep!r}: needs a non-space character and no digits, '.' or '-'")
    _prompt_text_keys(cfg)
    if not OmegaConf.select(cfg, "method._target_"):
        raise ConfigError("method._target_ is missing: pick a method with method=<name>")
    # the method's own settings are checked by its constructor (specdifftree.search.build)
