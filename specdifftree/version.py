"""The package version, read by the package and by run metadata (run.json); pyproject.toml states
the same (a test checks)."""

__version__ = "0.1.0"
