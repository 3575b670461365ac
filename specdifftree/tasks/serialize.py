"""LLMTime-style serialization of a series to text and parsing of generated text back to numbers.

Encoding: values are divided by a per-series ``scale`` (the ``scale_quantile`` quantile of |x| over
the context, mapped to ``scale_target``), written with ``decimals`` fixed decimals and joined by
``separator``. Decoding reverses it.

Parsing rule (documented in the README): the generated text is split on the separator; field i
(i < h) is value i when it is a plain decimal number, else missing. Missing values are completed by
repeating the previous value (the last context value for a leading gap). The forecast is *valid*
only when all h fields parsed; ``n_parsed`` says how many did.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

NUMBER = re.compile(r"^-?\d+(?:\.\d+)?$")


@dataclass(frozen=True)
class Serializer:
    separator: str = ", "
    decimals: int = 2
    scale_quantile: float = 0.9
    scale_target: float = 10.0

    def __post_init__(self):
        if not self.separator.strip():
            raise ValueError("serializer separator must contain a non-space character (e.g. ', ')")
        if any(c.isdigit() or c in ".-" for c in self.separator):
            raise ValueError(f"serializer separator {self.separator!r} may not contain digits, '.' or '-'")
        if not 0 <= self.decimals <= 8:
            raise ValueError("serializer decimals must be between 0 and 8")
        if not 0 < self.scale_quantile <= 1 or not self.scale_target > 0:
            raise ValueError("scale_quantile must be in (0, 1] and scale_target > 0")

    def scale_for(self, context: np.ndarray) -> float:
        a = np.abs(np.asarray(context, dtype=np.float64))
        a = a[np.isfinite(a)]
        if a.size == 0:
            return 1.0
        q = float(np.quantile(a, self.scale_quantile))
        if not q > 0:
            q = float(a.max()) if a.max() > 0 else 1.0
        scale = q / self.scale_target
        # a subnormal or overflowing scale would turn values into inf/0: keep the raw values then
        return scale if np.isfinite(scale) and scale >= np.finfo(np.float64).tiny else 1.0

    def encode(self, values: np.ndarray, scale: float) -> str:
        fmt = f"{{:.{self.decimals}f}}"
        out = []
        for v in np.asarray(values, dtype=np.float64) / scale:
            s = fmt.format(v)
            if s.startswith("-") and float(s) == 0:
                s = s[1:]
            out.append(s)
        return self.separator.join(out)

    def fields(self, text: str) -> list[str]:
        return [f.strip() for f in text.split(self.separator.strip())]

    def parse(self, text: str, horizon: int, scale: float) -> tuple[np.ndarray, int]:
        """Values of the first ``horizon`` fields (NaN where a field is missing or garbled)."""
        vals = np.full(horizon, np.nan)
        n_ok = 0
        for i, f in enumerate(self.fields(text)[:horizon]):
            if NUMBER.match(f):
                v = float(f) * scale
                if math.isfinite(v):
                    vals[i] = v
                    n_ok += 1
        return vals, n_ok


def complete(values: np.ndarray, fallback: float) -> np.ndarray:
    """Fill NaNs by repeating the previous value (``fallback`` before the first value)."""
    out = np.array(values, dtype=np.float64, copy=True)
    prev = float(fallback)
    for i, v in enumerate(out):
        if np.isnan(v):
            out[i] = prev
        else:
            prev = float(v)
    return out
