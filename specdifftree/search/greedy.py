"""Greedy decoding: one rollout at temperature 0 (argmax of p_θ at every step)."""

from __future__ import annotations

import numpy as np

from .base import Budget, Method, RewardOracle, SearchResult, SessionLike


class Greedy(Method):
    name = "greedy"

    def __init__(self, **_ignored):
        pass

    def search(self, session: SessionLike, reward: RewardOracle, budget: Budget,
               rng: np.random.Generator) -> SearchResult:
        (ro,) = session.rollout([()], budget.max_new_tokens, temperature=0.0, rng=rng)
        seq = tuple(ro.tokens)
        r = float(reward([seq])[0])
        return SearchResult(tokens=seq, reward=r, logprob=float(sum(ro.logprobs)), samples=[seq],
                            stats={"rollouts": 1, "nodes": len(seq), "max_depth": len(seq),
                                   "mean_branching": 1.0 if seq else 0.0})
