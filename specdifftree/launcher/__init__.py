"""Sweeps: the sequential Hydra launcher's logic (one process, shared caches, resume, failures).

The Hydra plugin class lives in ``hydra_plugins/specdifftree_launcher`` (Hydra only accepts
launchers from the ``hydra_plugins`` namespace) and delegates to :mod:`.sequential`. Modules here
import nothing heavy at import time: Hydra imports every plugin module on each start.
"""

from .jobinfo import JOB_FILE, read_job_info

__all__ = ["JOB_FILE", "read_job_info"]
