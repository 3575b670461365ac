r"""``sir`` — sampling-importance-resampling: N independent samples from p_θ, one resampled
∝ exp(λ·r).

N = ``budget.rollouts`` or as many as ``budget.tokens`` allows, drawn
exactly as ``best_of_n`` draws them (rollouts from the empty prefix at temperature 1, i.e. from
p_θ, ``parallel_rollouts`` per batched Session call, one reward batch per step). The answer is
x_i with probability w_i / Σ_j w_j, w_i = exp(λ·r(x_i)) (Gumbel-max in log space): the
self-normalised importance sampler of π(x) ∝ p_θ(x)·exp(λ·r(x)) with proposal p_θ. Its law tends
to π as N grows (the bias is O(1/N)); with equal rewards it is exactly p_θ for every N.

A rollout whose reward failed gets weight 0 (it is dropped). ``samples``: ``num_draws`` draws
with replacement from the same weights — resamples of one set of rollouts, so they are correlated
(``samples_independent`` is False unless ``num_draws`` is 1). ``answer: best`` returns the
best-reward rollout instead (then ``sir`` is ``best_of_n``).
"""

from __future__ import annotations

import numpy as np

from ..backend.base import Session
from .base import (Budget, Meter, Method, RewardOracle, SearchResult, check_choice,
                   check_positive)
from .numerics import gumbel_argmax
from .stats import build_result
from .tree import Tree


def sample_rollouts(session: Session, reward: RewardOracle, meter: Meter, parallel: int,
                    temperature: float, rng: np.random.Generator):
    """Independent rollouts from the empty prefix until the meter stops them.

    Returns (sequences, log p_θ of each, rewards, failed mask, the prefix tree of the samples)."""
    tree = Tree(meter.depth, session.eos_ids)
    seqs: list[tuple[int, ...]] = []
    logps: list[float] = []
    rewards: list[float] = []
    while (n := meter.allow(parallel)) > 0:
        ros = session.rollout([()] * n, meter.depth, temperature=temperature, rng=rng)
        batch = [tuple(ro.tokens) for ro in ros]
        rewards.extend(float(r) for r in reward(batch))
        for ro, s in zip(ros, batch):
            tree.add_chain(0, ro.tokens, ro.logprobs)
            seqs.append(s)
            logps.append(float(sum(ro.logprobs)))
        meter.done += n
    failed = np.array([reward.failed(s) for s in seqs], dtype=bool)
    return seqs, np.array(logps), np.array(rewards), failed, tree


class SIR(Method):
    name = "sir"
    sampling = True  # its samples are a sample set (answer rules, specdifftree.answers)

    def __init__(self, lam: float = 1.0, parallel_rollouts: int = 1,
                 num_draws: int = 8, answer: str = "sample"):
        self.lam = check_positive("lam", lam)
        self.parallel_rollouts = check_positive("parallel_rollouts", parallel_rollouts, integer=True)
        self.num_draws = check_positive("num_draws", num_draws, integer=True)
        self.answer = check_choice("answer", answer, ("sample", "best"))

    @staticmethod
    def log_weights(lam: float, rewards: np.ndarray, failed: np.ndarray) -> np.ndarray:
        return np.where(failed, -np.inf, lam * rewards)

    def answer_law(self, session: Session, reward: RewardOracle, budget: Budget,
                   rng: np.random.Generator) -> dict[tuple[int, ...], float]:
        """The exact law of the answer given the N rollouts of one search (tests, benchmarks)."""
        from .dts import weights_law

        meter = Meter(budget, session)
        seqs, _, rewards, failed, _ = sample_rollouts(session, reward, meter,
                                                      self.parallel_rollouts, 1.0, rng)
        return weights_law(seqs, self.log_weights(self.lam, rewards, failed))

    def search(self, session: Session, reward: RewardOracle, budget: Budget,
               rng: np.random.Generator) -> SearchResult:
        meter = Meter(budget, session)
        seqs, logps, rewards, failed, tree = sample_rollouts(
            session, reward, meter, self.parallel_rollouts, 1.0, rng)
        logw = self.log_weights(self.lam, rewards, failed)
        ok = ~failed
        best = int(np.flatnonzero(ok)[np.argmax(rewards[ok])]) if ok.any() else 0
        if ok.any():
            draws = [gumbel_argmax(logw, rng) for _ in range(self.num_draws)]
        else:
            draws = [best]
        chosen = draws[0] if self.answer == "sample" else best
        samples = [seqs[i] for i in draws]
        return build_result(tree, reward, tokens=seqs[chosen], value=rewards[chosen],
                            logprob=logps[chosen], samples=samples,
                            sample_rewards=[rewards[i] for i in draws], best_tokens=seqs[best],
                            best_reward=rewards[best], independent=len(samples) == 1,
                            rollouts=len(seqs), model_rollouts=len(seqs),
                            failed_rollouts=failed.sum())
