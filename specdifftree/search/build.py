"""Methods are built from their config by Hydra's ``instantiate``: ``_target_`` is the class and
the other keys are its ``__init__`` arguments, so the constructor's signature is the schema.

Two keys belong to the runner, not to the class: ``name`` (the label in results) and ``answer``
when the method has no ``answer`` argument or the rule is one the runner applies to the sample set
(``median``, ``mean``; see :mod:`specdifftree.answers`). Any other key the class does not take is a
:class:`ConfigError` naming it, with the closest setting and the list of settings; an old key
name (:data:`RENAMED`: ``temperature``, ``num_samples``, ``num_rollouts``) gets one line naming
its new key.
"""

from __future__ import annotations

from typing import Any, Mapping

from ..errors import ConfigError
from ..targets import construct, import_target, settings, unknown_key

#: keys of a method config read by the runner
RUNNER_KEYS = ("_target_", "name", "answer")

#: method keys renamed or removed (issue 11): the one-line message an old key gets
RENAMED = {
    "temperature": "method.temperature is now method.lam (λ of π ∝ p_θ·exp(λ·r)); rollout "
                   "sampling temperature is method.rollout_temperature",
    "num_samples": "method.num_samples is now method.num_draws (draws/resamples a sampling method "
                   "returns as its samples); the number of series to forecast is the top-level "
                   "num_samples",
    "num_rollouts": "method.num_rollouts is gone: the rollout budget is budget.rollouts (20 per "
                    "sample unless budget.tokens is set), e.g. budget.rollouts=50",
}


def method_class(target: str, name: str | None = None) -> type:
    return import_target(target, "method", prefix=f"method={name}: " if name else "")


def check_keys(cls: type, name: str, keys) -> None:
    """Every key is a setting of the method (or a runner key); one ConfigError line otherwise."""
    known = settings(cls)
    for key in keys:
        if key in RUNNER_KEYS or key in known:
            continue
        if key in RENAMED:  # an old name the class does not take (a class may still take it)
            raise ConfigError(RENAMED[key])
        raise unknown_key("method", key, f"method={name}", known)


def instantiate_method(config: Mapping[str, Any]):
    """The method object of a method config (``_target_``, ``name`` and the class's arguments)."""
    from ..answers import AGGREGATE_RULES, check_rule, is_sampling

    config = dict(config)
    target = config.get("_target_")
    name = str(config.get("name") or target)
    if not target:
        raise ConfigError("method._target_ is missing: pick a method with method=<name>")
    cls = method_class(target, name)
    check_keys(cls, name, config)
    args = {k: v for k, v in config.items() if k not in ("name",)}
    if "answer" in args and ("answer" not in settings(cls) or args["answer"] in AGGREGATE_RULES):
        args.pop("answer")  # the runner applies it (specdifftree.answers)
    method = construct(args, f"method={name}")
    method.name = str(config.get("name") or method.name)
    check_rule(config.get("answer"), method.name, is_sampling(method),
               getattr(method, "needs_model", True))
    return method


def method_names() -> list[str]:
    """The shipped method configs (``specdifftree/conf/method/*.yaml``)."""
    from ..config import conf_dir

    return sorted(p.stem for p in (conf_dir() / "method").glob("*.yaml"))


def build(name: str, **config):
    """Method ``name`` with ``config`` as its arguments (the class's defaults for the others): the
    class is the ``_target_`` of ``conf/method/<name>.yaml``. For tests and scripts; runs use the
    composed config (:func:`instantiate_method`)."""
    from omegaconf import OmegaConf

    from ..config import conf_dir

    path = conf_dir() / "method" / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"method={name!r} is unknown: use one of {', '.join(method_names())}")
    target = OmegaConf.load(path).get("_target_")
    return instantiate_method({"_target_": target, "name": name, **config})


def search_methods() -> list[str]:
    """The shipped configs of methods that search with a language model."""
    return [n for n in method_names() if build(n).needs_model]
