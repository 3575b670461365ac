"""Composite reward: a weighted sum of other rewards.

    r = Σ_i w_i · r_i

Config::

    name: composite
    _target_: specdifftree.rewards.composite.CompositeReward
    components:
      spectral: {weight: 1.0, gamma: 1.0}      # key = a built-in reward name ...
      format: {weight: 0.5}
      smooth: {weight: 0.1, type: spectral, gamma: 4.0}   # ... or any key with `type:`
      mine: {weight: 1.0, _target_: my_module.my_reward, scale: 2.0}   # ... or a user reward

Each component is a mapping: ``weight`` (default 1.0), then either ``type`` (a built-in name;
defaults to the key) or ``_target_``, plus that reward's own keys. Each component is guarded by
its own SafeReward (a failing component gives its ``failure_reward`` times its weight). If any
component is an oracle, the composite is an oracle and its name must contain "oracle".
``last_breakdown`` holds the last call's per-component (unweighted) rewards.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from ..errors import ConfigError
from .base import BaseReward, RewardContext
from .build import build_component


class CompositeReward(BaseReward):
    name = "composite"

    def __init__(self, components):
        if not isinstance(components, Mapping) or not components:
            raise ConfigError("reward.components must be a non-empty mapping "
                              "{component_name: {weight: w, ...}}")
        self.parts: list[tuple[str, float, object]] = []
        for key, spec in components.items():
            if spec is None:
                spec = {}
            elif isinstance(spec, (int, float)) and not isinstance(spec, bool):
                spec = {"weight": spec}
            if not isinstance(spec, Mapping):
                raise ConfigError(f"reward.components.{key} must be a mapping with a weight")
            spec = dict(spec)
            w = spec.pop("weight", 1.0)
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w):
                raise ConfigError(f"reward.components.{key}.weight={w!r} must be a finite number")
            self.parts.append((str(key), float(w), build_component(str(key), spec)))
        self.oracle = any(getattr(r, "oracle", False) for _, _, r in self.parts)
        self.last_breakdown: dict[str, np.ndarray] = {}

    def __call__(self, forecasts, texts, valid, context: RewardContext) -> np.ndarray:
        total = np.zeros(len(texts))
        self.last_breakdown = {}
        for key, w, r in self.parts:
            ri = r(forecasts, texts, valid, context)
            self.last_breakdown[key] = ri
            if w:
                total = total + w * ri
        return total
