"""Errors a user can cause, each carrying one clear message (the CLI prints it and exits 2)."""


class SpecDiffTreeError(Exception):
    """Base class: a problem with the user's input, reported as one line."""

    exit_code = 2


class ConfigError(SpecDiffTreeError):
    """A config value is invalid."""


class DataError(SpecDiffTreeError):
    """A data file or folder is missing or malformed."""


class ModelError(SpecDiffTreeError):
    """A model folder or id cannot be loaded."""


class BackendError(RuntimeError):
    """The model cannot process one sample (e.g. the prompt is longer than its context)."""
