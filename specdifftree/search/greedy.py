"""``greedy`` — one rollout at temperature 0 (argmax of p_θ at every step).

Greedy ignores the budget: it always makes exactly one rollout (at most D − 1 tokens).
"""

from __future__ import annotations

import numpy as np

from ..backend.base import Session
from .base import Budget, Meter, Method, RewardOracle, SearchResult
from .stats import build_result
from .tree import Tree


class Greedy(Method):
    name = "greedy"

    def search(self, session: Session, reward: RewardOracle, budget: Budget,
               rng: np.random.Generator) -> SearchResult:
        meter = Meter(budget, session)
        (ro,) = session.rollout([()], meter.depth, temperature=0.0, rng=rng)
        seq = tuple(ro.tokens)
        r = float(reward([seq])[0])
        tree = Tree(meter.depth, session.eos_ids)
        tree.add_chain(0, ro.tokens, ro.logprobs)
        return build_result(tree, reward, tokens=seq, value=r, logprob=float(sum(ro.logprobs)),
                            samples=[seq], sample_rewards=[r], best_tokens=seq, best_reward=r,
                            independent=True, rollouts=1, model_rollouts=1)
