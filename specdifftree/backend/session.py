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
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import BackendError
from .loader import LoadedModel
from .kvstore import PrefixKVStore
from .sampling import decode


PREFILL_CHUNK = 2048  # prompt tokens per forward pass during prefill


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

        kinds = {type(c).__name__ for c in self._prompt_cache}
        if kinds != {"KVCache"} or not all(type(c) is KVCache for c in self._prompt_cache):
            raise BackendError(f"model {lm.name} uses cache type(s) {sorted(kinds)}; the Session "
                               "supports models with a plain KVCache (Llama, Qwen, Mistral, Phi, ...)")
        self._kv = PrefixKVStore(int(kv_cache_mb * 2**20)) if kv_cache_mb > 0 else None
        # prefill in chunks (as mlx-lm does) so attention memory stays bounded for long prompts
        for start in range(0, len(self.prompt), PREFILL_CHUNK):
            chunk = list(self.prompt[start:start + PREFILL_CHUNK])
            logits = self._forward(mx.array([chunk]), self._prompt_cache)
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

    def _plan(self, prefix: tuple[int, ...]):
        """How to get prompt + ``prefix`` into a cache: ``(entry, d, lp)``.

        The KV of ``prefix[:d]`` is in the stored ``entry`` (None when d = 0); ``lp`` is the cached
        next-token log-prob vector after ``prefix`` when nothing needs computing, else None and
        ``prefix[d:]`` must be fed.
        """
        lp = self._lp.get(prefix)
        if not prefix:
            return None, 0, lp
        entry, d = self._kv.lookup(prefix) if self._kv is not None else (None, 0)
        if d == len(prefix) and lp is None:  # KV present but the log-probs were evicted
            d -= 1
        self.stats.kv_reused_tokens += d
        return entry, d, (lp if d == len(prefix) else None)

    def _build(self, rows: list, room: int):
        """A cache holding prompt + ``prefix[:d]`` for each ``(entry, d)`` row, plus ``room`` free
        slots so the next ``room`` tokens are written in place.

        One row gives a list of ``KVCache``; several give ``BatchKVCache`` (left-padded when the
        rows' d differ). Rows with equal d are assembled in a single copy per layer.
        """
        from mlx_lm.models.cache import BatchKVCache, KVCache

        mx = self._mx
        B, P = len(rows), len(self.prompt)
        dmax = max(d for _, d in rows)
        pads = [dmax - d for _, d in rows]
        out = []
        for layer, c in enumerate(self._prompt_cache):
            ks, vs = [], []
            for arr, which in ((c.keys, ks), (c.values, vs)):
                idx = 0 if which is ks else 1
                prompt = arr[..., :P, :]
                H, D = prompt.shape[1], prompt.shape[3]
                tail = [mx.zeros((B, H, room, D), prompt.dtype)] if room else []
                if len(set(pads)) == 1:
                    segs = [mx.concatenate([e.kv[layer][idx][..., :d, :] for e, d in rows], axis=0)] if dmax else []
                    which.append(mx.concatenate([mx.broadcast_to(prompt, (B, H, P, D)), *segs, *tail], axis=2))
                else:
                    per_row = [mx.concatenate(([mx.zeros((1, H, pad, D), prompt.dtype)] if pad else [])
                                              + [prompt] + ([e.kv[layer][idx][..., :d, :]] if d else []),
                                              axis=2) for (e, d), pad in zip(rows, pads)]
                    which.append(mx.concatenate([mx.concatenate(per_row, axis=0), *tail], axis=2))
            if B == 1:
                n = KVCache()
                n.keys, n.values, n.offset = ks[0], vs[0], P + dmax
            else:
                n = BatchKVCache(pads)
                n.keys, n.values = ks[0], vs[0]
                n._idx = P + dmax
                n.offset = n.offset + n._idx
            out.append(n)
        return out

    def _prepare(self, prefixes: list[tuple[int, ...]], plans: list, room: int):
        """Cache for prompt + each prefix (one row each) and the log-probs after each prefix.

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
            out = self._to_logprobs(self._forward(feed, cache))
            for r, p in enumerate(prefixes):
                lps[r] = out[r]
                self._remember(p, out[r])
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
                        pads = [int(x) for x in np.array(cache[0].left_padding)]
                    lo = pads[row] + P
                    k, v = c.keys[row : row + 1, :, lo : lo + n, :], c.values[row : row + 1, :, lo : lo + n, :]
                k, v = mx.contiguous(k), mx.contiguous(v)
                kv.append((k, v))
                nbytes += k.nbytes + v.nbytes
            todo.append((tokens, kv, nbytes))
        if not todo:
            return
        mx.eval([a for _, kv, _ in todo for pair in kv for a in pair])
        for tokens, kv, nbytes in todo:
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
        groups: dict[tuple[int, int], list] = {}
        for p in dict.fromkeys(p for p in ps if p not in found):
            plan = self._plan(p)
            groups.setdefault((plan[1], len(p) - plan[1]), []).append((p, plan))
        for rows in groups.values():  # one forward pass per (cached depth, missing length)
            _, lps = self._prepare([p for p, _ in rows], [pl for _, pl in rows], room=0)
            found.update(zip([p for p, _ in rows], lps))
        for p in found:
            if p in self._lp:
                self._lp.move_to_end(p)
        return np.stack([found[p] for p in ps])

    def rollout(self, prefixes: Sequence[Sequence[int]], max_new_tokens: int, *,
                temperature: float = 1.0, rng: np.random.Generator | None = None,
                top_k: int = 0, top_p: float = 1.0) -> list[Rollout]:
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
        batch_cache, lps = self._prepare(prefixes, [self._plan(p) for p in prefixes],
                                         room=max_new_tokens)
        batched = B > 1

        def advance(active, done_rows, keep_rows, seqs):
            # keep the KV of finished rows (every token but the unfed last one)
            self._store_rows(batch_cache, [(r if batched else None,
                                            prefixes[active[r]] + tuple(seqs[active[r]][:-1]))
                                           for r in done_rows])
            if not keep_rows:
                return None
            if done_rows and batched:
                idx = mx.array(keep_rows)
                for c in batch_cache:
                    c.filter(idx)
            ids = [active[r] for r in keep_rows]
            logits = self._forward(mx.array([[seqs[i][-1]] for i in ids]), batch_cache)
            out = self._to_logprobs(logits)
            for r, i in enumerate(ids):
                self._remember(prefixes[i] + tuple(seqs[i]), out[r])
            return out

        seqs, seq_lps, finished = decode(np.stack(lps), max_new_tokens, self.eos_ids, advance,
                                         temperature=temperature, rng=rng, top_k=top_k, top_p=top_p)
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
        feed = toks[:-1]
        cache = self._build([(None, 0)], room=len(feed))  # the distribution of toks[0] is the prompt's, always cached
        t0 = time.perf_counter()
        out = self.lm.model(mx.array([feed]), cache=cache)[0].astype(mx.float32)
        lp_all = out - mx.logsumexp(out, axis=-1, keepdims=True)
        mx.eval(lp_all)
        self.stats.model_time_s += time.perf_counter() - t0
        self.stats.eval_tokens += len(feed)
        lp_np = np.array(lp_all, dtype=np.float64)
        total = float(self._lp[()][toks[0]]) + float(sum(lp_np[i, t] for i, t in enumerate(toks[1:])))
        return total, len(feed)
