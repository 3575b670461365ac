"""Test double (not part of the package): a toy table language model behind the
:class:`specdifftree.backend.base.Session` protocol, for tests and small experiments.

:class:`TableLM` gives next-token log-probabilities for any prefix, from a function or a seeded
random table (a Dirichlet draw per prefix, derived from the prefix itself, so the table is
infinite, lazy and reproducible). :class:`TableSession` answers ``logprobs`` and ``rollout``
exactly like :class:`specdifftree.backend.mlx.session.Session` — same sampling code
(:func:`specdifftree.backend.mlx.sampling.decode`, same random stream), same caching and the same
token accounting:

- the prompt is prefilled once at construction (``prompt_tokens`` tokens, one model call);
- every token fed is remembered as the Session's prefix KV store does (no cap): a prefix costs
  only the tokens beyond its longest fed prefix, and nothing when its log-probs are cached
  (every prefix a rollout passed through);
- ``logprobs`` feeds the missing prefixes in one call per (fed depth, missing length) group;
  ``rollout`` feeds the missing tokens of its rows in one call when they all share that group
  (else one call per row), then every generated token except the last one (EOS or the
  ``max_new_tokens``-th), one call per step for the whole batch.

:func:`enumerate_sequences` and :func:`exact_target` give the complete continuations of a small
space and the exact target π(x) ∝ p_θ(x)·exp(λ·r(x)), for correctness tests.
"""

from __future__ import annotations

from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from specdifftree.backend.base import Rollout, SessionStats, StatsCounters
from specdifftree.backend.mlx.sampling import decode
from specdifftree.search.numerics import logsumexp

Prefix = tuple[int, ...]


class TableLM:
    """Next-token log-probs for every prefix: ``lm(prefix) -> (V,) float64 log-probs``."""

    def __init__(self, fn: Callable[[Prefix], Sequence[float]], vocab_size: int,
                 eos_ids: Iterable[int] = (0,)):
        self.vocab_size = int(vocab_size)
        self.eos_ids = frozenset(int(t) for t in eos_ids)
        self._fn = fn
        self._memo: dict[Prefix, np.ndarray] = {}

    def __call__(self, prefix: Sequence[int]) -> np.ndarray:
        p = tuple(int(t) for t in prefix)
        lp = self._memo.get(p)
        if lp is None:
            lp = np.asarray(self._fn(p), dtype=np.float64).reshape(-1)
            if lp.shape != (self.vocab_size,):
                raise ValueError(f"table row for {p} has shape {lp.shape}, expected ({self.vocab_size},)")
            if abs(logsumexp(lp)) > 1e-9:
                raise ValueError(f"table row for {p} is not normalised (logsumexp = {logsumexp(lp)})")
            self._memo[p] = lp
        return lp

    @classmethod
    def random(cls, vocab_size: int = 3, eos_ids: Iterable[int] = (0,), seed: int = 0,
               alpha: float = 1.0, zero_prob: float = 0.0) -> "TableLM":
        """Seeded random table: each prefix's row is a Dirichlet(α) draw seeded by (seed, prefix).

        ``zero_prob``: chance that a non-EOS token gets probability exactly 0 (log-prob -inf) in
        a row (never all of them), to exercise -inf handling.
        """
        eos = tuple(int(t) for t in eos_ids)

        def row(prefix: Prefix) -> np.ndarray:
            rng = np.random.default_rng([int(seed), len(prefix), *prefix])
            p = rng.dirichlet(np.full(vocab_size, float(alpha)))
            lp = np.log(np.maximum(p, 1e-300))  # a Dirichlet draw can underflow to 0
            if zero_prob > 0:
                drop = rng.random(vocab_size) < zero_prob
                drop[list(eos)] = False
                if drop.sum() < vocab_size - 1:
                    lp[drop] = -np.inf
            return lp - logsumexp(lp)

        return cls(row, vocab_size, eos)

    @classmethod
    def fixed(cls, probs: Sequence[float], eos_ids: Iterable[int] = (0,)) -> "TableLM":
        """The same next-token distribution after every prefix."""
        with np.errstate(divide="ignore"):
            lp = np.log(np.asarray(probs, dtype=np.float64))
        lp = lp - logsumexp(lp)
        return cls(lambda _p: lp, len(lp), eos_ids)


