"""Build a reward callable from the ``reward`` config."""

from __future__ import annotations

import functools

from hydra.utils import get_object

from ..errors import ConfigError


def build_reward(cfg):
    target = cfg.get("_target_")
    if not target:
        raise ConfigError("reward._target_ is missing: name a reward class or function")
    try:
        obj = get_object(str(target))
    except Exception as exc:  # noqa: BLE001
        raise ConfigError(f"reward._target_={target!r} cannot be imported: {exc}") from exc
    kwargs = {k: v for k, v in cfg.items() if k not in ("_target_", "name")}
    if isinstance(obj, type):
        return obj(**kwargs)
    return functools.partial(obj, **kwargs) if kwargs else obj
