"""Search methods over continuations of a prompt (see docs/search.md).

Every method follows :class:`specdifftree.search.base.Method` and is built from its config
(``specdifftree/conf/method/<name>.yaml``: ``_target_`` = the class, the other keys = its
``__init__`` arguments) by :func:`specdifftree.search.build.instantiate_method`.
"""

from __future__ import annotations

from .build import build, instantiate_method, method_names, search_methods

__all__ = ["build", "instantiate_method", "method_names", "search_methods"]
