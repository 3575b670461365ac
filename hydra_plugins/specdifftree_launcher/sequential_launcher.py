"""Hydra launcher plugin ``hydra/launcher=sequential`` (the project's default for --multirun).

Hydra only instantiates launchers from the ``hydra_plugins`` namespace; the logic lives in
:mod:`specdifftree.launcher.sequential`.
"""

from __future__ import annotations

from typing import Optional, Sequence

from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class SequentialLauncher(Launcher):
    def __init__(self, skip_complete: bool = True, release_models: bool = True,
                 progress: Optional[bool] = None) -> None:
        super().__init__()
        self.skip_complete = skip_complete
        self.release_models = release_models
        self.progress = progress
        self.sweep = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        from specdifftree.launcher.sequential import SequentialSweep

        self.sweep = SequentialSweep(hydra_context=hydra_context, task_function=task_function,
                                     config=config, skip_complete=self.skip_complete,
                                     release_models=self.release_models, progress=self.progress)

    def launch(self, job_overrides: Sequence[Sequence[str]],
               initial_job_idx: int) -> Sequence[JobReturn]:
        assert self.sweep is not None, "setup() was not called"
        return self.sweep.launch(job_overrides, initial_job_idx)
