"""Caption similarity to the reference caption — an ORACLE reward for the caption task.

The reference caption (``context.extra["reference"]``) is the answer key: a real user would not
have it, so the reward's name says *oracle* (``oracle_caption_similarity``, config
``reward=caption_similarity``).

The metrics (ROUGE-L F1 and token F1, tokenization included) are defined in
:mod:`specdifftree.metrics.text`; the caption task scores its answers with the same functions.

Both lie in [0, 1]; an empty or unparsable caption scores 0.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from ..errors import ConfigError
from ..metrics.text import f1_score, lcs_length, match_masks, tokenize
from .base import BaseReward, RewardContext

METRICS = ("rougeL", "token_f1")


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
                out.append(f1_score(lcs_length(c, ref_toks, masks), len(c), len(ref_toks)))
        else:
            ref_count = Counter(ref_toks)
            out = []
            for t in texts:
                c = tokenize(t)
                out.append(f1_score(sum((Counter(c) & ref_count).values()), len(c), len(ref_toks)))
        return np.array(out, dtype=np.float64)
