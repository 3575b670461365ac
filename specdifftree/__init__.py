"""SpecDiffTree: inference-time search experiments with MLX language models."""

__version__ = "0.1.0"
