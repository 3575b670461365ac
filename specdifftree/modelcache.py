"""Process-wide caches of loaded models and datasets, keyed by their resolved config.

Jobs of a sweep that run in one process (``hydra/launcher=sequential``) share them: the first job
that needs a model or dataset loads it, later ones hit the cache. The sweep launcher releases an
entry once no remaining job needs it (:func:`release_unused`). Whether a job's model came from the
cache is what :func:`get_model` returns to that job (the runner records it per run).
"""

from __future__ import annotations

import gc
import json
import logging

from omegaconf import OmegaConf

log = logging.getLogger(__name__)

# the caches: resolved config key -> loaded model / list of series
_MODELS: dict = {}
_DATASETS: dict = {}


def config_key(cfg) -> str:
    """A stable string for a (resolved) config node or mapping."""
    data = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else dict(cfg)
    return json.dumps(data, sort_keys=True, default=str)


model_key = config_key


def dataset_key(dataset_cfg) -> str:
    """What selects the series: the source's ``_target_`` and arguments (resolved) and
    ``ids_file``; keys that only shape the prompt or pick among the series (``context_length``,
    ``subset_seed``, the task) are not part of it. An M4 ``root`` is made absolute so cwd changes
    don't alias."""
    from .tasks.build import ids_file, source_config

    data = source_config(dataset_cfg)
    data["ids_file"] = ids_file(dataset_cfg)
    if data.get("root"):
        try:
            from .tasks.sources import resolve_root

            data["root"] = str(resolve_root(data["root"]))
        except Exception:  # noqa: BLE001 - a bad root is reported by the loader itself
            pass
    return json.dumps(data, sort_keys=True, default=str)


def get_model(model_cfg):
    """The model for ``model_cfg`` and whether it came from the cache: ``(LoadedModel, hit)``."""
    key = model_key(model_cfg)
    if key in _MODELS:
        return _MODELS[key], True
    from .backend.base import build_model

    lm = build_model(model_cfg)
    _MODELS[key] = lm
    return lm, False


def get_series(dataset_cfg):
    """All series of the dataset for ``dataset_cfg`` and whether they came from the cache.

    The list is shared between callers: treat it (and its :class:`Series`) as read-only.
    """
    key = dataset_key(dataset_cfg)
    if key in _DATASETS:
        return _DATASETS[key], True
    from .tasks.sources import load_series

    series = load_series(dataset_cfg)
    _DATASETS[key] = series
    return series, False


def release_unused(keep_models=(), keep_datasets=()) -> list[str]:
    """Drop every cached model/dataset whose key is not kept; returns the dropped model names."""
    keep_models, keep_datasets = set(keep_models), set(keep_datasets)
    dropped, kinds = [], set()
    for key in [k for k in _MODELS if k not in keep_models]:
        model = _MODELS.pop(key)
        dropped.append(getattr(model, "name", key))
        kinds.add(type(model))
        del model
    for key in [k for k in _DATASETS if k not in keep_datasets]:
        _DATASETS.pop(key)
    if dropped:
        log.info("released model(s) no later job needs: %s", ", ".join(dropped))
        gc.collect()
        for kind in kinds:  # a backend may hand its freed buffers back (ModelHandle.free_memory)
            free = getattr(kind, "free_memory", None)
            if free is not None:
                free()
    return dropped
