r"""``beam`` — beam search by log-probability, final choice by reward.

The beam holds the ``expansion_k`` = k hypotheses with the highest log p_θ(prefix) (``expansion_k``
0 or null: no cap, k = the vocabulary size). Each step asks
the Session for the next-token log-probs of every unfinished hypothesis (one batched call),
extends each by its k most likely tokens, and keeps the k best of {finished hypotheses} ∪
{extensions} by cumulative log-prob (ties: earlier first). A hypothesis is finished when it ends in
EOS or has D = ``budget.max_new_tokens`` tokens. The search stops when the whole beam is finished.
Then every finished hypothesis of the beam is scored in one reward batch and the best reward
wins; ``samples`` are those hypotheses.

Budget: beam's work is fixed by k and D, so ``budget.rollouts`` does not apply. Under
``budget.tokens`` a step runs only if its worst-case cost (Σ of the unfinished hypotheses' lengths;
in practice the Session feeds only each hypothesis' newest token, whose parent's KV it holds) fits
in what is left; otherwise the
beam stops, and the most likely unfinished hypothesis is completed greedily by one rollout (at
most D − 1 tokens), so the budget is exceeded by at most one rollout.
"""

from __future__ import annotations

import numpy as np

from ..backend.base import Session
from .base import (Budget, Meter, Method, RewardOracle, SearchResult, check_positive)
from .numerics import topk_next
from .stats import build_result
from .tree import Tree


class Beam(Method):
    name = "beam"

    def __init__(self, expansion_k: int | None = 4):
        # 0 (or null) = no cap: k is the vocabulary size (every token is tried, and the beam
        # keeps up to that many hypotheses)
        self.k = check_positive("expansion_k", 0 if expansion_k is None else expansion_k,
                                integer=True, allow_zero=True, note=" (0 or null = no cap)")

    def search(self, session: Session, reward: RewardOracle, budget: Budget,
               rng: np.random.Generator) -> SearchResult:
        meter = Meter(budget, session)
        k = self.k or int(session.vocab_size)
        D = meter.depth
        tree = Tree(D, session.eos_ids)
        beam: list[tuple[float, int]] = [(0.0, 0)]  # (log-prob, node)
        stopped = False
        while any(not tree.terminal[n] for _, n in beam):
            alive = [(s, n) for s, n in beam if not tree.terminal[n]]
            left = meter.tokens_left()
            cost = sum(int(tree.depth[n]) for _, n in alive)
            if left is not None and cost > 0 and cost > left:
                stopped = True
                break
            # a Session computes the next step ahead on the device while this one is read;
            # not when this step reaches the depth limit or the next one may not fit the budget
            depth = int(tree.depth[alive[0][1]])
            ahead = depth + 1 < D and (left is None or left - cost >= k * (depth + 1))
            nxt = topk_next(session, [tree.prefix(n) for _, n in alive], k,
                            scores=[s for s, _ in alive] if ahead else None)
            cands = [(s, n) for s, n in beam if tree.terminal[n]]
            for (s, n), (ids, lps) in zip(alive, nxt):
                for a, lp in zip(ids, lps):
                    cands.append((s + lp, tree.add_child(n, a, lp)))
            order = sorted(range(len(cands)), key=lambda i: (-cands[i][0], i))
            beam = [cands[i] for i in order[:k]]
        finished = [n for _, n in beam if tree.terminal[n]]
        rollouts = 0
        if stopped:
            s, n = max((b for b in beam if not tree.terminal[b[1]]), key=lambda b: b[0])
            if not finished or (meter.tokens_left() or 0) > 0:
                (ro,) = session.rollout([tree.prefix(n)], D - int(tree.depth[n]), temperature=0.0,
                                        rng=rng)
                finished.append(tree.add_chain(n, ro.tokens, ro.logprobs))
                rollouts = 1
        seqs = [tree.prefix(n) for n in finished]
        rewards = reward(seqs)
        i = int(np.argmax(rewards))
        for n, r in zip(finished, rewards):
            tree.reward[n] = r
        return build_result(tree, reward, tokens=seqs[i], value=rewards[i],
                            logprob=tree.seq_logprob(finished[i]), samples=seqs,
                            sample_rewards=rewards, best_tokens=seqs[i], best_reward=rewards[i],
                            independent=False, rollouts=len(seqs), model_rollouts=rollouts,
                            budget_stopped=stopped)
