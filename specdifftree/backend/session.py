"""Per-sample model session: the prompt is prefilled once; search code asks batched questions.

A :class:`Session` is created for one prompt. It owns the prompt's KV cache and answers

- :meth:`Session.logprobs` — next-token log-probabilities (temperature 1) after each of a batch of
  continuations of the prompt;
- :meth:`Session.rollout` — batched generation from each of a batch of continuations (greedy or
  sampled with temperature / top-k / top-p), stopping at EOS or ``max_new_tokens``.

Token accounting (``tokens_processed``) counts tokens actually pushed through the model: the prompt
once, then every continuation or generated token that is fed. Cached tokens are never counted. A
rollout of G tokens feeds G-1 of them: the last sampled token (or EOS) needs no forward pass.
``model_calls`` counts forward passes; a batched forward pass is one call.

Search code never touches the model: everything goes through this object, which is what lets the
search library run on a toy table-LM in tests (:class:`specdifftree.search.toy.TableSession`).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ..errors import BackendError
from .loader import LoadedModel
from .kvstore import PrefixKVStore
from .sampling import sample


@dataclass
class Rollout:
    """One generated continuation.

    ``tokens`` are the new tokens after the starting prefix; ``logprobs[i]`` is
    log p_θ(tokens[i] | prompt, prefix, tokens[:i]) at temperature 1 (the base model), whatever
    temperature was used to sample. ``finished`` is True when the rollout ended with EOS.
    """

    prefix: tuple[int, ...]
    tokens: list[int]
    logprobs: list[float]
    finished: bool

    @property
    def full(self) -> tuple[int, ...]:
        return self.prefix + tuple(self.tokens)


@dataclass
class SessionStats:
    model_calls: int = 0
    tokens_processed: int = 0
    prompt_tokens: int = 0
    eval_tokens: int = 0
    model_time_s: float = 0.0
    plain_logprob_sum: float = 0.0  # over tokens of rollouts sampled from p_θ (temperature 1)
    plain_tokens: int = 0
    kv_reused_tokens: int = 0  # tokens whose KV came from the prefix store instead of the model
    extra: dict = field(default_factory=dict)


class Session:
    """See the module docstring."""

    def __init__(self, lm: LoadedModel, prompt_tokens: Sequence[int], max_new_tokens: int = 0,
                 logprob_cache_mb: float = 64.0, kv_cache_mb: float = 1024.0):
        import mlx.core as mx
        from mlx_lm.models.cache import make_prompt_cache

        self._mx = mx
        self.lm = lm
        self.prompt = tuple(int(t) for t in prompt_tokens)
        if not self.prompt:
            raise BackendError("the prompt is empty")
        if lm.max_context and len(self.prompt) + max_new_tokens > lm.max_context:
            raise BackendError(
                f"prompt of {len(self.prompt)} tokens + {max_new_tokens} new tokens exceeds the "
                f"model's context of {lm.max_context} tokens (shorten dataset.context_length)")
        self.eos_ids = frozenset(lm.eos_token_ids)
        self.vocab_size = lm.vocab_size
        self.stats = SessionStats(prompt_tokens=len(self.prompt))
        per_entry = max(1, self.vocab_size * 8)
        self._lp_cap = max(16, int(logprob_cache_mb * 2**20 / per_entry))
        self._lp: OrderedDict[tuple[int, ...], np.ndarray] = OrderedDict()
        self._prompt_cache = make_prompt_cache(lm.model)
        from mlx_lm.models.cache import KVCache

        reusable = kv_cache_mb > 0 and all(type(c) is KVCache for c in self._prompt_cache)
        self._kv = PrefixKVStore(int(kv_cache_mb * 2**20)) if reusable else None
        logits = self._forward(mx.array([list(self.prompt)]), self._prompt_cache)
        self._remember((), self._to_logprobs(logits)[0])

    # ------------------------------------------------------------------ counters
    @property
    def model_calls(self) -> int:
        return self.stats.model_calls

    @property
    def tokens_processed(self) -> int:
        return self.stats.tokens_processed

    @property
    def prompt_tokens(self) -> int:
        return self.stats.prompt_tokens

    def decode(self, tokens: Sequence[int]) -> str:
        return self.lm.decode(list(tokens))

    # ------------------------------------------------------------------ model plumbing
    def _forward(self, tokens, cache, count: bool = True):
        """One forward pass; returns logits of the last position, shape (B, V)."""
        mx = self._mx
        t0 = time.perf_counter()
        out = self.lm.model(tokens, cache=cache)
        last = out[:, -1, :].astype(mx.float32)
        mx.eval(last)
        self.stats.model_time_s += time.perf_counter() - t0
        self.stats.model_calls += 1
        if count:
            self.stats.tokens_processed += int(tokens.shape[0] * tokens.shape[1])
        return last

    def _to_logprobs(self, logits) -> np.ndarray:
        mx = self._mx
        lp = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
        return np.array(lp, dtype=np.float64)

    def _remember(self, key: tuple[int, ...], lp: np.ndarray) -> None:
        self._lp[key] = lp
        self._lp.move_to_end(key)
        while len(self._lp) > self._lp_cap:
            oldest = next(iter(self._lp))
            if oldest == ():
                self._lp.move_to_end(())
                continue
            self._lp.popitem(last=False)

    def _copy_prompt_cache(self):
        """A private copy of the prompt's KV cache (fresh arrays, so no aliasing)."""
        from mlx_lm.models.cache import KVCache

        copies = []
        for c in self._prompt_cache:
            if isinstance(c, KVCache):
                n = KVCache()
                n.keys = c.keys[..., : c.offset, :]
                n.values = c.values[..., : c.offset, :]
                n.offset = c.offset
            else:  # other cache kinds: copy their state arrays
                n = type(c).__new__(type(c))
                n.__dict__.update(c.__dict__)
                n.state = tuple(self._mx.array(s) if isinstance(s, self._mx.array) else s for s in c.state)
            copies.append(n)
        return copies

    def _reuse(self, prefix: tuple[int, ...]):
        """Prompt cache extended by the longest stored KV segment sharing a prefix with ``prefix``.

        Returns ``(cache, lp, d)``: the cache covers ``prefix[:d]``; ``lp`` is the cached
        next-token log-prob vector after ``prefix`` when nothing needs computing (else None, and
        ``prefix[d:]`` must be fed).
        """
        mx = self._mx
        cache = self._copy_prompt_cache()
        lp = self._lp.get(prefix)
        if not prefix:
            return cache, lp, 0
        entry, d = self._kv.lookup(prefix) if self._kv is not None else (None, 0)
        if entry is not None:
            for c, (k, v) in zip(cache, entry.kv):
                c.keys = mx.concatenate([c.keys, k[..., :d, :]], axis=2)
                c.values = mx.concatenate([c.values, v[..., :d, :]], axis=2)
                c.offset += d
        if d == len(prefix) and lp is None:  # KV present but the log-probs were evicted
            for c in cache:
                c.trim(1)
            d -= 1
        self.stats.kv_reused_tokens += d
        return cache, (lp if d == len(prefix) else None), d

    def _row_caches(self, prefixes: list[tuple[int, ...]], need_caches: bool = True):
        """Per-row KV caches (prompt + prefix) and next-token log-probs for a batch of prefixes.

        Missing tokens are fed in as few forward passes as possible: rows with the same number of
        missing tokens go through the model together (left-padded batch).
        """
        from mlx_lm.models.cache import KVCache

        mx = self._mx
        caches, lps, todo = [], [], {}
        for i, p in enumerate(prefixes):
            cache, lp, d = self._reuse(p)
            caches.append(cache)
            lps.append(lp)
            if lp is None:
                todo.setdefault(len(p) - d, []).append((i, d))
        for _, rows in todo.items():
            feed = mx.array([list(prefixes[i][d:]) for i, d in rows])
            if len(rows) == 1:
                (i, _), = rows
                logits = self._forward(feed, caches[i])
                self._store_row(caches[i], None, prefixes[i])
            else:
                batch = [KVCache.merge([caches[i][layer] for i, _ in rows])
                         for layer in range(len(caches[rows[0][0]]))]
                logits = self._forward(feed, batch)
                for r, (i, _) in enumerate(rows):
                    self._store_row(batch, r, prefixes[i])
                    caches[i] = [c.extract(r) for c in batch] if need_caches else None
            out = self._to_logprobs(logits)
            for r, (i, _) in enumerate(rows):
                lps[i] = out[r]
                self._remember(prefixes[i], out[r])
        return caches, lps

    def _store_row(self, cache, row: int | None, tokens: tuple[int, ...]) -> None:
        """Keep the KV of ``tokens`` (beyond the prompt) from a single or batched cache row."""
        if self._kv is None or not tokens:
            return
        mx = self._mx
        P, n = len(self.prompt), len(tokens)
        kv, nbytes = [], 0
        for c in cache:
            if row is None:
                k = c.keys[..., P : P + n, :]
                v = c.values[..., P : P + n, :]
            else:
                pad = int(c.left_padding[row].item())
                k = c.keys[row : row + 1, :, pad + P : pad + P + n, :]
                v = c.values[row : row + 1, :, pad + P : pad + P + n, :]
            k, v = mx.contiguous(k), mx.contiguous(v)
            kv.append((k, v))
            nbytes += k.nbytes + v.nbytes
        mx.eval([a for pair in kv for a in pair])
        self._kv.insert(tokens, kv, nbytes)

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
        found = {p: self._lp[p] for p in ps if p in self._lp}
        missing = list(dict.fromkeys(p for p in ps if p not in found))
        if missing:
            found.update(zip(missing, self._row_caches(missing, need_caches=False)[1]))
        for p in found:
            if p in self._lp:
                self._lp.move_to_end(p)
        return np.stack([found[p] for p in ps])

    def rollout(self, prefixes: Sequence[Sequence[int]], max_new_tokens: int, *,
                temperature: float = 1.0, rng: np.random.Generator | None = None,
                top_k: int = 0, top_p: float = 1.0) -> list[Rollout]:
        """Generate from each prefix at once (one batched forward pass per step)."""
        mx = self._mx
        from mlx_lm.models.cache import KVCache

        if rng is None:
            if temperature > 0:
                raise ValueError("sampling with temperature > 0 needs an rng")
            rng = np.random.default_rng(0)
        prefixes = [self._check_prefix(p) for p in prefixes]
        B = len(prefixes)
        if B == 0 or max_new_tokens <= 0:
            return [Rollout(p, [], [], False) for p in prefixes]
        caches, lps = self._row_caches(prefixes)
        batched = B > 1
        if batched:
            batch_cache = [type(caches[0][layer]).merge([c[layer] for c in caches])
                           for layer in range(len(caches[0]))]
        else:
            batch_cache = caches[0]
        del caches
        lp = np.stack(lps)
        seqs: list[list[int]] = [[] for _ in range(B)]
        seq_lps: list[list[float]] = [[] for _ in range(B)]
        finished = [False] * B
        active = list(range(B))  # row r of the batch cache holds rollout active[r]
        for step in range(max_new_tokens):
            toks = sample(lp, temperature, rng, top_k=top_k, top_p=top_p)
            keep_rows = []
            for r, i in enumerate(active):
                t = int(toks[r])
                seqs[i].append(t)
                seq_lps[i].append(float(lp[r, t]))
                if t in self.eos_ids:
                    finished[i] = True
                elif step + 1 < max_new_tokens:
                    keep_rows.append(r)
            done_rows = [r for r in range(len(active)) if r not in set(keep_rows)]
            for r in done_rows:  # keep their KV (every token but the unfed last one)
                i = active[r]
                self._store_row(batch_cache, r if batched else None, prefixes[i] + tuple(seqs[i][:-1]))
            if not keep_rows:
                break
            if done_rows and batched:
                idx = mx.array(keep_rows)
                for c in batch_cache:
                    c.filter(idx)
            active = [active[r] for r in keep_rows]
            feed = mx.array([[int(toks[r])] for r in keep_rows])
            logits = self._forward(feed, batch_cache)
            lp = self._to_logprobs(logits)
            for r, i in enumerate(active):
                self._remember(prefixes[i] + tuple(seqs[i]), lp[r])
        if temperature == 1.0 and not top_k and top_p >= 1.0:  # plain sampling from p_θ
            self.stats.plain_logprob_sum += float(sum(sum(x) for x in seq_lps))
            self.stats.plain_tokens += sum(len(x) for x in seq_lps)
        return [Rollout(prefixes[i], seqs[i], seq_lps[i], finished[i]) for i in range(B)]

    def sequence_logprob(self, tokens: Sequence[int]) -> tuple[float, int]:
        """Sum of log p_θ(tokens) after the prompt at temperature 1, and the tokens fed for it.

        Uses cached log-probs where every step is cached; otherwise one extra forward pass whose
        tokens are counted in ``stats.eval_tokens`` (not in ``tokens_processed``).
        """
        toks = [int(t) for t in tokens]
        total, missing = 0.0, False
        for i, t in enumerate(toks):
            lp = self._lp.get(tuple(toks[:i]))
            if lp is None:
                missing = True
                break
            total += float(lp[t])
        if not missing:
            return total, 0
        mx = self._mx
        cache = self._copy_prompt_cache()
        feed = toks[:-1]  # the distribution of toks[0] is the prompt's, always cached
        t0 = time.perf_counter()
        out = self.lm.model(mx.array([feed]), cache=cache)[0].astype(mx.float32)
        lp_all = out - mx.logsumexp(out, axis=-1, keepdims=True)
        mx.eval(lp_all)
        self.stats.model_time_s += time.perf_counter() - t0
        self.stats.eval_tokens += len(feed)
        lp_np = np.array(lp_all, dtype=np.float64)
        total = float(self._lp[()][toks[0]]) + float(sum(lp_np[i, t] for i, t in enumerate(toks[1:])))
        return total, len(feed)
