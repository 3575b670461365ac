"""The MLX backend: mlx-lm models (:mod:`.handle`, :mod:`.loader`), their Sessions (:mod:`.session`,
:mod:`.snapshot`), device sampling, and the BLAS/device plumbing of MLX's CPU build.

Importing this package imports no MLX module (the package's ``__init__`` preloads OpenBLAS from
:mod:`._blaslib` before MLX is first imported)."""
