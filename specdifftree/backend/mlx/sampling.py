"""Token sampling on the device (MLX), entirely in log space.

Temperature 0 is greedy (argmax). Otherwise tokens are drawn with the Gumbel-max trick from
``logprobs / temperature`` after top-k and top-p truncation; truncated tokens get ``-inf`` and
can never be drawn. No probabilities are renormalised by adding epsilons.

Everything per token happens in MLX on whole ``(B, V)`` arrays: only the chosen token ids and
their log-probs cross to the host. The random stream is MLX's counter-based generator: one key
per :func:`decode` call is derived from the caller's numpy ``Generator`` (one integer drawn), and
step t of the call uses ``split(key, steps)[t]`` — so a seeded search is reproducible and the
device, not the host, draws the B·V Gumbel variates of every step.
"""

from __future__ import annotations

import numpy as np


def _mx():
    import mlx.core as mx

    return mx


def log_softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Host-side log-softmax (numpy float64), for callers holding host arrays."""
    x = np.asarray(x, dtype=np.float64)
    m = np.max(x, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        return x - m - np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True))


def truncate(z, top_k: int = 0, top_p: float = 1.0):
    """``z`` (B, V) MLX array with every entry outside the top-k and outside the smallest top-p
    nucleus set to -inf. Entries tied with the last kept value are kept too."""
    mx = _mx()
    V = z.shape[-1]
    if top_k and 0 < top_k < V:
        kth = mx.min(mx.topk(z, top_k, axis=-1), axis=-1, keepdims=True)
        z = mx.where(z < kth, -mx.inf, z)
    if top_p < 1.0:
        s = -mx.sort(-z, axis=-1)  # descending
        slp = s - mx.logsumexp(s, axis=-1, keepdims=True)
        p = mx.exp(slp)
        # keep a token if the mass strictly before it is < top_p (the first is always kept)
        keep = (mx.cumsum(p, axis=-1) - p) < top_p
        thresh = mx.min(mx.where(keep, s, mx.inf), axis=-1, keepdims=True)
        z = mx.where(z < thresh, -mx.inf, z)
    return z


def step_keys(rng: np.random.Generator | None, steps: int):
    """``steps`` MLX random keys for one decode call, derived from one draw of ``rng``."""
    mx = _mx()
    if rng is None or steps <= 0:
        return None
    seed = int(rng.integers(0, 2**63 - 1))
    return mx.random.split(mx.random.key(seed), max(steps, 2))


def sample(lp, temperature: float, key=None, top_k: int = 0, top_p: float = 1.0):
    """One token per row of ``lp`` (MLX (B, V) log-probs, lazy): returns ``(tokens, token_lp)``,
    both lazy MLX arrays of shape (B,); ``token_lp`` is the temperature-1 log-prob ``lp[b, token]``
    whatever the sampling temperature."""
    mx = _mx()
    if temperature <= 0:
        z = truncate(lp, top_k, top_p) if (top_k or top_p < 1.0) else lp
        toks = mx.argmax(z, axis=-1)
    else:
        z = lp if temperature == 1.0 else lp * (1.0 / float(temperature))
        z = truncate(z, top_k, top_p) if (top_k or top_p < 1.0) else z
        if key is None:
            raise ValueError("sampling with temperature > 0 needs a random key")
        # -inf + g stays -inf: truncated or impossible tokens can never be drawn
        toks = mx.argmax(z + mx.random.gumbel(z.shape, key=key), axis=-1)
    toks = toks.astype(mx.int32)
    return toks, mx.take_along_axis(lp, toks[:, None], axis=-1)[:, 0]


def decode(lp: np.ndarray, max_new_tokens: int, eos_ids, advance, *, temperature: float,
           rng: np.random.Generator, top_k: int = 0, top_p: float = 1.0, pick=None):
    """The batched sampling loop over host log-prob tables (the toy table-LM session).

    Same sampler and random stream as the model :class:`~specdifftree.backend.mlx.session.Session`
    (which runs the pipelined device loop of its own). ``lp`` (B, V): next-token log-probs of
    each row. Every iteration samples one token per active row; a row finishes at EOS or after
    ``max_new_tokens`` tokens (its last token is never fed). ``advance(active, done_rows,
    keep_rows, seqs)`` is then called with the rollout ids of the active rows, the positions (in
    ``active``) of rows that just finished and of rows that go on, and the tokens so far; it feeds
    the last token of each kept row and returns their next-token log-probs (``len(keep_rows)``,
    V) — it is called with an empty ``keep_rows`` too, so finished rows can be handled. Returns
    ``(seqs, seq_logprobs, finished)`` per rollout, where ``seq_logprobs[i][j]`` is the
    temperature-1 log-prob of token j (read from the float64 table). ``pick(lp, step)``, when
    given, chooses the tokens of a step instead of the MLX sampler (a host sampler with its own
    random stream; the loop, rows and accounting stay the same).
    """
    lp = np.asarray(lp, dtype=np.float64)
    B = lp.shape[0]
    if pick is None:
        mx = _mx()
        keys = step_keys(rng, max_new_tokens) if temperature > 0 else None

        def pick(lp, step):
            toks, _ = sample(mx.array(lp.astype(np.float32)), temperature,
                             None if keys is None else keys[step], top_k, top_p)
            return toks.tolist()
    seqs: list[list[int]] = [[] for _ in range(B)]
    seq_lps: list[list[float]] = [[] for _ in range(B)]
    finished = [False] * B
    active = list(range(B))
    for step in range(max_new_tokens):
        toks = pick(lp, step)
        keep_rows, done_rows = [], []
        for r, i in enumerate(active):
            t = int(toks[r])
            seqs[i].append(t)
            seq_lps[i].append(float(lp[r, t]))
            if t in eos_ids:
                finished[i] = True
                done_rows.append(r)
            elif step + 1 < max_new_tokens:
                keep_rows.append(r)
            else:
                done_rows.append(r)
        lp = advance(active, done_rows, keep_rows, seqs)
        if not keep_rows:
            break
        lp = np.asarray(lp, dtype=np.float64)
        active = [active[r] for r in keep_rows]
    return seqs, seq_lps, finished