def numpy_decode(lp: np.ndarray, max_new_tokens: int, eos_ids, advance, *, temperature: float,
                 rng: np.random.Generator, top_k: int = 0, top_p: float = 1.0):
    """:func:`specdifftree.backend.mlx.sampling.decode` on the host: the same loop, rows and
    ``advance`` protocol (so the same token accounting), with tokens drawn by Gumbel-max in numpy
    float64 from ``rng`` itself (no MLX; a different random stream, the same law). Temperature 0
    is the argmax (ties: lowest id). No top-k / top-p truncation."""
    if top_k or top_p < 1.0:
        raise ValueError("numpy_decode has no top-k / top-p truncation")

    def pick(lp, step):
        if temperature > 0:
            z = lp if temperature == 1.0 else lp / float(temperature)
            return np.argmax(z + rng.gumbel(size=z.shape), axis=-1)
        return np.argmax(lp, axis=-1)

    return decode(lp, max_new_tokens, eos_ids, advance, temperature=temperature, rng=rng, pick=pick)


class TableSession(StatsCounters):
    """A :class:`TableLM` behind the Session interface (see the module docstring).

    ``sampler``: ``"mlx"`` draws rollout tokens exactly as the model Session does (same code,
    same random stream); ``"numpy"`` with :func:`numpy_decode` (no MLX needed, faster on the host;
    the same law and the same token accounting) — for benchmarks that only need the law."""

    def __init__(self, lm: TableLM, prompt_tokens: int = 8, sampler: str = "mlx"):
        if sampler not in ("mlx", "numpy"):
            raise ValueError(f"sampler={sampler!r}: must be mlx or numpy")
        self._decode = numpy_decode if sampler == "numpy" else None
        self.lm = lm
        self.eos_ids = lm.eos_ids
        self.vocab_size = lm.vocab_size
        self.stats = SessionStats(model_calls=1, tokens_processed=int(prompt_tokens),
                                  prompt_tokens=int(prompt_tokens), cache_mode="table")
        self._lp: dict[Prefix, np.ndarray] = {(): lm(())}
        self._covered: set[Prefix] = set()  # prefixes whose KV the Session would hold

    def decode(self, tokens: Sequence[int]) -> str:
        return " ".join(str(int(t)) for t in tokens)

    def _check(self, prefix) -> Prefix:
        p = tuple(int(t) for t in prefix)
        if any(t in self.eos_ids for t in p):
            raise ValueError(f"continuation {p} contains EOS; nothing can follow it")
        return p

    def _plan(self, prefix: Prefix) -> tuple[int, int]:
        """(d, m): the KV of ``prefix[:d]`` is held (longest covered prefix, as the Session's
        prefix store finds it) and m tokens must be fed (0 when the log-probs are cached)."""
        if prefix in self._lp:
            return len(prefix), 0
        d = len(prefix)
        while d and prefix[:d] not in self._covered:
            d -= 1
        if d == len(prefix):  # covered but log-probs unknown: the Session refeeds the last token
            d -= 1
        return d, len(prefix) - d

    def _cover(self, seq: Prefix) -> None:
        for k in range(1, len(seq) + 1):
            self._covered.add(seq[:k])

    def _feed_group(self, prefixes: list[Prefix], m: int) -> None:
        """Feed the missing m tokens of each prefix in one call (rows share d and m)."""
        if m:
            self.stats.tokens_processed += m * len(prefixes)
            self.stats.model_calls += 1
        for p in prefixes:
            self._lp.setdefault(p, self.lm(p))
            self._cover(p)

    def logprobs(self, prefixes: Sequence[Sequence[int]]) -> np.ndarray:
        ps = [self._check(p) for p in prefixes]
        if not ps:
            return np.zeros((0, self.vocab_size))
        groups: dict[tuple[int, int], list[Prefix]] = {}
        for p in dict.fromkeys(p for p in ps if p not in self._lp):
            groups.setdefault(self._plan(p), []).append(p)
        for (_, m), rows in groups.items():  # one call per (covered depth, missing length)
            self._feed_group(rows, m)
        return np.stack([self._lp[p] for p in ps])

    def topk(self, prefixes: Sequence[Sequence[int]], k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k most likely next tokens after each prefix, largest first (ties: lower id), from
        the full rows of :meth:`logprobs` (same accounting)."""
        B, k = len(prefixes), max(0, min(int(k), self.vocab_size))
        if B == 0 or k == 0:
            return np.zeros((B, 0), dtype=np.int64), np.zeros((B, 0))
        lp = self.logprobs(prefixes)
        ids = np.stack([np.lexsort((np.arange(row.size), -row))[:k] for row in lp]).astype(np.int64)
        return ids, np.take_along_axis(lp, ids, axis=-1)

    def sequence_logprob(self, tokens: Sequence[int]) -> tuple[float, int]:
        """log p_θ(tokens) from the table; the tokens whose rows were never fed count in
        ``stats.eval_tokens`` (as the model Session scores them with one extra pass)."""
        toks = tuple(int(t) for t in tokens)
        if all(toks[:i] in self._lp for i in range(len(toks))):
            return float(sum(self._lp[toks[:i]][t] for i, t in enumerate(toks))), 0
        self.stats.eval_tokens += max(0, len(toks) - 1)
        return float(sum(self.lm(toks[:i])[t] for i, t in enumerate(toks))), max(0, len(toks) - 1)

    def rollout(self, prefixes: Sequence[Sequence[int]], max_new_tokens: int, *,
                temperature: float = 1.0, rng: np.random.Generator | None = None,
                top_k: int = 0, top_p: float = 1.0) -> list:
        if rng is None:
            if temperature > 0:
                raise ValueError("sampling with temperature > 0 needs an rng")
            rng = np.random.default_rng(0)
        prefixes = [self._check(p) for p in prefixes]
        B = len(prefixes)
        if B == 0 or max_new_tokens <= 0:
            return [Rollout(p, [], [], False) for p in prefixes]
        plans = [self._plan(p) for p in prefixes]
        if len(set(plans)) == 1:  # one batch: one call for the missing tokens
            self._feed_group(prefixes, plans[0][1])
        else:  # mixed rows are prepared one by one
            for p, (_, m) in zip(prefixes, plans):
                self._feed_group([p], m)
        lp = np.stack([self._lp[p] for p in prefixes])

        def advance(active, done_rows, keep_rows, seqs):
            for r in done_rows:
                self._cover(prefixes[active[r]] + tuple(seqs[active[r]][:-1]))
            if not keep_rows:
                return None
            self.stats.tokens_processed += len(keep_rows)
            self.stats.model_calls += 1
            rows = []
            for r in keep_rows:
                p = prefixes[active[r]] + tuple(seqs[active[r]])
                self._lp[p] = self.lm(p)
                rows.append(self._lp[p])
            return np.stack(rows)

        seqs, seq_lps, finished = (self._decode or decode)(
            lp, max_new_tokens, self.eos_ids, advance, temperature=temperature, rng=rng,
            top_k=top_k, top_p=top_p)
        return [Rollout(prefixes[i], seqs[i], seq_lps[i], finished[i]) for i in range(B)]


def enumerate_sequences(lm: TableLM, max_len: int) -> tuple[list[Prefix], np.ndarray]:
    """All complete continuations with p_θ > 0 (ending in EOS or of length ``max_len``) and their
    log-probabilities, in depth-first order."""
    seqs: list[Prefix] = []
    logps: list[float] = []

    def walk(prefix: Prefix, logp: float) -> None:
        lp = lm(prefix)
        for t in range(lm.vocab_size):
            if not np.isfinite(lp[t]):
                continue
            s = prefix + (t,)
            if t in lm.eos_ids or len(s) >= max_len:
                seqs.append(s)
                logps.append(logp + float(lp[t]))
            else:
                walk(s, logp + float(lp[t]))

    walk((), 0.0)
    return seqs, np.asarray(logps)


def exact_target(seqs: Sequence[Prefix], logps: np.ndarray, rewards: np.ndarray,
                 lam: float) -> dict[Prefix, float]:
    """π(x) = p_θ(x)·exp(λ·r(x)) / Z over the enumerated continuations, computed in log space."""
    logw = np.asarray(logps, dtype=np.float64) + float(lam) * np.asarray(rewards, dtype=np.float64)
    z = logsumexp(logw)
    return {s: float(np.exp(w - z)) for s, w in zip(seqs, logw)}


def soft_value(logps: np.ndarray, rewards: np.ndarray, lam: float) -> float:
    """V(root) = (1/λ)·log Σ_x p_θ(x)·exp(λ·r(x)) over the enumerated continuations."""
    return logsumexp(np.asarray(logps) + lam * np.asarray(rewards)) / lam


def table_reward(table: Mapping[Prefix, float], default: float = 0.0) -> Callable:
    """A batched reward function over token tuples from a dict (for tests)."""
    def fn(seqs):
        return np.array([table.get(tuple(s), default) for s in seqs], dtype=np.float64)
    return fn
