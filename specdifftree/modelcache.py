"""Process-wide cache of loaded models, keyed by their resolved config.

Jobs of a sweep that run in one process share a model: the first job loads it, later ones hit.
"""

from __future__ import annotations

import gc
import json

from omegaconf import OmegaConf

from .backend.loader import LoadedModel, load

_MODELS: dict[str, LoadedModel] = {}


def model_key(model_cfg) -> str:
    data = OmegaConf.to_container(model_cfg, resolve=True) if OmegaConf.is_config(model_cfg) else dict(model_cfg)
    return json.dumps(data, sort_keys=True, default=str)


def get_model(model_cfg) -> tuple[LoadedModel, bool]:
    """The model for ``model_cfg`` and whether it came from the cache."""
    key = model_key(model_cfg)
    if key in _MODELS:
        return _MODELS[key], True
    lm = load(model_cfg)
    _MODELS[key] = lm
    return lm, False


def release(model_cfg=None) -> None:
    """Drop one cached model (or all) and clear MLX's buffer cache."""
    if model_cfg is None:
        _MODELS.clear()
    else:
        _MODELS.pop(model_key(model_cfg), None)
    gc.collect()
    try:
        import mlx.core as mx

        mx.clear_cache()
    except (ImportError, AttributeError):
        pass


def cached_keys() -> list[str]:
    return list(_MODELS)
