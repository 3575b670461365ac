"""Deterministic crash points for the crash-safety tests.

``SPECDIFFTREE_CRASH_AT=<point>[:<n>]`` kills the process with SIGKILL the n-th time (default 1)
it reaches ``<point>``: ``row`` (after a results row is on disk), ``torn`` (half-way through
writing a row), ``samples`` (after a series' samples.jsonl lines are on disk, before its results
row), ``samples-torn`` (half-way through writing them), ``rewrite-mid`` (half-way through writing
the temporary file of a rewrite), ``rewrite`` (temporary file complete, before the rename);
``rewrite-mid@<file name>`` and ``rewrite@<file name>`` count the rewrites of that file only. Unset: a no-op costing one dict lookup.
"""

from __future__ import annotations

import os
import signal

_COUNTS: dict[str, int] = {}


def crash_point(name: str) -> None:
    spec = os.environ.get("SPECDIFFTREE_CRASH_AT")
    if not spec:
        return
    point, _, n = spec.partition(":")
    if point != name:
        return
    _COUNTS[name] = _COUNTS.get(name, 0) + 1
    if _COUNTS[name] == int(n or 1):
        os.kill(os.getpid(), signal.SIGKILL)
