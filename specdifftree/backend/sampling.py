"""Token sampling from log-probabilities, entirely in log space (numpy).

Temperature 0 is greedy (argmax). Otherwise tokens are drawn with the Gumbel-max trick from
``logprobs / temperature`` after top-k and top-p truncation; truncated tokens get ``-inf`` and
can never be drawn. No probabilities are renormalised by adding epsilons.
"""

from __future__ import annotations

import numpy as np


def log_softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    m = np.max(x, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        return x - m - np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True))


def truncate(logits: np.ndarray, top_k: int = 0, top_p: float = 1.0) -> np.ndarray:
    """Set to -inf every entry outside the top-k and outside the smallest top-p nucleus."""
    z = np.array(logits, dtype=np.float64, copy=True)
    if z.ndim == 1:
        return truncate(z[None], top_k, top_p)[0]
    V = z.shape[-1]
    if top_k and 0 < top_k < V:
        kth = np.partition(z, V - top_k, axis=-1)[:, V - top_k][:, None]
        z = np.where(z < kth, -np.inf, z)
    if top_p < 1.0:
        order = np.argsort(-z, axis=-1, kind="stable")
        sorted_lp = log_softmax(np.take_along_axis(z, order, axis=-1))
        cum = np.cumsum(np.exp(sorted_lp), axis=-1)
        # keep a token if the mass strictly before it is < top_p (the first is always kept)
        keep_sorted = (cum - np.exp(sorted_lp)) < top_p
        keep = np.zeros_like(keep_sorted)
        np.put_along_axis(keep, order, keep_sorted, axis=-1)
        z = np.where(keep, z, -np.inf)
    return z


def sample(logprobs: np.ndarray, temperature: float, rng: np.random.Generator,
           top_k: int = 0, top_p: float = 1.0) -> np.ndarray:
    """One token per row of ``logprobs`` (shape (B, V)); returns int64 array (B,)."""
    lp = np.asarray(logprobs, dtype=np.float64)
    if lp.ndim == 1:
        lp = lp[None]
    if temperature <= 0:
        return np.argmax(truncate(lp, top_k, top_p), axis=-1)
    z = truncate(lp / float(temperature), top_k, top_p)
    g = rng.gumbel(size=z.shape)
    return np.argmax(np.where(np.isfinite(z), z + g, -np.inf), axis=-1)


def decode(lp: np.ndarray, max_new_tokens: int, eos_ids, advance, *, temperature: float,
           rng: np.random.Generator, top_k: int = 0, top_p: float = 1.0):
    """The batched sampling loop shared by the Session and the toy table-LM session.

    ``lp`` (B, V): next-token log-probs of each row. Every iteration samples one token per active
    row; a row finishes at EOS or after ``max_new_tokens`` tokens (its last token is never fed).
    ``advance(active, done_rows, keep_rows, seqs)`` is then called with the rollout ids of the
    active rows, the positions (in ``active``) of rows that just finished and of rows that go on,
    and the tokens so far; it feeds the last token of each kept row and returns their next-token
    log-probs (``len(keep_rows)``, V) — it is called with an empty ``keep_rows`` too, so finished
    rows can be handled. Returns ``(seqs, seq_logprobs, finished)`` per rollout, where
    ``seq_logprobs[i][j]`` is the temperature-1 log-prob of token j.
    """
    B = lp.shape[0]
    seqs: list[list[int]] = [[] for _ in range(B)]
    seq_lps: list[list[float]] = [[] for _ in range(B)]
    finished = [False] * B
    active = list(range(B))
    for step in range(max_new_tokens):
        toks = sample(lp, temperature, rng, top_k=top_k, top_p=top_p)
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
        active = [active[r] for r in keep_rows]
    return seqs, seq_lps, finished
