"""The folder where generated models and tokenizer fixtures are written."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """Where generated models are written (``SPECDIFFTREE_CACHE`` or ``~/.cache/specdifftree``)."""
    root = os.environ.get("SPECDIFFTREE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "specdifftree"
    )
    return Path(root)
