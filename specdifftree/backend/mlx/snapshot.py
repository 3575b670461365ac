"""A Session for models whose caches are not plain ``KVCache``: sliding-window ``RotatingKVCache``
(Gemma 3, Mistral), ``ArraysCache`` (Mamba and hybrids), ``QuantizedKVCache``, ``CacheList``.

Such caches cannot be sliced into per-token segments the way :mod:`.kvstore` slices a KVCache (a
rotating window overwrites old positions, a state-space state has no positions at all). What they
can do is be copied. This Session therefore keeps whole-cache **snapshots**:

- the prompt is prefilled once; its cache is the root snapshot;
- a request for ``prompt + prefix`` starts from a copy of the snapshot of the longest stored
  prefix of ``prefix`` (the prompt's when none) and feeds only the remaining tokens; the cache
  reached after feeding a requested prefix is stored as a new snapshot (LRU, capped at
  ``kv_cache_mb``);
- rollouts decode as one batch: the per-row caches are merged with mlx-lm's own ``merge`` (into
  ``BatchRotatingKVCache``, batched ``ArraysCache``, ...), finished rows are filtered out.

Tokens re-fed because no snapshot held them are counted in ``tokens_processed`` like any other
(so ``redundancy`` > 1 shows up in the results, it is not hidden) and separately in
``stats.recomputed_tokens``; ``stats.cache_mode`` is ``"snapshot"``. Search code sees the same
API as :class:`.session.Session` (``logprobs``, ``rollout``, counters).

**Quantized KV cache** (``kv_bits``, ``kv_group_size``, ``quantized_kv_start``: the arguments of
mlx-lm's ``generate_step``). After every forward pass each layer cache that can be quantized and
holds at least ``quantized_kv_start`` positions becomes a ``QuantizedKVCache`` (mlx-lm's
``maybe_quantize_kv_cache`` rule); the prompt is prefilled as ``generate_step`` prefills it (all
but the last token in chunks, then the last token). Later feeds of several tokens are split where
the cache reaches ``quantized_kv_start``, so every position sees the cache ``generate_step``
decoding one token at a time would give it. mlx-lm has no batched quantized cache: rollouts of
several rows then decode row by row (one forward pass per row and step, all counted in
``model_calls``). ``stats.cache_mode`` is ``"snapshot+kv<bits>"``.
"""

from __future__ import annotations

import copy
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ...errors import BackendError
from ..base import Rollout, SessionStats, StatsCounters
from .loader import LoadedModel
from .sampling import decode
from .session import checked_prompt

PREFILL_CHUNK = 2048


@dataclass
class SnapshotStats(SessionStats):
    recomputed_tokens: int | None = 0  # tokens fed although this session had fed them before
    snapshots: int = 0
    cache_mode: str = "snapshot"


def cache_types(lm: LoadedModel) -> list[str]:
    from mlx_lm.models.cache import make_prompt_cache

    return [type(c).__name__ for c in make_prompt_cache(lm.model)]


def needs_snapshots(lm: LoadedModel) -> bool:
    """True when the model's caches are not all plain ``KVCache`` (which the prefix-KV Session
    handles by slicing)."""
    from mlx_lm.models.cache import KVCache, make_prompt_cache

    return not all(type(c) is KVCache for c in make_prompt_cache(lm.model))


def _nbytes(cache) -> int:
    total = 0
    for c in cache:
        try:
            total += int(c.nbytes)
        except (NotImplementedError, AttributeError, TypeError):
            from mlx.utils import tree_flatten

            total += sum(int(a.nbytes) for _, a in tree_flatten(c.state) if hasattr(a, "nbytes"))
    return total


