"""Caption similarity to the reference caption — an ORACLE reward for the caption task.

The reference caption (``context.extra["reference"]``) is the answer key: a real user would not
have it, so the reward's name says *oracle* (``oracle_caption_similarity``, config
``reward=caption_similarity``).

Tokens: the text is lower-cased and split into maximal runs of ASCII letters and digits
(``[a-z0-9]+``), no stemming, no stop words.

- ``rougeL``: ROUGE-L F1 = 2PR/(P+R), P = LCS/|candidate|, R = LCS/|reference| (LCS = longest
  common token subsequence; F1 = 0 when LCS = 0 or either side is empty).
- ``token_f1``: token-multiset F1: overlap = Σ_w min(count_cand(w), count_ref(w)),
  P = overlap/|candidate|, R = overlap/|reference|.

Both lie in [0, 1]; an empty or unparsable caption scores 0.
"""

from __future__ import annotations

import re
from collections import Counter

import numpy as np

from ..errors import ConfigError
from .base import BaseReward, RewardContext

TOKEN = re.compile(r"[a-z0-9]+")
METRICS = ("rougeL", "token_f1")


def tokenize(text: str) -> list[str]:
    return TOKEN.findall(str(text).lower())


def match_masks(b: list[str]) -> dict[str, int]:
    """For each token of b, the bit set of its positions in b."""
    masks: dict[str, int] = {}
    for j, tok in enumerate(b):
        masks[tok] = masks.get(tok, 0) | (1 << j)
    return masks


def lcs_length(a: list[str], b: list[str], masks: dict[str, int] | None = None) -> int:
    """Length of the longest common subsequence of token lists a and b.

    Bit-parallel over b (one big-integer step per token of a): with V = all ones, for each token
    U = V & M[token], V = (V + U) | (V − U); the LCS is the number of zero bits of V.
    """
    if not a or not b:
        return 0
    if masks is None:
        masks = match_masks(b)
    full = (1 << len(b)) - 1
    v = full
    for tok in a:
        u = v & masks.get(tok, 0)
        v = ((v + u) | (v - u)) & full
    return len(b) - bin(v).count("1")


def _f1(overlap: int, n_cand: int, n_ref: int) -> float:
    if overlap == 0 or n_cand == 0 or n_ref == 0:
        return 0.0
    p, r = overlap / n_cand, overlap / n_ref
    return 2.0 * p * r / (p + r)


def rouge_l_f1(candidate: str, reference: str) -> float:
    c, r = tokenize(candidate), tokenize(reference)
    return _f1(lcs_length(c, r), len(c), len(r))


def token_f1(candidate: str, reference: str) -> float:
    c, r = tokenize(candidate), tokenize(reference)
    overlap = sum((Counter(c) & Counter(r)).values())
    return _f1(overlap, len(c), len(r))


class CaptionSimilarity(BaseReward):
    """r = ROUGE-L F1 (``metric: rougeL``) or token F1 (``metric: token_f1``) of each text
    against the reference caption. ORACLE."""

    name = "oracle_caption_similarity"
    oracle = True

    def __init__(self, metric: str = "rougeL"):
        if metric not in METRICS:
            raise ConfigError(f"reward.metric={metric!r} must be one of {', '.join(METRICS)}")
        self.metric = metric

    def __call__(self, forecasts, texts, valid, context: RewardContext) -> np.ndarray:
        ref = (context.extra or {}).get("reference")
        if ref is None:
            raise ConfigError(f"reward {self.name} needs a reference caption "
                              "(context.extra['reference']); use it with dataset=m4_captions")
        ref_toks = tokenize(ref)
        if self.metric == "rougeL":
            masks = match_masks(ref_toks)
            out = []
            for t in texts:
                c = tokenize(t)
                out.append(_f1(lcs_length(c, ref_toks, masks), len(c), len(ref_toks)))
        else:
            ref_count = Counter(ref_toks)
            out = []
            for t in texts:
                c = tokenize(t)
                out.append(_f1(sum((Counter(c) & ref_count).values()), len(c), len(ref_toks)))
        return np.array(out, dtype=np.float64)
