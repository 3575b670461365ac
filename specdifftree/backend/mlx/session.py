"""Per-sample model session: the prompt is prefilled once; search code asks batched questions.

A :class:`Session` is created for one prompt. It owns the prompt's KV cache and answers

- :meth:`Session.logprobs` — next-token log-probabilities (temperature 1) after each of a batch of
  continuations of the prompt;
- :meth:`Session.rollout` — batched generation from each of a batch of continuations (greedy or
  sampled with temperature / top-k / top-p), stopping at EOS or ``max_new_tokens``.

Token accounting (``tokens_processed``) counts tokens actually pushed through the model: the prompt
once, then every continuation or generated token that is fed. Cached tokens are never counted. A
rollout of G tokens feeds G-1 of them: the last sampled token (or EOS) needs no forward pass.
``model_calls`` counts forward passes; a batched forward pass is one call, and the prompt
prefill one call per chunk of ``PREFILL_CHUNK`` tokens (its last token is fed on its own, as
mlx-lm does, so that vocabulary-size logits are computed for that position only).

Search code never touches the model: everything goes through this object, which is what lets the
search library run on a toy table-LM in tests (the test double ``tests/toy_session.py``).

Per-token work stays on the device. Next-token log-probs are computed, kept and sampled from as
MLX arrays (:mod:`specdifftree.backend.mlx.sampling`); only the chosen token ids and their log-probs
cross to the host during a rollout, and a full vocabulary-size vector is copied to the host only
when search code asks for it (:meth:`Session.logprobs`) or for its top-k entries
(:meth:`Session.topk`). The log-prob cache holds device rows (a reference to the batched step's
array and a row index, ``backend.logprob_cache_mb`` at 4 bytes per vocabulary entry; a row that
is read again is copied out of its batch, so that kept rows do not pin whole batch arrays). Decoding is
pipelined as mlx-lm's ``generate_step`` is: the forward pass of step t+1 is queued
(``mx.async_eval``) before the host reads step t's tokens; a row that then turns out to have
ended at EOS had one token fed ahead for nothing (``stats.speculative_tokens``, not in
``tokens_processed``). ``stats.model_time_s`` is the time spent building the model's graph plus
the time the host is blocked on the device (evaluations, and reads of device values such as a
batch cache's padding, which wait for the queued steps).
"""

from __future__ import annotations

import math
import time
from typing import Sequence

import numpy as np

from ...errors import BackendError
from ..base import Rollout, SessionStats, StatsCounters
from .loader import LoadedModel
from .kv_builder import build, gather_rows, is_batch, take_rows
from .kvstore import PrefixKVStore
from .logprob_cache import LogprobCache
from .sampling import sample, step_keys


PREFILL_CHUNK = 2048  # prompt tokens per forward pass during prefill


def checked_prompt(lm: LoadedModel, prompt_tokens: Sequence[int], max_new_tokens: int) -> tuple:
    """The prompt as a tuple of ints; BackendError when it is empty or it and ``max_new_tokens``
    do not fit the model's context."""
    prompt = tuple(int(t) for t in prompt_tokens)
    if not prompt:
        raise BackendError("the prompt is empty")
    if lm.max_context and len(prompt) + max_new_tokens > lm.max_context:
        raise BackendError(
            f"prompt of {len(prompt)} tokens + {max_new_tokens} new tokens exceeds the "
            f"model's context of {lm.max_context} tokens (shorten dataset.context_length)")
    return prompt


