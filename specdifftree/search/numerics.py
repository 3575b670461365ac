"""Log-space numerics shared by the search methods.

Everything that mixes probabilities and rewards is done with log-weights: ``logsumexp`` for soft
values and normalisers, ``log1mexp`` for "the probability mass that is left", Gumbel-max for
sampling. There are no "add epsilon and renormalise" fallbacks: a weight of exactly zero is
``-inf`` and can never be drawn, and a row with no finite weight is reported (index -1) instead of
being patched up.
"""

from __future__ import annotations

import math

import numpy as np

LN2 = math.log(2.0)


def logsumexp(x) -> float:
    """log Σ exp(x) of a 1-D array; ``-inf`` for an empty array or all ``-inf`` entries."""
    a = np.asarray(x, dtype=np.float64).reshape(-1)
    if a.size == 0:
        return -math.inf
    m = float(a.max())  # ndarray methods: the search calls this on tiny arrays, often
    if not math.isfinite(m):
        return m  # -inf (nothing), +inf, or nan: nothing to rescale
    return m + math.log(float(np.exp(a - m).sum()))


def logsumexp_pairs(pairs) -> list[float]:
    """:func:`logsumexp` of each pair of floats, with one ``np.exp`` call for all of them: the
    same maximum, differences, exponentials (numpy's, elementwise), sum and ``math.log`` as
    ``logsumexp(np.array(pair))``, so the same result to the bit."""
    ms, diffs = [], []
    for u, v in pairs:
        m = math.nan if u != u or v != v else (u if u >= v else v)  # as ndarray.max
        ms.append(m)
        if math.isfinite(m):
            diffs += (u - m, v - m)
    e = np.exp(np.array(diffs)) if diffs else ()
    out, i = [], 0
    for m in ms:
        if math.isfinite(m):
            out.append(m + math.log(float(e[i] + e[i + 1])))
            i += 2
        else:
            out.append(m)
    return out


def log1mexp(a: float) -> float:
    """log(1 - exp(a)) for a <= 0, accurate over the whole range (Mächler 2012).

    ``a == 0`` gives ``-inf``; ``a > 0`` (a "probability" above one) is a caller error.
    """
    a = float(a)
    if a > 0:
        raise ValueError(f"log1mexp needs a <= 0, got {a}")
    if a == 0.0:
        return -math.inf
    if a > -LN2:
        return math.log(-math.expm1(a))
    return math.log1p(-math.exp(a))


def gumbel_argmax(logw, rng: np.random.Generator) -> int:
    """Index drawn with probability ∝ exp(logw) (Gumbel-max); -1 when no weight is finite.

    One Gumbel variate is consumed per entry, so the random stream does not depend on the values.
    """
    lw = np.asarray(logw, dtype=np.float64).reshape(-1)
    if lw.size == 0:
        return -1
    g = rng.gumbel(size=lw.shape)
    ok = np.isfinite(lw)
    if not ok.any():
        return -1
    return int(np.argmax(np.where(ok, lw + g, -np.inf)))


def gumbel_topk(logw, k: int, rng: np.random.Generator) -> np.ndarray:
    """k distinct indices drawn without replacement ∝ exp(logw) (Gumbel-top-k), in draw order.

    Entries with ``-inf`` weight are never drawn, so fewer than k may come back.
    """
    lw = np.asarray(logw, dtype=np.float64).reshape(-1)
    g = rng.gumbel(size=lw.shape)
    ok = np.isfinite(lw)
    keys = np.where(ok, lw + g, -np.inf)
    order = np.argsort(-keys, kind="stable")
    return order[: min(int(k), int(ok.sum()))]


def topk_finite(logw, k: int) -> np.ndarray:
    """Indices of the k largest finite entries, largest first (ties: lower index first)."""
    lw = np.asarray(logw, dtype=np.float64).reshape(-1)
    ok = np.isfinite(lw)
    order = np.lexsort((np.arange(lw.size), -np.where(ok, lw, -np.inf)))
    return order[: min(int(k), int(ok.sum()))]


def topk_next(session, prefixes, k: int, scores=None) -> list[tuple[list[int], list[float]]]:
    """Per prefix, the k most likely next tokens with p_θ > 0 and their log-probs, largest first
    (ties: lower id first) — what an expansion reads. A model Session answers on the device
    (``session.topk``: only k entries per row reach the host); other sessions (the toy table-LM)
    from their full log-prob rows with :func:`topk_finite`. ``scores``: a beam step (the
    cumulative log-prob of each prefix), passed on to a Session that computes the beam's next
    step ahead (``beam_lookahead``); it changes no result."""
    if hasattr(session, "topk"):
        if scores is not None and getattr(session, "beam_lookahead", False):
            ids, vals = session.topk(prefixes, k, scores=scores)
        else:
            ids, vals = session.topk(prefixes, k)
        return [([int(a) for a, v in zip(i, lv) if math.isfinite(v)],
                 [float(v) for v in lv if math.isfinite(v)]) for i, lv in zip(ids, vals)]
    out = []
    for lp in session.logprobs(prefixes):
        idx = topk_finite(lp, k)
        out.append(([int(a) for a in idx], [float(lp[a]) for a in idx]))
    return out


def expansion_tokens(session, prefix, k: int) -> tuple[list[int], list[float]]:
    """The children an expansion with cap ``k`` adds after ``prefix``: the k most likely next
    tokens (:func:`topk_next`), or with ``k`` 0 (no cap) every token with p_θ > 0, most likely
    first (ties: lower id first)."""
    if k:
        return topk_next(session, [prefix], k)[0]
    lp = np.asarray(session.logprobs([prefix])[0], dtype=np.float64)
    idx = topk_finite(lp, lp.size)
    return [int(a) for a in idx], [float(lp[a]) for a in idx]


def minmax_normalise(v, lo: float, hi: float) -> np.ndarray:
    """(v - lo) / (hi - lo), or 0.5 everywhere while the range is empty (one reward seen)."""
    v = np.asarray(v, dtype=np.float64)
    if not hi > lo:
        return np.full(v.shape, 0.5)
    return (v - lo) / (hi - lo)
