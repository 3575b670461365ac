r"""``best_of_n`` — N independent samples from the base model, the best reward wins.

N = ``budget.rollouts`` or as many as ``budget.tokens`` allows; each
sample is a rollout from the empty prefix at ``rollout_temperature`` (1.0 = p_θ) up to EOS or the
depth limit. ``parallel_rollouts`` rollouts are generated per step in one batched Session call
and their rewards are computed in one batch. The answer is argmax_i r(x_i) (the first on ties);
``samples`` are all N samples (with repeats): independent draws of p_θ at
``rollout_temperature`` (``samples_independent`` is True). The samples are stored in a prefix tree only to
report ``nodes``/``max_depth``/``mean_branching``.
"""

from __future__ import annotations

import numpy as np

from ..backend.base import Session
from .base import (Budget, Meter, Method, RewardOracle, SearchResult, check_positive)
from .stats import build_result
from .tree import Tree


class BestOfN(Method):
    name = "best_of_n"
    sampling = True  # its N samples are a sample set (answer rules, see specdifftree.answers)

    def __init__(self, rollout_temperature: float = 1.0, parallel_rollouts: int = 1):
        self.rollout_temperature = check_positive("rollout_temperature", rollout_temperature,
                                                  allow_zero=True)
        self.parallel_rollouts = check_positive("parallel_rollouts", parallel_rollouts, integer=True)

    def search(self, session: Session, reward: RewardOracle, budget: Budget,
               rng: np.random.Generator) -> SearchResult:
        meter = Meter(budget, session)
        tree = Tree(meter.depth, session.eos_ids)
        seqs: list[tuple[int, ...]] = []
        logps: list[float] = []
        rewards: list[float] = []
        while (n := meter.allow(self.parallel_rollouts)) > 0:
            ros = session.rollout([()] * n, meter.depth, temperature=self.rollout_temperature,
                                  rng=rng)
            batch = [tuple(ro.tokens) for ro in ros]
            rewards.extend(float(r) for r in reward(batch))
            for ro, s in zip(ros, batch):
                tree.add_chain(0, ro.tokens, ro.logprobs)
                seqs.append(s)
                logps.append(float(sum(ro.logprobs)))
            meter.done += n
        i = int(np.argmax(rewards))
        return build_result(tree, reward, tokens=seqs[i], value=rewards[i], logprob=logps[i],
                            samples=seqs, sample_rewards=rewards, best_tokens=seqs[i],
                            best_reward=rewards[i], independent=True, rollouts=len(seqs),
                            model_rollouts=len(seqs))
