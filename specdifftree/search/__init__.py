"""Search methods over continuations of a prompt (see docs/search.md).

Every method follows :class:`specdifftree.search.base.Method`; :data:`METHODS` maps the config
name (``method=<name>``) to the class path Hydra's ``_target_`` uses.
"""

from __future__ import annotations

import importlib

METHODS = {
    "greedy": "specdifftree.search.greedy.Greedy",
    "best_of_n": "specdifftree.search.best_of_n.BestOfN",
    "beam": "specdifftree.search.beam.Beam",
    "mcts": "specdifftree.search.mcts.MCTS",
    "dts": "specdifftree.search.dts.DTS",
    "dts_star": "specdifftree.search.dts.DTSStar",
    "maxent_ts": "specdifftree.search.maxent_ts.MaxEntTS",
    "sir": "specdifftree.search.sir.SIR",
    "smc": "specdifftree.search.smc.SMC",
}


def build(name: str, **config):
    """Instantiate method ``name`` with its config keys (as Hydra would from specdifftree/conf/method)."""
    from ..errors import ConfigError

    if name not in METHODS:
        raise ConfigError(f"method={name!r} is unknown: use one of {', '.join(METHODS)}")
    module, cls = METHODS[name].rsplit(".", 1)
    return getattr(importlib.import_module(module), cls)(**config)
