"""Text similarity of a generated caption to a reference caption (the caption task's metrics).

Tokens: the text is lower-cased and split into maximal runs of ASCII letters and digits
(``[a-z0-9]+``), no stemming, no stop words.

- ROUGE-L F1 = 2PR/(P+R), P = LCS/|candidate|, R = LCS/|reference| (LCS = longest common token
  subsequence; F1 = 0 when LCS = 0 or either side is empty).
- token F1: token-multiset F1: overlap = Σ_w min(count_cand(w), count_ref(w)),
  P = overlap/|candidate|, R = overlap/|reference|.

Both lie in [0, 1]; an empty caption scores 0.
"""

from __future__ import annotations

import re
from collections import Counter

TOKEN = re.compile(r"[a-z0-9]+")


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


def f1_score(overlap: int, n_cand: int, n_ref: int) -> float:
    if overlap == 0 or n_cand == 0 or n_ref == 0:
        return 0.0
    p, r = overlap / n_cand, overlap / n_ref
    return 2.0 * p * r / (p + r)


def rouge_l_f1(candidate: str, reference: str) -> float:
    c, r = tokenize(candidate), tokenize(reference)
    return f1_score(lcs_length(c, r), len(c), len(r))


def token_f1(candidate: str, reference: str) -> float:
    c, r = tokenize(candidate), tokenize(reference)
    overlap = sum((Counter(c) & Counter(r)).values())
    return f1_score(overlap, len(c), len(r))
