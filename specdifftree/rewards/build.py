"""Build a reward from its config and guard it.

Config (``specdifftree/conf/reward/<name>.yaml``)::

    name: spectral                      # the reward's name in results (column ``reward_<name>``)
    _target_: specdifftree.rewards.spectral.SpectralReward
    gamma: 1.0                          # ... any further keys go to the target
    invalid_penalty: 0.0                # taken by SafeReward (optional)
    failure_reward: -1000.0             # taken by SafeReward (optional)

``_target_`` is a dotted path to

- a class: instantiated with the other keys (``name``, ``invalid_penalty``, ``failure_reward``
  excluded);
- a function ``f(forecasts, texts, valid, context, **kw)``: bound with ``functools.partial`` of
  the other keys;
- any other callable object (then no other keys are allowed).

The result is wrapped in :class:`SafeReward`:

- the final reward is ``r − invalid_penalty · (1 − valid)`` (``valid`` = share of values parsed);
- the failure rule (:mod:`specdifftree.rewards.base`): a call that raises (anything but the
  project's own :class:`SpecDiffTreeError`, e.g. the :class:`ConfigError` an oracle reward raises
  on a task without truth) or returns the wrong number of values gives every row
  ``failure_reward``; a NaN/±inf value gives that row ``failure_reward``. :meth:`SafeReward.score`
  returns them flagged in a :class:`RewardBatch` (the caller counts them per sample, see
  :class:`RewardDiagnostics`); each kind is reported once per run with ``logging.warning``; the
  run goes on.

Oracle rewards (``oracle = True`` on the object or function) must have ``"oracle"`` in their name.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import logging
import math
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import ConfigError, SpecDiffTreeError
from .base import DEFAULT_FAILURE_REWARD, RewardBatch, RewardContext, describe_error

log = logging.getLogger("specdifftree.rewards")

def builtin_rewards() -> dict[str, str]:
    """Built-in reward name -> class path, read from the shipped reward configs
    (``specdifftree/conf/reward/*.yaml``: the file name and its ``name``, e.g. ``caption_similarity``
    and ``oracle_caption_similarity``): usable as composite components or spectral ``task``
    without a ``_target_``."""
    from omegaconf import OmegaConf

    from ..config import conf_dir

    out: dict[str, str] = {}
    for path in sorted((conf_dir() / "reward").glob("*.yaml")):
        cfg = OmegaConf.load(path)
        if cfg.get("_target_"):
            out[path.stem] = str(cfg._target_)
            out.setdefault(str(cfg.get("name") or path.stem), str(cfg._target_))
    return out


SAFE_KEYS = ("invalid_penalty", "failure_reward")
NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


class SafeReward:
    """A reward that applies the failure rule (:mod:`specdifftree.rewards.base`): :meth:`score`
    returns a :class:`RewardBatch` (finite values, failed flags, the error); calling it returns
    the values alone. See the module docstring."""

    def __init__(self, fn, name: str, oracle: bool = False, invalid_penalty: float = 0.0,
                 failure_reward: float = DEFAULT_FAILURE_REWARD):
        for key, val in (("invalid_penalty", invalid_penalty), ("failure_reward", failure_reward)):
            if isinstance(val, bool) or not isinstance(val, (int, float)) or not math.isfinite(val):
                raise ConfigError(f"reward.{key}={val!r} must be a finite number")
        self.fn = fn
        self.name = name
        self.oracle = bool(oracle)
        self.invalid_penalty = float(invalid_penalty)
        self.failure_reward = float(failure_reward)
        self._warned: set[str] = set()

    def _warn_once(self, kind: str, msg: str, *args) -> None:
        if kind not in self._warned:
            self._warned.add(kind)
            log.warning(msg + " (reported once; further cases are counted in the results as "
                        "reward_failures / reward_nonfinite_values)", *args)

    def score(self, forecasts, texts, valid, context: RewardContext) -> RewardBatch:
        """The rewards of one batch after the failure rule, with what failed and why."""
        texts = list(texts)
        b = len(texts)
        v = np.clip(np.nan_to_num(np.asarray(valid, dtype=np.float64).reshape(-1), nan=0.0), 0.0, 1.0)
        if v.shape[0] != b:
            raise ValueError(f"valid has {v.shape[0]} entries for {b} texts")
        f = np.asarray(forecasts, dtype=np.float64)
        if f.ndim == 1:
            f = f.reshape(b, -1) if b else f.reshape(0, 0)
        if b == 0:
            return RewardBatch(np.zeros(0), np.zeros(0, dtype=bool))
        try:
            with np.errstate(all="ignore"):  # non-finite results are handled below
                out = np.asarray(self.fn(f, texts, v, context), dtype=np.float64)
            if out.ndim > 1:
                out = out.reshape(-1)
            if out.shape != (b,):
                raise ValueError(f"returned shape {out.shape} for a batch of {b}")
        except SpecDiffTreeError:
            raise
        except (Exception, SystemExit) as e:  # a misbehaving reward must not end the run
            self._warn_once("failure", "reward %s raised %s: %s; its %d values were set to "
                            "failure_reward=%g", self.name, type(e).__name__, e, b,
                            self.failure_reward)
            batch = RewardBatch.failure(b, describe_error(e), self.failure_reward)
        else:
            batch = RewardBatch.of(out, self.failure_reward)
            if batch.nonfinite:
                self._warn_once("nonfinite", "reward %s returned %d non-finite value(s) "
                                "(NaN/inf); set to failure_reward=%g", self.name, batch.nonfinite,
                                self.failure_reward)
        if self.invalid_penalty:
            batch = batch.shifted(-self.invalid_penalty * (1.0 - v))
        return batch

    def __call__(self, forecasts, texts, valid, context: RewardContext) -> np.ndarray:
        return self.score(forecasts, texts, valid, context).values

    def __repr__(self) -> str:
        return f"SafeReward({self.name!r}, oracle={self.oracle}, fn={self.fn!r})"


def _plain(cfg) -> dict:
    try:
        from omegaconf import DictConfig, OmegaConf
        if isinstance(cfg, DictConfig):
            cfg = OmegaConf.to_container(cfg, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        pass
    if isinstance(cfg, str):
        return {"name": cfg}
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"reward config must be a mapping with _target_ and name, got {cfg!r}")
    return dict(cfg)


def import_target(target: str, name: str) -> Any:
    """The object at dotted path ``target`` ("pkg.module.attr")."""
    if not isinstance(target, str) or "." not in target:
        raise ConfigError(f"reward {name}: _target_={target!r} must be a dotted path "
                          "'module.attribute' (e.g. my_module.my_reward)")
    mod_name, attr = target.rsplit(".", 1)
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as e:
        raise ConfigError(f"reward {name}: cannot import module {mod_name!r} of "
                          f"_target_={target} ({e}); put it on PYTHONPATH") from e
    except SyntaxError as e:
        raise ConfigError(f"reward {name}: module {mod_name!r} has a syntax error "
                          f"({e.filename}, line {e.lineno}: {e.msg}); fix it") from None
    except (Exception, SystemExit) as e:  # noqa: BLE001 - the module's own code failed on import
        raise ConfigError(f"reward {name}: importing module {mod_name!r} raised "
                          f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    try:
        return getattr(mod, attr)
    except AttributeError:
        raise ConfigError(f"reward {name}: module {mod_name!r} has no attribute {attr!r} "
                          f"(_target_={target})") from None


def _instantiate(obj, kwargs: dict, name: str, target: str):
    if inspect.isclass(obj):
        try:
            inspect.signature(obj).bind(**kwargs)
        except TypeError as e:
            raise ConfigError(f"reward {name}: {target} does not accept the config keys "
                              f"{sorted(kwargs)} ({e})") from None
        except ValueError:  # no signature available
            pass
        return obj(**kwargs)
    if not callable(obj):
        raise ConfigError(f"reward {name}: _target_={target} is not callable")
    if inspect.isfunction(obj) or inspect.ismethod(obj):
        try:
            sig = inspect.signature(obj)
            sig.bind_partial(None, None, None, None, **kwargs)
        except TypeError as e:
            raise ConfigError(f"reward {name}: {target} must take (forecasts, texts, valid, "
                              f"context) plus the config keys {sorted(kwargs)} ({e})") from None
        return functools.partial(obj, **kwargs) if kwargs else obj
    if kwargs:
        raise ConfigError(f"reward {name}: _target_={target} is a callable object; it takes no "
                          f"config keys (got {sorted(kwargs)})")
    return obj


def build_reward(reward_cfg) -> SafeReward:
    """A :class:`SafeReward` from a reward config (see the module docstring)."""
    return _build(reward_cfg, component=False)


def _build(reward_cfg, component: bool) -> SafeReward:
    cfg = _plain(reward_cfg)
    name = cfg.pop("name", None)
    target = cfg.pop("_target_", None)
    if target is None:
        builtins = builtin_rewards()
        if name in builtins:
            target = builtins[name]
        else:
            raise ConfigError(f"reward {name!r} has no _target_; set reward._target_=module.callable "
                              f"or use a built-in reward ({', '.join(sorted(builtins))})")
    if name is None:
        name = str(target).rsplit(".", 1)[-1].lower()
    if not isinstance(name, str) or not NAME.match(name):
        raise ConfigError(f"reward.name={name!r} must be an identifier (letters, digits, _)")
    safe_kw = {k: cfg.pop(k) for k in SAFE_KEYS if k in cfg}
    obj = import_target(target, name)
    fn = _instantiate(obj, cfg, name, target)
    oracle = bool(getattr(fn, "oracle", False) or getattr(obj, "oracle", False))
    if oracle and "oracle" not in name.lower():
        if component:  # the enclosing reward's own name is checked
            name = f"oracle_{name}"
        else:
            raise ConfigError(f"reward {name!r} reads the held-out truth or reference (an "
                              f"oracle reward); its name must say so: set reward.name=oracle_{name}")
    if hasattr(fn, "__dict__") and not inspect.isfunction(fn):
        try:
            fn.name = name
        except AttributeError:
            pass
    return SafeReward(fn, name=name, oracle=oracle, **safe_kw)


def build_component(key: str, spec) -> SafeReward:
    """A reward used inside another (composite component, spectral ``task``).

    ``spec`` is a built-in name, or a mapping with either ``_target_`` or ``type`` (a built-in
    name; defaults to ``key``) plus its keys. Its name defaults to ``key``.
    """
    if isinstance(spec, str):
        spec = {"type": spec}
    spec = {} if spec is None else _plain(spec)
    kind = spec.pop("type", None)
    if "_target_" not in spec:
        kind = kind or spec.get("name") or key
        builtins = builtin_rewards()
        if kind not in builtins:
            raise ConfigError(f"reward component {key!r}: unknown built-in reward {kind!r}; give "
                              f"_target_ or type: one of {', '.join(sorted(builtins))}")
        spec["_target_"] = builtins[kind]
    spec.setdefault("name", key)
    return _build(spec, component=True)
