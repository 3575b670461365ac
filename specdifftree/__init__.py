"""SpecDiffTree: inference-time search experiments with MLX language models.

Notebook use::

    import specdifftree as sdt
    cfg = sdt.compose(["method=greedy", "num_samples=3"])
    df = sdt.run(cfg)          # one row per scored sample (results.jsonl as a DataFrame)

Importing the package loads the fast BLAS for MLX on Linux (:func:`specdifftree.backend.mlx.blas.preload`;
import specdifftree before mlx). The first run prints the BLAS and the device in use, once.
"""

from .version import __version__

from .backend.mlx._blaslib import preload as _preload_blas

_preload_blas()


def compose(overrides=(), config_name: str = "config"):
    """Compose the Hydra config tree with overrides (same as the CLI)."""
    from .config import compose as _compose

    return _compose(overrides, config_name=config_name)


def run(cfg, run_dir=None):
    """Run one experiment; returns a pandas DataFrame of per-sample results."""
    from .console import announce_runtime
    from .runner import run as _run

    announce_runtime(echo=True)
    return _run(cfg, run_dir=run_dir)


__all__ = ["compose", "run", "__version__"]
