"""SpecDiffTree: inference-time search experiments with MLX language models.

Notebook use::

    import specdifftree as sdt
    cfg = sdt.compose(["method=greedy", "num_samples=3"])
    df = sdt.run(cfg)          # one row per scored sample (results.jsonl as a DataFrame)
"""

__version__ = "0.1.0"


def compose(overrides=(), config_name: str = "config"):
    """Compose the Hydra config tree with overrides (same as the CLI)."""
    from .config import compose as _compose

    return _compose(overrides, config_name=config_name)


def run(cfg, run_dir=None):
    """Run one experiment; returns a pandas DataFrame of per-sample results."""
    from .runner import run as _run

    return _run(cfg, run_dir=run_dir)


__all__ = ["compose", "run", "__version__"]