class SnapshotSession(StatsCounters):
    """See the module docstring."""

    def __init__(self, lm: LoadedModel, prompt_tokens: Sequence[int], max_new_tokens: int = 0,
                 logprob_cache_mb: float = 64.0, kv_cache_mb: float = 1024.0,
                 kv_bits: int | None = None, kv_group_size: int = 64,
                 quantized_kv_start: int = 5000):
        import mlx.core as mx
        from mlx_lm.models.cache import make_prompt_cache

        self._mx = mx
        self.kv_bits = None if kv_bits is None else int(kv_bits)
        self.kv_group_size = int(kv_group_size)
        self.quantized_kv_start = int(quantized_kv_start)
        self.lm = lm
        self.prompt = checked_prompt(lm, prompt_tokens, max_new_tokens)
        self.eos_ids = frozenset(lm.eos_token_ids)
        self.vocab_size = lm.vocab_size
        self.stats = SnapshotStats(prompt_tokens=len(self.prompt))
        if self.kv_bits is not None:
            self.stats.cache_mode = f"snapshot+kv{self.kv_bits}"
        self._lp_cap = max(16, int(logprob_cache_mb * 2**20 / max(1, self.vocab_size * 8)))
        self._lp: OrderedDict[tuple[int, ...], np.ndarray] = OrderedDict()
        self._snap_cap = int(kv_cache_mb * 2**20)
        self._snaps: OrderedDict[tuple[int, ...], tuple[list, int]] = OrderedDict()
        self._snap_bytes = 0
        self._seen: set[int] = set()  # rolling hashes of every prompt + prefix ever fed
        cache = make_prompt_cache(lm.model)
        if self.kv_bits is None:
            for start in range(0, len(self.prompt), PREFILL_CHUNK):
                logits = self._forward(mx.array([list(self.prompt[start:start + PREFILL_CHUNK])]), cache)
        else:  # as generate_step: the body in chunks (quantized after each), then the last token
            body = self.prompt[:-1]
            for start in range(0, len(body), PREFILL_CHUNK):
                self._forward(mx.array([list(body[start:start + PREFILL_CHUNK])]), cache, split=False)
            logits = self._forward(mx.array([[self.prompt[-1]]]), cache)
            if body:  # the last token completes the last chunk's pass (as the Session counts)
                self.stats.model_calls -= 1
        self._root = cache
        self._remember((), self._to_logprobs(logits)[0])

    # ------------------------------------------------------------------ text
    def decode(self, tokens: Sequence[int]) -> str:
        return self.lm.decode(list(tokens))

    # ------------------------------------------------------------------ plumbing
    def _forward(self, tokens, cache, count: bool = True, split: bool = True):
        """Logits (float32) of the last position after feeding ``tokens`` (B, n) into ``cache``."""
        mx = self._mx
        t0 = time.perf_counter()
        last = self._run(tokens, cache, split)[:, -1, :].astype(mx.float32)
        mx.eval(last)
        self.stats.model_time_s += time.perf_counter() - t0
        self.stats.model_calls += 1
        if count:
            self.stats.tokens_processed += int(tokens.shape[0] * tokens.shape[1])
        return last

    def _run(self, tokens, cache, split: bool = True):
        """The model's logits at every fed position (lazy). With a quantized KV cache, the layer
        caches are quantized after the pass (mlx-lm's rule) and, with ``split``, a feed that
        crosses ``quantized_kv_start`` is fed in two passes at that position."""
        if self.kv_bits is None:
            return self.lm.model(tokens, cache=cache)
        n = int(tokens.shape[1])
        offset = next((c.offset for c in cache if hasattr(c, "to_quantized")), None)
        cut = self.quantized_kv_start - offset if offset is not None else 0
        if split and 0 < cut < n:
            first = self.lm.model(tokens[:, :cut], cache=cache)
            self._quantize(cache)
            return self._mx.concatenate([first, self._run(tokens[:, cut:], cache, False)], axis=1)
        out = self.lm.model(tokens, cache=cache)
        self._quantize(cache)
        return out

    def _quantize(self, cache) -> None:
        """mlx-lm's ``maybe_quantize_kv_cache``: in place, layer caches holding at least
        ``quantized_kv_start`` positions become ``QuantizedKVCache``."""
        for i, c in enumerate(cache):
            if hasattr(c, "to_quantized") and c.offset >= self.quantized_kv_start:
                try:
                    cache[i] = c.to_quantized(group_size=self.kv_group_size, bits=self.kv_bits)
                except NotImplementedError:
                    raise BackendError(
                        f"backend.kv_bits={self.kv_bits}: model {self.lm.name} uses "
                        f"{type(c).__name__}, which mlx-lm cannot quantize; set backend.kv_bits=null") from None
                except ValueError as exc:
                    raise BackendError(
                        f"backend.kv_bits={self.kv_bits}, backend.kv_group_size={self.kv_group_size}: "
                        f"the KV cache of model {self.lm.name} cannot be quantized so "
                        f"({str(exc).splitlines()[0]}); use a kv_group_size that divides its head "
                        "dimension (32, 64 or 128)") from None

    def _to_logprobs(self, logits) -> np.ndarray:
        """Log-probs on the host; evaluating and copying them waits for the device (model time)."""
        mx = self._mx
        t0 = time.perf_counter()
        out = np.array(logits - mx.logsumexp(logits, axis=-1, keepdims=True), dtype=np.float64)
        self.stats.model_time_s += time.perf_counter() - t0
        return out

    def _remember(self, key, lp) -> None:
        self._lp[key] = lp
        self._lp.move_to_end(key)
        while len(self._lp) > self._lp_cap:
            oldest = next(iter(self._lp))
            if oldest == ():
                self._lp.move_to_end(())
                continue
            self._lp.popitem(last=False)

    @staticmethod
    def _hash(prefix: Sequence[int], h: int = 0) -> int:
        for t in prefix:
            h = hash((h, int(t)))
        return h

    def _mark(self, h: int, tokens: Sequence[int]) -> None:
        """Count tokens fed after the prefix with rolling hash ``h`` that were fed before."""
        for t in tokens:
            h = hash((h, int(t)))
            if h in self._seen:
                self.stats.recomputed_tokens += 1
            else:
                self._seen.add(h)

    def _store(self, prefix: tuple[int, ...], cache) -> None:
        if not prefix or self._snap_cap <= 0 or prefix in self._snaps:
            return
        snap = copy.deepcopy(cache)
        n = _nbytes(snap)
        if n > self._snap_cap:
            return
        self._snaps[prefix] = (snap, n)
        self._snap_bytes += n
        self.stats.snapshots += 1
        while self._snap_bytes > self._snap_cap:
            _, (_, m) = self._snaps.popitem(last=False)
            self._snap_bytes -= m

    def _start(self, prefix: tuple[int, ...]):
        """A private cache holding prompt + ``prefix[:d]`` (from the longest stored snapshot)."""
        for d in range(len(prefix), 0, -1):
            hit = self._snaps.get(prefix[:d])
            if hit is not None:
                self._snaps.move_to_end(prefix[:d])
                return copy.deepcopy(hit[0]), d
        return copy.deepcopy(self._root), 0

    def _row_cache(self, prefix: tuple[int, ...]):
        """(cache after prompt + prefix, next-token log-probs after it)."""
        mx = self._mx
        lp = self._lp.get(prefix)
        if not prefix:
            return copy.deepcopy(self._root), lp
        cache, d = self._start(prefix)
        if d == len(prefix) and lp is not None:
            return cache, lp
        if d == len(prefix):  # state present, log-probs evicted: recompute from one token back
            cache, d = self._start(prefix[:-1])
        feed = list(prefix[d:])
        self._mark(self._hash(prefix[:d]), feed)
        out = self._to_logprobs(self._forward(mx.array([feed]), cache))[0]
        self._remember(prefix, out)
        self._store(prefix, cache)
        return cache, out

    def _check_prefix(self, prefix) -> tuple[int, ...]:
        p = tuple(int(t) for t in prefix)
        if any(t in self.eos_ids for t in p):
            raise ValueError(f"continuation {p} contains EOS; nothing can follow it")
        return p

    # ------------------------------------------------------------------ public API
    def logprobs(self, prefixes: Sequence[Sequence[int]]) -> np.ndarray:
        """Next-token log-probs (temperature 1) after prompt + each prefix; shape (B, V)."""
        ps = [self._check_prefix(p) for p in prefixes]
        if not ps:
            return np.zeros((0, self.vocab_size))
        found = {}
        for p in dict.fromkeys(ps):
            lp = self._lp.get(p)
            if lp is None:
                _, lp = self._row_cache(p)
            else:
                self._lp.move_to_end(p)
            found[p] = lp
        return np.stack([found[p] for p in ps])

    def topk(self, prefixes: Sequence[Sequence[int]], k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k most likely next tokens after each prefix: ``(ids, logprobs)``, each (B, k),
        largest first, ties broken by the lower id (as :meth:`.session.Session.topk`)."""
        B, k = len(prefixes), max(0, min(int(k), self.vocab_size))
        if B == 0 or k == 0:
            return np.zeros((B, 0), dtype=np.int64), np.zeros((B, 0))
        lp = self.logprobs(prefixes)
        ids = np.stack([np.lexsort((np.arange(row.size), -row))[:k] for row in lp]).astype(np.int64)
        return ids, np.take_along_axis(lp, ids, axis=-1)

    def rollout(self, prefixes: Sequence[Sequence[int]], max_new_tokens: int, *,
                temperature: float = 1.0, rng: np.random.Generator | None = None,
                top_k: int = 0, top_p: float = 1.0):
        """Generate from each prefix at once (one batched forward pass per step)."""
        mx = self._mx
        if rng is None:
            if temperature > 0:
                raise ValueError("sampling with temperature > 0 needs an rng")
            rng = np.random.default_rng(0)
        prefixes = [self._check_prefix(p) for p in prefixes]
        B = len(prefixes)
        if B == 0 or max_new_tokens <= 0:
            return [Rollout(p, [], [], False) for p in prefixes]
        rows = [self._row_cache(p) for p in prefixes]
        hashes = [self._hash(p) for p in prefixes]
        # quantized caches have no batched form in mlx-lm: one cache (and pass) per row
        rowwise = self.kv_bits is not None and B > 1
        if B == 1:
            cache = rows[0][0]
        elif rowwise:
            caches = [c for c, _ in rows]
        else:
            cache = [type(rows[0][0][layer]).merge([c[layer] for c, _ in rows])
                     for layer in range(len(rows[0][0]))]
        lps = np.stack([lp for _, lp in rows])

        def advance(active, done_rows, keep_rows, seqs):
            if not keep_rows:
                return None
            if rowwise:
                ids = [active[r] for r in keep_rows]
                out = np.stack([self._to_logprobs(self._forward(mx.array([[seqs[i][-1]]]), caches[i]))[0]
                                for i in ids])
                for r, i in enumerate(ids):
                    self._remember(prefixes[i] + tuple(seqs[i]), out[r])
                    self._mark(hashes[i], seqs[i][-1:])
                    hashes[i] = hash((hashes[i], int(seqs[i][-1])))
                return out
            if done_rows and B > 1:
                idx = mx.array(keep_rows)
                for c in cache:
                    c.filter(idx)
            ids = [active[r] for r in keep_rows]
            out = self._to_logprobs(self._forward(mx.array([[seqs[i][-1]] for i in ids]), cache))
            for r, i in enumerate(ids):
                self._remember(prefixes[i] + tuple(seqs[i]), out[r])
                self._mark(hashes[i], seqs[i][-1:])
                hashes[i] = hash((hashes[i], int(seqs[i][-1])))
            return out

        seqs, seq_lps, finished = decode(lps, max_new_tokens, self.eos_ids, advance,
                                         temperature=temperature, rng=rng, top_k=top_k, top_p=top_p)
        if temperature == 1.0 and not top_k and top_p >= 1.0:
            self.stats.plain_logprob_sum += float(sum(sum(x) for x in seq_lps))
            self.stats.plain_tokens += sum(len(x) for x in seq_lps)
        return [Rollout(prefixes[i], seqs[i], seq_lps[i], finished[i]) for i in range(B)]

    def sequence_logprob(self, tokens: Sequence[int]) -> tuple[float, int]:
        """Sum of log p_θ(tokens) after the prompt (temperature 1) and the tokens fed for it
        (counted in ``stats.eval_tokens``, not in ``tokens_processed``)."""
        toks = [int(t) for t in tokens]
        total = 0.0
        for i, t in enumerate(toks):
            lp = self._lp.get(tuple(toks[:i]))
            if lp is None:
                break
            total += float(lp[t])
        else:
            return total, 0
        mx = self._mx
        cache = copy.deepcopy(self._root)
        feed = toks[:-1]
        t0 = time.perf_counter()
        out = self._run(mx.array([feed]), cache)[0].astype(mx.float32)
        lp_all = out - mx.logsumexp(out, axis=-1, keepdims=True)
        mx.eval(lp_all)
        self.stats.model_time_s += time.perf_counter() - t0
        self.stats.eval_tokens += len(feed)
        lp_np = np.array(lp_all, dtype=np.float64)
        total = float(self._lp[()][toks[0]]) + float(sum(lp_np[i, t] for i, t in enumerate(toks[1:])))
        return total, len(feed)


def check_kv_quantization(lm: LoadedModel, kv_bits: int, kv_group_size: int) -> None:
    """Raise :class:`ConfigError` (one line) when ``lm``'s KV cache cannot be quantized so:
    one token is fed into a cache quantized from the start."""
    from ...errors import ConfigError

    s = SnapshotSession.__new__(SnapshotSession)
    s.lm, s.kv_bits, s.kv_group_size, s.quantized_kv_start = lm, int(kv_bits), int(kv_group_size), 0
    import mlx.core as mx
    from mlx_lm.models.cache import make_prompt_cache

    cache = make_prompt_cache(lm.model)
    try:
        s._run(mx.array([[0]]), cache)  # fills the cache, then quantizes it
    except BackendError as exc:
        raise ConfigError(str(exc)) from None
    try:
        mx.eval(s._run(mx.array([[0]]), cache))  # attention over the quantized cache
    except (ValueError, RuntimeError) as exc:
        raise ConfigError(f"backend.kv_bits={kv_bits}, backend.kv_group_size={kv_group_size}: "
                           f"model {lm.name} cannot attend over the quantized cache "
                           f"({str(exc).splitlines()[0]})") from None


def open_session(lm: LoadedModel, prompt_tokens: Sequence[int], kv_bits: int | None = None,
                 kv_group_size: int = 64, quantized_kv_start: int = 5000, **kwargs):
    """The Session for ``lm``: the prefix-KV :class:`.session.Session` for plain-KVCache models,
    :class:`SnapshotSession` for every other mlx-lm cache type and for a quantized KV cache
    (``kv_bits`` not None)."""
    if kv_bits is not None or needs_snapshots(lm):
        return SnapshotSession(lm, prompt_tokens, kv_bits=kv_bits, kv_group_size=kv_group_size,
                               quantized_kv_start=quantized_kv_start, **kwargs)
    from .session import Session

    return Session(lm, prompt_tokens, **kwargs)
