"""Data sources and tasks are built from the ``dataset`` config by Hydra's ``instantiate``.

A dataset config is one flat node of user keys (``dataset.root``, ``dataset.context_length``, ...)
with two ``_target_``\\ s:

- ``dataset._target_`` is the **data source** class; the dataset keys that are arguments of its
  ``__init__`` are passed to it (its signature is the schema);
- ``dataset.task`` is the **task** node (``_target_`` + the task's arguments, nested ``_target_``
  nodes allowed), which takes its values from the user keys by interpolation:
  ``${prompt.decimals}``, ``${dataset.context_length}``. The shipped task nodes live in
  ``conf/task/`` and a dataset yaml picks one in its defaults list (``- /task@task: forecasting``).

The other keys of the dataset node belong to the runner: ``name`` (the label in results),
``subset_seed`` (picks the series of a run) and ``ids_file`` (keeps the series an ids file lists,
for every source). A dataset key that is neither a source argument, a runner key nor read by the
task node (``${dataset.<key>}``) is one :class:`ConfigError` line naming it, with the closest
setting and the list of settings; so is a task key its class does not take.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from ..errors import ConfigError
from ..targets import construct, import_target, settings, unknown_key

#: keys of the dataset node read by the runner (not by the source or the task)
RUNNER_KEYS = ("_target_", "name", "task", "subset_seed", "ids_file")

_DATASET_REF = re.compile(r"\$\{dataset\.(\w+)")


def _container(node: Any, resolve: bool) -> dict:
    from omegaconf import OmegaConf

    if OmegaConf.is_config(node):
        return OmegaConf.to_container(node, resolve=resolve)
    if not isinstance(node, Mapping):
        raise ConfigError(f"the dataset config must be a mapping, got {type(node).__name__}")
    return dict(node)


def target_class(target: Any, where: str) -> type:
    """The class named by ``<where>._target_`` (one ConfigError line when it cannot be imported)."""
    if not target:
        raise ConfigError(f"{where}._target_ is missing: name the class that serves it "
                          "(docs/extending.md)")
    return import_target(target, where)


def check_keys(cls: type, where: str, keys, also=()) -> None:
    """Every key is an argument of ``cls`` (or one of ``also``); one ConfigError line otherwise."""
    known = settings(cls)
    for key in keys:
        if key == "_target_" or key in known or key in also:
            continue
        raise unknown_key(where, key, cls.__name__, known, [*known, *also])


def _task_reads(raw_task: Any) -> set[str]:
    """The dataset keys the (unresolved) task node reads by interpolation."""
    return set(_DATASET_REF.findall(json.dumps(raw_task, default=str)))


def source_config(dataset_cfg) -> dict:
    """``_target_`` and the source's arguments of a dataset config (values resolved), checked:
    what :func:`build_source` instantiates. ``ids_file`` rides along when set (it selects series)."""
    raw = _container(dataset_cfg, resolve=False)
    cls = target_class(raw.get("_target_"), "dataset")
    check_keys(cls, "dataset", raw, also=(*RUNNER_KEYS, *sorted(_task_reads(raw.get("task")))))
    # resolve key by key: the task node may refer to keys outside the dataset node (prompt.*)
    out = {"_target_": raw["_target_"]}
    for key in settings(cls):
        if key in raw:
            out[key] = _resolved(dataset_cfg, key)
    return out


def _resolved(node, key: str):
    from omegaconf import OmegaConf

    value = node[key] if not OmegaConf.is_config(node) else OmegaConf.select(node, key)
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def ids_file(dataset_cfg):
    """``dataset.ids_file`` or None."""
    raw = _container(dataset_cfg, resolve=False)
    return _resolved(dataset_cfg, "ids_file") if raw.get("ids_file") not in (None, "") else None


def build_source(dataset_cfg):
    """The data source object of a dataset config (see the module docstring)."""
    return construct(source_config(dataset_cfg), "dataset")


def _check_tree(node: Any, where: str) -> None:
    """Check the keys of every ``_target_`` node under ``node`` against its class."""
    if isinstance(node, Mapping):
        if "_target_" in node:
            check_keys(target_class(node["_target_"], where), where, node)
        for key, value in node.items():
            if key != "_target_":
                _check_tree(value, f"{where}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _check_tree(value, f"{where}[{i}]")


def build_task(dataset_cfg):
    """The task object of a dataset config: ``dataset.task`` instantiated (interpolations to
    ``prompt.*`` and ``dataset.*`` resolved against the whole config)."""
    from omegaconf import OmegaConf

    node = dataset_cfg.get("task") if hasattr(dataset_cfg, "get") else None
    if node is None:
        raise ConfigError("dataset.task is missing: the dataset config must name its task "
                          "(in its defaults list, e.g. `- /task@task: forecasting`)")
    config = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
    if not isinstance(config, Mapping) or "_target_" not in config:
        raise ConfigError("dataset.task._target_ is missing: name the task class "
                          "(docs/extending.md)")
    _check_tree(config, "dataset.task")
    return construct(dict(config), "dataset.task")
