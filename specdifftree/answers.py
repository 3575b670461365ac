r"""Answer rules: how a method's sample set becomes the point forecast that is scored.

``method.answer`` picks the rule:

- ``best``: the best-reward continuation the method returns (the default of the search methods);
- ``sample``: the method's first returned sample (for ``dts`` a draw from the tree's estimate of
  π, for ``best_of_n`` the first of its N samples from p_θ);
- ``median``: the step-wise median of the parsed forecasts of the returned samples — LLMTime's
  point forecast (Gruver et al. 2023);
- ``mean``: their step-wise mean.

``median`` and ``mean`` use the samples whose h values all parsed; when none did, every sample's
completed forecast (missing values repeat the previous one) and the row is marked invalid.
``sample``, ``median`` and ``mean`` need a *sampling* method (one whose ``sampling`` attribute is
true: ``best_of_n``, ``dts``, ``maxent_ts``); the others return a single continuation.

The distribution scores (CRPS, quantiles, MSIS, coverage; :mod:`specdifftree.metrics.probabilistic`)
are computed from the same sample set for a sampling method, and from the point forecast alone
(a point mass) for every other method.
"""

from __future__ import annotations

import numpy as np

from .errors import ConfigError

ANSWER_RULES = ("best", "sample", "median", "mean")
#: rules the runner applies to the sample set itself (the method returns its default answer)
AGGREGATE_RULES = ("median", "mean")


def is_sampling(method) -> bool:
    return bool(getattr(method, "sampling", False))


def check_rule(answer, method_name: str, sampling: bool, needs_model: bool = True) -> str | None:
    """Validate ``method.answer``; None when unset. Raises ConfigError with the fix."""
    if answer is None:
        return None
    if answer not in ANSWER_RULES:
        raise ConfigError(f"method.answer={answer!r}: must be one of {', '.join(ANSWER_RULES)}")
    if not needs_model and answer != "best":
        raise ConfigError(f"method.answer={answer}: {method_name} forecasts one point without a "
                          "model; drop method.answer")
    if answer != "best" and not sampling:
        raise ConfigError(f"method.answer={answer}: {method_name} returns a single continuation, "
                          "not a sample set; use a sampling method (best_of_n, dts, maxent_ts) "
                          "or answer=best")
    return str(answer)


def aggregate(rule: str, forecasts: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, bool]:
    """The step-wise median or mean of the sample forecasts (N, h); (values, any sample valid)."""
    f = np.asarray(forecasts, dtype=np.float64)
    ok = np.asarray(valid, dtype=bool)
    if f.ndim != 2 or f.shape[0] == 0:
        raise ValueError(f"answer={rule} needs at least one sample forecast, got shape {f.shape}")
    use = f[ok] if ok.any() else f
    if rule == "median":
        return np.median(use, axis=0), bool(ok.any())
    if rule == "mean":
        return use.mean(axis=0), bool(ok.any())
    raise ValueError(f"aggregate rule must be median or mean, got {rule!r}")
