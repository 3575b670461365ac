"""Objects built from a config node's ``_target_`` (Hydra's ``instantiate``): the class, the keys
it takes (its constructor's signature is the schema), the one-line error for a key it does not
take, and construction with the constructor's own error as that one line. Methods
(:mod:`specdifftree.search.build`), data sources and tasks (:mod:`specdifftree.tasks.build`) are
built through these."""

from __future__ import annotations

import difflib
import inspect
from typing import Any

from .errors import ConfigError


def import_target(target: Any, where: str, prefix: str = "") -> type:
    """The class named by ``<where>._target_``; one ConfigError line (``prefix`` first) when it
    cannot be imported."""
    from hydra.utils import get_class

    try:
        return get_class(str(target))
    except Exception as exc:  # noqa: BLE001 - Hydra wraps import errors in several types
        raise ConfigError(f"{prefix}{where}._target_={target!r} cannot be imported: "
                          f"{str(exc).splitlines()[0]}") from None


def settings(cls: type) -> list[str]:
    """The keyword arguments of ``cls.__init__``: the config keys it takes."""
    params = inspect.signature(cls.__init__).parameters.values()
    return [p.name for p in params if p.name != "self"
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def unknown_key(where: str, key: Any, owner: str, known: list[str], candidates=None) -> ConfigError:
    """The error for ``<where>.<key>``, which ``owner`` does not take: the closest of
    ``candidates`` (default ``known``) as a hint, and the list of ``known`` settings."""
    close = difflib.get_close_matches(str(key), list(known if candidates is None else candidates), n=1)
    hint = f"did you mean {where}.{close[0]}? " if close else ""
    return ConfigError(f"{where}.{key} is not a setting of {owner}; {hint}"
                       f"its settings: {', '.join(known) or 'none'}")


def construct(config: dict, where: str):
    """``instantiate(config)``; a constructor's error (Hydra wraps it) becomes one ConfigError
    line starting with ``where``, a ConfigError it raised stays as it is."""
    from hydra.utils import instantiate

    try:
        return instantiate(config, _convert_="all")
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - Hydra wraps the constructor's own error
        cause = exc.__cause__ or exc
        if isinstance(cause, ConfigError):
            raise cause from None
        raise ConfigError(f"{where}: {str(cause).splitlines()[0]}") from None
