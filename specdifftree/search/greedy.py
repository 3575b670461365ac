"""``greedy`` — one rollout at temperature 0 (argmax of p_θ at every step).

Greedy ignores the budget: it always makes exactly one rollout (at most D − 1 tokens).
"""

from __future__ import annotations

import numpy as np

from .base import Budget, Meter, Method, RewardOracle, SearchResult, SessionLike
from .stats import sample_stats
from .tree import Tree


class Greedy(Method):
    name = "greedy"

    def search(self, session: SessionLike, reward: RewardOracle, budget: Budget,
               rng: np.random.Generator) -> SearchResult:
        meter = Meter(budget, session, 1)
        calls0, bad0 = reward.calls, reward.nonfinite
        (ro,) = session.rollout([()], meter.depth, temperature=0.0, rng=rng)
        seq = tuple(ro.tokens)
        r = float(reward([seq])[0])
        tree = Tree(meter.depth, session.eos_ids)
        tree.add_chain(0, ro.tokens, ro.logprobs)
        stats = {"rollouts": 1, **tree.stats(), **sample_stats([seq]), "model_rollouts": 1,
                 "best_reward": r, "reward_calls": int(reward.calls - calls0),
                 "nonfinite_rewards": int(reward.nonfinite - bad0), "samples_independent": 1}
        return SearchResult(tokens=seq, reward=r, logprob=float(sum(ro.logprobs)), samples=[seq],
                            stats=stats, best_tokens=seq, best_reward=r, sample_rewards=[r],
                            samples_independent=True)
