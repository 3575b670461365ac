"""Spectral regularisation reward (no ground truth).

    r(x) = r_task(x) − γ · D(x),    D(x) = ∫_0^{1/2} | log(S_x(f) + ε) − log(S̄_c(f) + ε) | df

- ``S_x``: the one-sided power spectral density of the forecast x (length h);
- ``S̄_c``: the mean PSD of the context windows of the same length h (Welch's method: segments of
  length h, ``overlap`` between them, aligned to the end of the context);
- both estimated the same way, on the same grid f_k = k/h (k = 1..⌊h/2⌋, cycles per time step):
  linear detrend of each segment (``detrend``), periodic Hann window (``window``), |rfft|² scaled to
  a density, ``S(f_k) = c_k |X_k|² / Σ w²`` with c_k = 2 except c = 1 at the Nyquist bin of an even
  h (sampling frequency 1). The DC bin is left out: after detrending it carries no information.
- the integral is the rectangle rule with Δf = 1/h (half weight at the Nyquist bin of an even h);
- ε = ``floor`` · P_ref with P_ref the mean of S̄_c over the grid (the mean square of the context
  when its PSD is zero, 1 when the context is all zeros). ε scales with the series, so the reward is
  invariant to the series' scale: multiplying context and forecasts by c > 0 changes nothing.

Defined values: when the context has fewer than ``min_context`` values, or h < 2 (no frequency
besides DC), D = 0. When the context is shorter than h, its one segment is the whole context,
windowed at its own length and zero-padded to h. ``r_task`` is 0 unless ``task`` names another
reward config (a built-in name such as ``oracle_smape`` or a dict with ``_target_``).
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from .base import BaseReward, RewardContext, as_forecasts

DETRENDS = ("linear", "constant", "none")
WINDOWS = ("hann", "boxcar")
SOURCES = ("history", "full_history")


def detrend(x: np.ndarray, kind: str = "linear") -> np.ndarray:
    """Remove the least-squares line (``linear``), the mean (``constant``) or nothing, row-wise."""
    x = np.asarray(x, dtype=np.float64)
    if kind == "none":
        return x
    mean = x.mean(axis=-1, keepdims=True)
    if kind == "constant" or x.shape[-1] < 2:
        return x - mean
    n = x.shape[-1]
    t = np.arange(n, dtype=np.float64) - (n - 1) / 2.0
    slope = (x * t).sum(axis=-1, keepdims=True) / float((t * t).sum())
    return x - mean - slope * t


def window(kind: str, n: int) -> np.ndarray:
    """The periodic Hann window (``0.5 − 0.5 cos(2πk/n)``) or the boxcar, of length n."""
    if kind == "boxcar" or n < 2:
        return np.ones(n)
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)


def psd(x: np.ndarray, nfft: int, detrend_kind: str = "linear", window_kind: str = "hann") -> np.ndarray:
    """One-sided PSD density (fs = 1) of each row of x (N, L), L ≤ nfft, on f_k = k/nfft.

    Returns (N, nfft//2 + 1); rows shorter than nfft are zero-padded after windowing.
    """
    x = detrend(np.atleast_2d(x), detrend_kind)
    w = window(window_kind, x.shape[-1])
    spec = np.abs(np.fft.rfft(x * w, n=nfft, axis=-1)) ** 2 / float((w * w).sum())
    spec[..., 1:] *= 2.0
    if nfft % 2 == 0:
        spec[..., -1] /= 2.0
    return spec


def bin_weights(h: int) -> np.ndarray:
    """Rectangle-rule weights Δf = 1/h of the bins k = 1..⌊h/2⌋ (half at an even h's Nyquist)."""
    k = h // 2
    w = np.full(k, 1.0 / h)
    if h % 2 == 0 and k:
        w[-1] *= 0.5
    return w


class SpectralReward(BaseReward):
    """See the module docstring. Config keys: gamma, task, detrend, window, overlap,
    max_windows, source, floor, min_context."""

    name = "spectral"

    def __init__(self, gamma: float = 1.0, task=None, detrend: str = "linear",
                 window: str = "hann", overlap: float = 0.5, max_windows: int | None = None,
                 source: str = "history", floor: float = 1e-3, min_context: int = 4):
        gamma = float(gamma)
        if not np.isfinite(gamma) or gamma < 0:
            raise ConfigError(f"reward.gamma={gamma} must be a finite number >= 0")
        if detrend not in DETRENDS:
            raise ConfigError(f"reward.detrend={detrend!r} must be one of {', '.join(DETRENDS)}")
        if window not in WINDOWS:
            raise ConfigError(f"reward.window={window!r} must be one of {', '.join(WINDOWS)}")
        if source not in SOURCES:
            raise ConfigError(f"reward.source={source!r} must be one of {', '.join(SOURCES)}")
        if not 0.0 <= float(overlap) < 1.0:
            raise ConfigError(f"reward.overlap={overlap} must be in [0, 1)")
        if max_windows is not None and int(max_windows) < 1:
            raise ConfigError(f"reward.max_windows={max_windows} must be >= 1 or null (all)")
        if not float(floor) > 0:
            raise ConfigError(f"reward.floor={floor} must be > 0")
        if int(min_context) < 2:
            raise ConfigError(f"reward.min_context={min_context} must be >= 2")
        self.gamma = gamma
        self.detrend = detrend
        self.window = window
        self.overlap = float(overlap)
        self.max_windows = None if max_windows is None else int(max_windows)
        self.source = source
        self.floor = float(floor)
        self.min_context = int(min_context)
        self.task = None
        if task is not None:
            from .build import build_component
            self.task = build_component("task", task)
            self.oracle = bool(getattr(self.task, "oracle", False))
        self._cache: tuple | None = None

    # -- context spectrum ---------------------------------------------------------------------
    def context_spectrum(self, context: RewardContext, h: int) -> tuple[np.ndarray, float] | None:
        """(S̄_c on bins 1..⌊h/2⌋, ε) for this context and horizon, or None when undefined."""
        hist = context.history if self.source == "history" else context.full_history
        c = self._cache
        if c is not None and c[0] is hist and c[1] == h:
            return c[2]
        out = self._context_spectrum(hist, h)
        self._cache = (hist, h, out)
        return out

    def _context_spectrum(self, hist, h: int):
        x = np.asarray(hist, dtype=np.float64).reshape(-1)
        x = x[np.isfinite(x)]
        if x.size < self.min_context or h < 2:
            return None
        if x.size < h:
            segs = x[None, :]
        else:
            step = max(1, h - int(np.floor(self.overlap * h)))
            starts = np.arange(x.size - h, -1, -step)
            if self.max_windows is not None:
                starts = starts[: self.max_windows]
            segs = np.lib.stride_tricks.sliding_window_view(x, h)[starts]
        mean_psd = psd(segs, h, self.detrend, self.window).mean(axis=0)[1:]
        p_ref = float(mean_psd.mean())
        if not p_ref > 0 or not np.isfinite(p_ref):
            p_ref = float(np.mean(x * x))
            if not p_ref > 0 or not np.isfinite(p_ref):
                p_ref = 1.0
        return mean_psd, self.floor * p_ref

    # -- reward --------------------------------------------------------------------------------
    def distance(self, forecasts: np.ndarray, context: RewardContext) -> np.ndarray:
        """D(x) for each row of forecasts (B, h)."""
        f = np.asarray(forecasts, dtype=np.float64)
        h = f.shape[1]
        ref = self.context_spectrum(context, h)
        if ref is None:
            return np.zeros(f.shape[0])
        mean_psd, eps = ref
        s = psd(f, h, self.detrend, self.window)[:, 1:]
        diff = np.abs(np.log(s + eps) - np.log(mean_psd + eps)[None, :])
        return diff @ bin_weights(h)

    def __call__(self, forecasts, texts, valid, context: RewardContext) -> np.ndarray:
        f = as_forecasts(forecasts, len(texts))
        r = -self.gamma * self.distance(f, context) if self.gamma else np.zeros(f.shape[0])
        if self.task is not None:
            r = r + self.task(f, texts, valid, context)
        return r
