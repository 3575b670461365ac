"""Synthetic training series from Gaussian-process kernel compositions (KernelSynth style).

The idea follows Chronos' KernelSynth (Ansari et al., 2024, "Chronos: Learning the Language of
Time Series", Section 4.2): draw a few kernels from a bank of basic kernels (linear, RBF,
periodic, rational quadratic, white noise, constant), combine them with random ``+`` and ``*``,
and sample one series from the Gaussian-process prior with the composed covariance. This module
is a small numpy implementation written for this project; it adds two choices of its own:

* series lengths vary (``min_len`` ... ``max_len``) so that short, yearly-like histories occur, and
  periods are drawn from the seasonal periods of business data (4, 7, 12, 13, 24, 52 ...) and
  from fractions of the length;
* most series are shifted to a positive level (business series are positive), a few keep their
  zero-mean sign changes.

Everything is driven by one ``numpy.random.Generator``: the same seed gives the same series.
"""

from __future__ import annotations

import numpy as np

# seasonal periods of M-competition style data (quarterly, weekly-in-days, monthly, ...)
PERIODS = (4, 6, 7, 12, 13, 24, 26, 52)


def _linear(t, rng):
    c = rng.uniform(-1.0, 1.0)
    s = rng.uniform(0.1, 1.0)
    u = t / max(t.max(), 1.0)
    return s * np.outer(u - c, u - c), "linear"


def _rbf(t, rng, n):
    ell = n * rng.choice([0.02, 0.05, 0.1, 0.25, 0.5, 1.0])
    d = t[:, None] - t[None, :]
    return np.exp(-0.5 * (d / ell) ** 2), "rbf"


def _periodic(t, rng, n):
    if rng.random() < 0.75:
        p = float(rng.choice(PERIODS))
    else:
        p = n * float(rng.choice([0.1, 0.2, 0.25, 0.5]))
    ell = rng.choice([0.5, 1.0, 2.0])
    d = np.abs(t[:, None] - t[None, :])
    return np.exp(-2.0 * np.sin(np.pi * d / p) ** 2 / ell**2), f"periodic({p:g})"


def _rational_quadratic(t, rng, n):
    ell = n * rng.choice([0.05, 0.1, 0.25, 0.5])
    alpha = rng.choice([0.1, 1.0, 10.0])
    d = t[:, None] - t[None, :]
    return (1.0 + d**2 / (2 * alpha * ell**2)) ** (-alpha), "rq"


def _white(t, rng):
    return rng.choice([0.01, 0.05, 0.1]) * np.eye(t.size), "white"


def _constant(t, rng):
    return rng.uniform(0.1, 1.0) * np.ones((t.size, t.size)), "const"


KERNELS = ("linear", "rbf", "periodic", "rq", "white", "const")
# periodic kernels twice as likely: seasonality is what the real data lacks most for this model
KERNEL_P = np.array([1.0, 1.0, 2.0, 1.0, 0.5, 0.5]) / 6.0


def composed_kernel(t: np.ndarray, rng: np.random.Generator, max_kernels: int = 5):
    """A covariance matrix over ``t`` and a readable description of its composition."""
    n = t.size
    j = int(rng.integers(1, max_kernels + 1))
    picks = rng.choice(len(KERNELS), size=j, p=KERNEL_P)
    k, desc = None, ""
    for idx in picks:
        name = KERNELS[idx]
        if name == "linear":
            kk, d = _linear(t, rng)
        elif name == "rbf":
            kk, d = _rbf(t, rng, n)
        elif name == "periodic":
            kk, d = _periodic(t, rng, n)
        elif name == "rq":
            kk, d = _rational_quadratic(t, rng, n)
        elif name == "white":
            kk, d = _white(t, rng)
        else:
            kk, d = _constant(t, rng)
        if k is None:
            k, desc = kk, d
        elif rng.random() < 0.5:
            k, desc = k + kk, f"({desc} + {d})"
        else:
            k, desc = k * kk, f"({desc} * {d})"
    return k, desc


def sample_gp(k: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One draw from N(0, k); a growing diagonal jitter keeps the factorisation stable."""
    n = k.shape[0]
    scale = float(np.mean(np.diag(k))) or 1.0
    for jitter in (1e-6, 1e-4, 1e-2):
        try:
            chol = np.linalg.cholesky(k + jitter * scale * np.eye(n))
            return chol @ rng.standard_normal(n)
        except np.linalg.LinAlgError:
            continue
    w, v = np.linalg.eigh(k)  # last resort: clip negative eigenvalues
    return v @ (np.sqrt(np.clip(w, 0.0, None)) * rng.standard_normal(n))


def synth_series(rng: np.random.Generator, min_len: int = 24, max_len: int = 288,
                 positive_share: float = 0.8) -> np.ndarray:
    """One synthetic series (float64, finite, length in [min_len, max_len])."""
    n = int(np.exp(rng.uniform(np.log(min_len), np.log(max_len + 1))))
    n = min(max(n, min_len), max_len)
    t = np.arange(n, dtype=np.float64)
    k, _ = composed_kernel(t, rng)
    y = sample_gp(k, rng)
    sd = float(np.std(y)) or 1.0
    y = y / sd  # unit spread; the prompt's own scaling takes over from here
    if rng.random() < positive_share:
        # a positive level: the minimum lands between 0.2 and 5 standard deviations above zero
        y = y - y.min() + rng.uniform(0.2, 5.0)
    y = y * 10.0 ** rng.uniform(0, 4)  # the level's order of magnitude varies as in real data
    return np.asarray(y, dtype=np.float64)


def synth_bank(n: int, seed: int, min_len: int = 24, max_len: int = 288,
               positive_share: float = 0.8) -> list[np.ndarray]:
    """``n`` synthetic series from one seed (series ``i`` comes from ``default_rng([seed, i])``,
    so a bank is reproducible and can be generated in parallel chunks)."""
    return [synth_series(np.random.default_rng([seed, i]), min_len, max_len, positive_share)
            for i in range(n)]