class Session(StatsCounters):
    """See the module docstring."""

    def __init__(self, lm: LoadedModel, prompt_tokens: Sequence[int], max_new_tokens: int = 0,
                 logprob_cache_mb: float = 64.0, kv_cache_mb: float = 1024.0):
        import mlx.core as mx
        from mlx_lm.models.cache import make_prompt_cache

        self._mx = mx
        self.lm = lm
        self.prompt = checked_prompt(lm, prompt_tokens, max_new_tokens)
        self.eos_ids = frozenset(lm.eos_token_ids)
        self.vocab_size = lm.vocab_size
        self.stats = SessionStats(prompt_tokens=len(self.prompt))
        per_entry = max(1, self.vocab_size * 4)  # float32 device rows
        # prefix -> (MLX (B, V) log-prob array of one forward pass, row)
        self._lp = LogprobCache(max(16, int(logprob_cache_mb * 2**20 / per_entry)))
        self._remember, self._row = self._lp.remember, self._lp.row
        self._prompt_cache = make_prompt_cache(lm.model)
        self._check_cache_types(self._prompt_cache)
        self._kv = PrefixKVStore(int(kv_cache_mb * 2**20)) if kv_cache_mb > 0 else None
        # the batch cache of the last log-prob query and its rows (prefix -> row): a query whose
        # prefixes all extend these rows by one token (a beam step) gathers them in one take per
        # layer instead of reassembling each row from the prefix store
        self._hot = None
        # a beam step queued ahead by ``topk(..., scores=...)``, or None (see ``_queue_beam_step``)
        self._ahead = None
        # prefill in chunks (as mlx-lm does) so attention memory stays bounded for long prompts;
        # as in mlx-lm, all but the last prompt token only fill the KV cache (no vocabulary-size
        # logits for every prompt position), and the last one gives the first distribution
        body = self.prompt[:-1]
        for start in range(0, len(body), PREFILL_CHUNK):
            chunk = list(body[start:start + PREFILL_CHUNK])
            t0 = time.perf_counter()
            self.lm.model(mx.array([chunk]), cache=self._prompt_cache)
            mx.eval([c.state for c in self._prompt_cache])
            self.stats.model_time_s += time.perf_counter() - t0
            self.stats.model_calls += 1
            self.stats.tokens_processed += len(chunk)
        lp = self._forward(mx.array([[self.prompt[-1]]]), self._prompt_cache)
        if body:  # the last token completes the last chunk's pass: one prefill call per chunk
            self.stats.model_calls -= 1
        self._wait(lp)
        self._remember((), lp, 0)

    def _check_cache_types(self, cache) -> None:
        """The Session stores and reassembles KV rows of plain ``KVCache`` layers only."""
        from mlx_lm.models.cache import KVCache

        kinds = {type(c).__name__ for c in cache}
        if kinds != {"KVCache"} or not all(type(c) is KVCache for c in cache):
            raise BackendError(f"model {self.lm.name} uses cache type(s) {sorted(kinds)}; the Session "
                               "supports models with a plain KVCache (Llama, Qwen, Mistral, Phi, ...)")

    # ------------------------------------------------------------------ text
    def decode(self, tokens: Sequence[int]) -> str:
        return self.lm.decode(list(tokens))

    # ------------------------------------------------------------------ model plumbing
    def _forward(self, tokens, cache, count: bool = True):
        """One forward pass (lazy): next-token log-probs of the last position, (B, V) float32.

        ``count``: add every fed token to ``tokens_processed`` (the pipelined decode loop counts
        its rows itself)."""
        mx = self._mx
        t0 = time.perf_counter()
        logits = self.lm.model(tokens, cache=cache)[:, -1, :].astype(mx.float32)
        lp = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
        self.stats.model_time_s += time.perf_counter() - t0
        self.stats.model_calls += 1
        if count:
            self.stats.tokens_processed += int(tokens.shape[0] * tokens.shape[1])
        return lp

    def _wait(self, *arrays) -> None:
        """Evaluate (block on) device arrays; the wait counts as model time."""
        t0 = time.perf_counter()
        self._mx.eval(*arrays)
        self.stats.model_time_s += time.perf_counter() - t0

    def _host_ints(self, arr) -> list[int]:
        """A small device array read on the host (it waits for queued work: model time)."""
        return [int(x) for x in self._read(arr)[0]]

    def _read(self, *arrays) -> list[np.ndarray]:
        """Device arrays evaluated and copied to the host (NumPy), the wait and the copy counted
        as model time. On the CUDA backend the copy is where the host waits: right after the
        evaluation of a decode step's tokens had returned, ``tolist()`` of those 20 tokens took
        1.4 ms per step (H100, mcts with 20 parallel rollouts; docs/performance.md)."""
        t0 = time.perf_counter()
        self._mx.eval(*arrays)
        out = [np.array(a) for a in arrays]
        self.stats.model_time_s += time.perf_counter() - t0
        return out

    def _plan(self, prefix: tuple[int, ...]):
        """How to get prompt + ``prefix`` into a cache: ``(entry, d, lp)``.

        The KV of ``prefix[:d]`` is in the stored ``entry`` (None when d = 0); ``lp`` is the cached
        next-token log-prob row after ``prefix`` when nothing needs computing, else None and
        ``prefix[d:]`` must be fed.
        """
        lp = self._row(prefix)
        if not prefix:
            return None, 0, lp
        entry, d = self._kv.lookup(prefix) if self._kv is not None else (None, 0)
        if d == len(prefix) and lp is None:  # KV present but the log-probs were evicted
            d -= 1
        return entry, d, (lp if d == len(prefix) else None)

    def _build(self, rows: list, room: int):
        """A cache holding prompt + ``prefix[:d]`` for each ``(entry, d)`` row plus ``room`` free
        slots (:func:`.kv_builder.build`)."""
        return build(self._prompt_cache, len(self.prompt), rows, room)

    def _prepare(self, prefixes: list[tuple[int, ...]], plans: list, room: int):
        """Cache for prompt + each prefix (one row each) and the log-prob row after each prefix
        (lazy MLX (V,) arrays).

        Rows that share cached depth d and missing length m are fed in one forward pass; a mixed
        batch is prepared row by row and merged.
        """
        from mlx_lm.models.cache import BatchKVCache

        mx = self._mx
        missing = [0 if lp is not None else len(p) - d for p, (_, d, lp) in zip(prefixes, plans)]
        if len({d for _, d, _ in plans}) > 1 or len(set(missing)) > 1:
            parts = [self._prepare([p], [pl], room) for p, pl in zip(prefixes, plans)]
            merged = [BatchKVCache.merge([cache[layer] for cache, _ in parts])
                      for layer in range(len(parts[0][0]))]
            return merged, [lps[0] for _, lps in parts]
        m = missing[0]
        cache = self._build([(e, d) for e, d, _ in plans], room + m)
        lps = [lp for _, _, lp in plans]
        if m:
            feed = mx.array([list(p[d:]) for p, (_, d, _) in zip(prefixes, plans)])
            out = self._forward(feed, cache)
            for r, p in enumerate(prefixes):
                lps[r] = out[r]
                self._remember(p, out, r)
            self._store_rows(cache, [(r if len(prefixes) > 1 else None, p) for r, p in enumerate(prefixes)])
        return cache, lps

    def _store_rows(self, cache, rows: list[tuple[int | None, tuple[int, ...]]]) -> None:
        """Keep the KV of each ``tokens`` (beyond the prompt) of a single (row None) or batched
        cache row in the prefix store; one evaluation for all rows."""
        if self._kv is None:
            return
        mx = self._mx
        P = len(self.prompt)
        pads = None
        todo = []
        for row, tokens in rows:
            if not tokens:
                continue
            n, kv, nbytes = len(tokens), [], 0
            for c in cache:
                if row is None:
                    k, v = c.keys[..., P : P + n, :], c.values[..., P : P + n, :]
                else:
                    if pads is None:
                        pads = self._host_ints(cache[0].left_padding)
                    lo = pads[row] + P
                    k, v = c.keys[row : row + 1, :, lo : lo + n, :], c.values[row : row + 1, :, lo : lo + n, :]
                k, v = mx.contiguous(k), mx.contiguous(v)
                kv.append((k, v))
                nbytes += k.nbytes + v.nbytes
            todo.append((tokens, kv, nbytes))
        if not todo:
            return
        # queued, not awaited: the copies are made while the host goes on
        t0 = time.perf_counter()
        mx.async_eval([a for _, kv, _ in todo for pair in kv for a in pair])
        self.stats.model_time_s += time.perf_counter() - t0
        for tokens, kv, nbytes in todo:
            self._kv.insert(tokens, kv, nbytes)

    def _check_prefix(self, prefix) -> tuple[int, ...]:
        p = tuple(map(int, prefix))
        if not self.eos_ids.isdisjoint(p):
            raise ValueError(f"continuation {p} contains EOS; nothing can follow it")
        return p

    # ------------------------------------------------------------------ public API
    def _rows(self, prefixes: Sequence[Sequence[int]], keep_ahead: bool = False) -> list:
        """Device log-prob rows after each prefix, computing what is not cached. A beam step
        queued ahead is given up unless ``keep_ahead`` (its rows stay counted as speculative)."""
        if not keep_ahead:
            self._ahead = None
        ps = [self._check_prefix(p) for p in prefixes]
        found = {p: self._row(p) for p in ps if p in self._lp}
        todo = list(dict.fromkeys(p for p in ps if p not in found))
        if todo and self._hot is not None and all(p and p[:-1] in self._hot[1] for p in todo):
            found.update(zip(todo, self._extend_hot(todo)))
            todo = []
        groups: dict[tuple[int, int], list] = {}
        for p in todo:
            plan = self._plan(p)
            groups.setdefault((plan[1], len(p) - plan[1]), []).append((p, plan))
        for rows in groups.values():  # one forward pass per (cached depth, missing length)
            cache, lps = self._prepare([p for p, _ in rows], [pl for _, pl in rows], room=0)
            found.update(zip([p for p, _ in rows], lps))
            if any(lp is None for _, (_, _, lp) in rows) and len({len(p) for p, _ in rows}) == 1:
                self._set_hot(cache, [p for p, _ in rows], stored=True)
        for p in found:
            if p in self._lp:
                self._lp.move_to_end(p)
        return [found[p] for p in ps]

    def _set_hot(self, cache, prefixes: list, stored: bool) -> None:
        """Keep ``cache`` (rows = ``prefixes``, all of one length) as the hot batch; the rows of
        the one it replaces go to the prefix store if they are not there yet."""
        self._flush_hot()
        self._hot = (cache, {p: r for r, p in enumerate(prefixes)}, stored)

    def _flush_hot(self) -> None:
        """Put the hot rows into the prefix store (once), so every path finds their KV."""
        from mlx_lm.models.cache import BatchKVCache

        if self._hot is not None and not self._hot[2]:
            old, rows, _ = self._hot
            batched = isinstance(old[0], BatchKVCache)
            self._store_rows(old, [(r if batched else None, p) for p, r in rows.items()])
            self._hot = (old, rows, True)

    def _extend_hot(self, prefixes: list) -> list:
        """Log-prob rows after ``prefixes``, each the prefix of a hot row plus one token: the hot
        rows are gathered (one take per layer and tensor) and the new tokens fed in one pass."""
        mx = self._mx
        hot, rows, _ = self._hot
        src = [rows[p[:-1]] for p in prefixes]
        idx = mx.array(src)
        B = len(prefixes)
        pads = None
        if is_batch(hot):
            pads = self._host_ints(hot[0].left_padding)
            pads = [pads[r] for r in src]
        cache = take_rows(hot, idx, pads)
        out = self._forward(mx.array([[p[-1]] for p in prefixes]), cache)
        for r, p in enumerate(prefixes):
            self._remember(p, out, r)
        # the new rows hold the KV of every old row they extend; old rows no beam step kept are
        # not stored (a later query for them recomputes)
        self._hot = (cache, {p: r for r, p in enumerate(prefixes)}, False)
        return [out[r] for r in range(B)]

    def logprobs(self, prefixes: Sequence[Sequence[int]]) -> np.ndarray:
        """Next-token log-probs (temperature 1) after prompt + each prefix; shape (B, V), on the
        host (float64). Prefer :meth:`topk` when only the largest entries are needed."""
        if not prefixes:
            return np.zeros((0, self.vocab_size))
        (rows,) = self._read(self._mx.stack(self._rows(prefixes)))
        return rows.astype(np.float64)

    def topk(self, prefixes: Sequence[Sequence[int]], k: int,
             scores: Sequence[float] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The k most likely next tokens after each prefix, computed on the device: ``(ids,
        logprobs)``, each (B, k) on the host, largest first (ties: lower id first; -inf entries
        come last, callers drop them).

        ``scores``: this is a beam step, ``scores[i]`` the cumulative log-prob of ``prefixes[i]``
        (all prefixes of one length). Before the host reads this step's top-k, the Session then
        queues on the device the forward pass of the k best one-token extensions by score +
        log-prob — the hypotheses a beam of width k keeps, so the ones it asks about next — as
        mlx-lm's ``generate_step`` queues step t+1 before reading step t (see
        :meth:`_queue_beam_step`)."""
        mx = self._mx
        B, k = len(prefixes), max(0, min(int(k), self.vocab_size))
        if B == 0 or k == 0:
            self._ahead = None
            return np.zeros((B, 0), dtype=np.int64), np.zeros((B, 0))
        if scores is not None and len(scores) != B:
            raise ValueError(f"{len(scores)} scores for {B} prefixes")
        # a few extra candidates so ties at the k-th value are resolved by id on the host
        kk = min(self.vocab_size, k + 8)
        ps = [self._check_prefix(p) for p in prefixes]
        lp = self._take_ahead(ps)
        if lp is None:
            lp = mx.stack(self._rows(ps))
        ids = mx.argpartition(-lp, kk - 1, axis=-1)[:, :kk]
        vals = mx.take_along_axis(lp, ids, axis=-1)
        if scores is not None:
            self._queue_beam_step(ps, scores, ids, vals, k)
        ids_np, vals_np = self._read(ids, vals)
        ids_np, vals_np = ids_np.astype(np.int64), vals_np.astype(np.float64)
        order = np.lexsort((ids_np, -vals_np), axis=-1)[:, :k]
        return (np.take_along_axis(ids_np, order, axis=-1),
                np.take_along_axis(vals_np, order, axis=-1))

    #: ``topk`` takes ``scores`` and then computes a beam's next step ahead
    beam_lookahead = True
    #: a beam is pipelined while its candidates per step (k · (k + 8)) stay under this
    BEAM_AHEAD_MAX_CANDIDATES = 2**20

    def _source_rows(self, prefixes: list):
        """The cache whose rows hold the KV of ``prefixes`` and those rows (device int array),
        or None: the hot batch, or the prompt's cache for the root."""
        if self._hot is not None and all(p in self._hot[1] for p in prefixes):
            cache, rows, _ = self._hot
            return cache, self._mx.array([rows[p] for p in prefixes])
        if all(not p for p in prefixes):
            return self._prompt_cache, self._mx.zeros((len(prefixes),), dtype=self._mx.int32)
        return None

    def _queue_beam_step(self, prefixes: list, scores, ids, vals, k: int) -> None:
        """Queue (``mx.async_eval``, nothing read on the host) the beam's next forward pass.

        ``ids``/``vals``: the (B, kk) top-kk candidates after each prefix (lazy). On the device:
        candidate scores ``scores[i] + vals[i, j]`` (float32), the n = min(k, B·kk) best of them
        (row ``src`` and token ``tok`` each), the KV rows of their parents gathered from the
        cache holding ``prefixes`` (one take per layer and tensor: the parents' left padding and
        offsets are gathered too, so no host read), and the forward pass feeding ``tok``. The
        beam keeps the k best of its finished hypotheses and these extensions, so the next query
        is a subset of them, unless float64 rounding on the host orders near-ties differently —
        :meth:`_take_ahead` checks which it is. The n fed tokens count as
        ``stats.speculative_tokens`` until a query uses them."""
        mx = self._mx
        self._ahead = None
        B, kk = ids.shape
        if (k * (k + 8) > self.BEAM_AHEAD_MAX_CANDIDATES or len(set(prefixes)) != B
                or len({len(p) for p in prefixes}) != 1):
            return
        if self.lm.max_context and len(self.prompt) + len(prefixes[0]) + 1 > self.lm.max_context:
            return
        source = self._source_rows(prefixes)
        if source is None:
            return
        cache, rows = source
        n = min(k, B * kk)
        cand = (mx.array(np.asarray(scores, dtype=np.float32))[:, None] + vals).reshape(-1)
        sel = mx.argpartition(-cand, n - 1)[:n] if n < B * kk else mx.arange(B * kk)
        src, tok = sel // kk, ids.reshape(-1)[sel]
        t0 = time.perf_counter()
        mx.async_eval(ids, vals, src, tok)  # read by the next call before the pass below is done
        self.stats.model_time_s += time.perf_counter() - t0
        parent = mx.take(rows, src)
        new = gather_rows(cache, parent, n)
        lp = self._forward(tok[:, None], new, count=False)
        t0 = time.perf_counter()
        mx.async_eval(lp)
        self.stats.model_time_s += time.perf_counter() - t0
        self.stats.speculative_tokens += n
        self._ahead = (list(prefixes), src, tok, new, lp)

    def _take_ahead(self, prefixes: list):
        """The (B, V) log-prob rows after ``prefixes`` from the beam step queued ahead, when
        every prefix is one of its extensions (then its cache becomes the hot batch and its
        used rows are counted in ``tokens_processed``); else None."""
        ahead, self._ahead = self._ahead, None
        if ahead is None:
            return None
        parents, src, tok, cache, lp = ahead
        src_np, tok_np = (a.tolist() for a in self._read(src, tok))  # computed long ago
        made = {}
        for r, (i, a) in enumerate(zip(src_np, tok_np)):
            made.setdefault(parents[i] + (int(a),), r)
        if not all(p in made for p in prefixes):
            return None
        used = [made[p] for p in prefixes]
        self.stats.speculative_tokens -= len(set(used))
        self.stats.tokens_processed += len(set(used))
        for p, r in zip(prefixes, used):
            self._remember(p, lp, r)
        # the hot batch: the KV of every parent row any used row extends is in these rows; rows
        # fed ahead that no query used are left out (never counted, never stored)
        self._hot = (cache, {p: r for p, r in zip(prefixes, used)}, False)
        if used == list(range(lp.shape[0])):
            return lp
        return self._mx.take(lp, self._mx.array(used), axis=0)

    def _masked_row(self, prefix: Sequence[int], exclude):
        """The next-token log-prob row after ``prefix`` (on the device) with the tokens in
        ``exclude`` set to -inf."""
        mx = self._mx
        row = self._rows([prefix])[0]
        ex = np.asarray(exclude, dtype=np.int64).reshape(-1)
        if ex.size:
            row = row + mx.zeros(row.shape, dtype=row.dtype).at[mx.array(ex.astype(np.int32))].add(-mx.inf)
        return row

    def log_mass_excluding(self, prefix: Sequence[int], exclude) -> float:
        """log Σ p_θ(a | prefix) over the tokens a not in ``exclude``, computed on the device
        (only the scalar reaches the host); -inf when nothing with p_θ > 0 is left."""
        mx = self._mx
        (out,) = self._read(mx.logsumexp(self._masked_row(prefix, exclude).astype(mx.float32)))
        return float(out)

    def draw_excluding(self, prefix: Sequence[int], exclude, rng: np.random.Generator):
        """One next token after ``prefix`` drawn exactly ∝ p_θ among the tokens not in
        ``exclude`` (Gumbel-max over the whole vocabulary, on the device, with an MLX key drawn
        from ``rng``). Returns ``(token, log p_θ(token | prefix), log of the unexcluded mass
        before the draw, log of it after removing token)`` — four scalars cross to the host — or
        None when no token with p_θ > 0 is left."""
        mx = self._mx
        row = self._masked_row(prefix, exclude).astype(mx.float32)
        key = mx.random.key(int(rng.integers(0, 2**63 - 1)))
        a = mx.argmax(row + mx.random.gumbel(row.shape, key=key))
        before = mx.logsumexp(row)
        after = mx.logsumexp(mx.where(mx.arange(row.shape[0]) == a, -mx.inf, row))
        a, lp_a, before, after = self._read(a, row[a], before, after)
        if float(before) == -math.inf:
            return None
        return int(a), float(lp_a), float(before), float(after)

    #: ``rollout`` takes one ``max_new_tokens`` per row (rows of different depths in one batch)
    ragged_rollouts = True

    def rollout(self, prefixes: Sequence[Sequence[int]], max_new_tokens: int | Sequence[int], *,
                temperature: float = 1.0, rng: np.random.Generator | None = None,
                top_k: int = 0, top_p: float = 1.0) -> list[Rollout]:
        """Generate from each prefix at once (one batched forward pass per step, pipelined).

        ``max_new_tokens``: one limit for all rows, or one per row (a row ends at EOS or at its
        own limit; rows of a tree at different depths share the batch)."""
        mx = self._mx
        if rng is None and temperature > 0:
            raise ValueError("sampling with temperature > 0 needs an rng")
        prefixes = [self._check_prefix(p) for p in prefixes]
        B = len(prefixes)
        limits = ([int(max_new_tokens)] * B if np.ndim(max_new_tokens) == 0
                  else [int(n) for n in max_new_tokens])
        if len(limits) != B:
            raise ValueError(f"{len(limits)} max_new_tokens for {B} prefixes")
        todo = [i for i in range(B) if limits[i] > 0]
        if not todo:
            return [Rollout(p, [], [], False) for p in prefixes]
        if len(todo) < B:  # rows with nothing to generate
            sub = self.rollout([prefixes[i] for i in todo], [limits[i] for i in todo],
                               temperature=temperature, rng=rng, top_k=top_k, top_p=top_p)
            out = [Rollout(p, [], [], False) for p in prefixes]
            for i, ro in zip(todo, sub):
                out[i] = ro
            return out
        longest = max(limits)
        self._ahead = None
        self._flush_hot()
        cache, lps = self._prepare(prefixes, [self._plan(p) for p in prefixes], room=longest)
        batched = B > 1
        keys = step_keys(rng, longest) if temperature > 0 else None

        def draw(lp, step):
            toks, tlp = sample(lp, temperature, None if keys is None else keys[step], top_k, top_p)
            t0 = time.perf_counter()
            mx.async_eval(toks, tlp)  # returns at once on a GPU; the CPU backend computes here
            self.stats.model_time_s += time.perf_counter() - t0
            return toks, tlp

        toks, tlp = draw(mx.stack(lps) if batched else lps[0][None], 0)
        seqs: list[list[int]] = [[] for _ in range(B)]
        seq_lps: list[list[float]] = [[] for _ in range(B)]
        finished = [False] * B
        active = list(range(B))
        for step in range(longest):
            # a row reaching its limit now is known in advance: then the step is not pipelined,
            # so that the next pass feeds only the rows that go on
            ahead = all(step + 1 < limits[i] for i in active)
            if ahead:  # queue step t+1 on the device before reading step t
                nxt_lp = self._forward(toks[:, None], cache, count=False)
                nxt_toks, nxt_tlp = draw(nxt_lp, step + 1)
            toks_h, tlp_h = (a.tolist() for a in self._read(toks, tlp))
            keep_rows, done_rows = [], []
            for r, (i, t, lp_t) in enumerate(zip(active, toks_h, tlp_h)):
                seqs[i].append(t)
                seq_lps[i].append(lp_t)
                if t in self.eos_ids:
                    finished[i] = True
                    done_rows.append(r)
                elif step + 1 >= limits[i]:
                    done_rows.append(r)
                else:
                    keep_rows.append(r)
            # keep the KV of finished rows (every token but the unfed last one)
            self._store_rows(cache, [(r if batched else None, prefixes[active[r]] + tuple(seqs[active[r]][:-1]))
                                     for r in done_rows])
            if not keep_rows:
                if ahead:
                    self.stats.speculative_tokens += len(active)
                break
            idx = mx.array(keep_rows) if done_rows else None
            if idx is not None and batched:
                t0 = time.perf_counter()
                for c in cache:  # reads the padding on the host: waits for the queued step
                    c.filter(idx)
                self.stats.model_time_s += time.perf_counter() - t0
            if ahead:
                self.stats.speculative_tokens += len(done_rows)
                rows = keep_rows
                if idx is not None:
                    nxt_toks, nxt_tlp = nxt_toks[idx], nxt_tlp[idx]
            else:
                nxt_lp = self._forward((toks if idx is None else toks[idx])[:, None], cache, count=False)
                nxt_toks, nxt_tlp = draw(nxt_lp, step + 1)
                rows = range(len(keep_rows))
            self.stats.tokens_processed += len(keep_rows)
            for r, row in zip(keep_rows, rows):
                i = active[r]
                self._remember(prefixes[i] + tuple(seqs[i]), nxt_lp, row)
            toks, tlp = nxt_toks, nxt_tlp
            active = [active[r] for r in keep_rows]
        if temperature == 1.0 and not top_k and top_p >= 1.0:  # plain sampling from p_θ
            self.stats.plain_logprob_sum += float(sum(sum(x) for x in seq_lps))
            self.stats.plain_tokens += sum(len(x) for x in seq_lps)
        return [Rollout(prefixes[i], seqs[i], seq_lps[i], finished[i]) for i in range(B)]

    def sequence_logprob(self, tokens: Sequence[int]) -> tuple[float, int]:
        """Sum of log p_θ(tokens) after the prompt at temperature 1, and the tokens fed for it.

        Uses cached log-probs where every step is cached; otherwise one extra forward pass whose
        tokens are counted in ``stats.eval_tokens`` (not in ``tokens_processed``).
        """
        mx = self._mx
        toks = [int(t) for t in tokens]
        if not toks:
            return 0.0, 0
        rows = [self._row(tuple(toks[:i])) for i in range(len(toks))]
        if all(r is not None for r in rows):
            (vals,) = self._read(mx.stack([r[t] for r, t in zip(rows, toks)]))
            return float(vals.astype(np.float64).sum()), 0
        feed = toks[:-1]
        cache = self._build([(None, 0)], room=len(feed))  # the distribution of toks[0] is the prompt's, always cached
        t0 = time.perf_counter()
        out = self.lm.model(mx.array([feed]), cache=cache)[0].astype(mx.float32)
        lp_all = out - mx.logsumexp(out, axis=-1, keepdims=True)
        picked = mx.take_along_axis(lp_all, mx.array(toks[1:])[:, None], axis=-1)[:, 0]
        first = self._row(())[toks[0]]
        self.stats.model_time_s += time.perf_counter() - t0
        picked, first = self._read(picked, first)
        self.stats.eval_tokens += len(feed)
        total = float(first.astype(np.float64)) + float(picked.astype(np.float64).sum())
        return total, len(feed)

