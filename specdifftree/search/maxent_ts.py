r"""``maxent_ts`` — Maximum-Entropy Tree Search with soft backups and Boltzmann exploration, as in
MENTS (Xiao et al. 2019), with the base model as the prior policy.

The soft value is the one of the KL-regularised objective whose optimal policy is the target
π(x) ∝ p_θ(x)·exp(λ·r(x)), λ = ``lam``:

    Q̂(x, a) = v̂(xa),     V(x) = (1/λ)·log Σ_a p_θ(a|x)·exp(λ·Q(x, a)).

- **Expansion.** When selection first reaches a node it gets the top-``expansion_k`` tokens of
  p_θ(·|x) as children (plus the child a rollout already added); tokens with p_θ = 0 never.
  ``expansion_k`` 0 (or null) = no cap: every token with p_θ > 0.
- **Selection** (MENTS' E2W). Among the children that are not fully explored, C(x):

      π_sel(a|x) = (1 − ε_x)·p_θ(a|x)·exp(λ·Q̂(x,a)) / Σ_{b∈C} p_θ(b|x)·exp(λ·Q̂(x,b)) + ε_x/|C|,
      ε_x = min(1, ε·|C| / log(N(x) + 2)),

  ε = ``epsilon``: a uniform exploration share that decays with the node's visits N(x). A child
  not visited yet has Q̂ = m(x), the mean reward of the simulations through x (0 before any).
  Drawing from the mixture: with probability ε_x a uniform child, else Gumbel-max over
  log p_θ + λ·Q̂. Reaching an unvisited child ends selection; a rollout starts there.
- **Rollout.** The base model at ``rollout_temperature`` (independent of λ) completes the
  sequence; its tokens join the tree as a chain.
- **Backup** (soft Bellman, accounting for the probability mass not yet backed up). With V(x) the
  children of x visited at least once and R(x) = 1 − Σ_{c∈V(x)} p_θ(c|x) the rest of the prior mass
  (unexpanded tokens and unvisited children):

      v̂(x) = (1/λ)·log[ Σ_{c∈V(x)} p_θ(c|x)·exp(λ·v̂(c)) + R(x)·exp(λ·m(x)) ],

  i.e. the unexplored mass keeps the Monte-Carlo value m(x) of x instead of being dropped, which
  would inflate v̂ towards the few children seen. m(x) is a heuristic stand-in, not a bound: it is
  a mean under the search's own selection, which favours high-value children, so it can lie
  above the soft value of the unexplored tokens as well as below. R is computed in log space, exactly from the node's next-token
  vector when below 1e-4.

Target: r (an optimiser). Answer: the best-reward continuation found (``answer: best``,
default) or the first of the ``num_draws`` draws from the tree's soft policy
p_θ(c|x)·exp(λ·v̂(c)) (``answer: sample``), which are returned as ``samples`` either way
(correlated draws of one tree). They are draws of π only on a fully explored tree whose nodes
hold every token with p_θ > 0 (``expansion_k`` ≥ the vocabulary); with top-k expansion below the
vocabulary the unexpanded tokens keep the stand-in value for good, so even an exhausted tree
(``tree_exhausted`` = 1: the truncated tree, not the space) is not π.
"""

from __future__ import annotations

import math

import numpy as np

from .base import check_positive
from .engine import Run, TreeSearch
from .numerics import expansion_tokens, gumbel_argmax, logsumexp, logsumexp_pairs
from .tree import log_rest_mass


class MaxEntTS(TreeSearch):
    name = "maxent_ts"
    # the target is r (an optimiser); ``sampling`` only lets the soft-policy draws serve as a
    # sample set for the answer rules (sample / median / mean), which are then not draws of π
    sampling = True
    default_answer = "best"

    def __init__(self, expansion_k: int | None = 4,
                 lam: float = 1.0, epsilon: float = 0.1,
                 rollout_temperature: float = 1.0, parallel_rollouts: int = 1,
                 num_draws: int = 8, answer: str | None = None):
        super().__init__(expansion_k=0 if expansion_k is None else expansion_k,
                         lam=lam, rollout_temperature=rollout_temperature,
                         parallel_rollouts=parallel_rollouts, num_draws=num_draws,
                         answer=answer)
        self.epsilon = check_positive("epsilon", epsilon, allow_zero=True)

    def expand(self, run: Run, x: int) -> None:
        t = run.tree
        toks, lps = expansion_tokens(run.session, t.prefix(x), self.expansion_k)
        for a, v in zip(toks, lps):
            t.add_child(x, a, v)
        t.expanded[x] = True

    def select(self, run: Run) -> int | None:
        t = run.tree
        x = 0
        while True:
            if not t.expanded[x]:
                self.expand(run, x)
            kids = t.kids(x)
            ok = kids[~t.closed[kids] & ~t.pending[kids]]
            if ok.size == 0:
                if self.dead_end(run, x):
                    x = 0
                    continue
                return None
            n = int(t.visits[x])
            eps = min(1.0, self.epsilon * ok.size / math.log(n + 2))
            if run.rng.random() < eps:
                c = int(ok[run.rng.integers(ok.size)])
            else:
                m = t.mean_value(x) if n else 0.0
                q = np.where(t.visits[ok] > 0, t.value[ok], m)
                c = int(ok[gumbel_argmax(t.logp[ok] + self.lam * q, run.rng)])
            if t.visits[c] == 0:
                return c
            x = c

    def backup(self, run: Run, path: list[int]) -> None:
        t = run.tree
        for x in reversed(path[:-1]):
            if len(t.children[x]) == 1:  # a rollout's chain, mostly: the same sums on floats
                self._backup_one(run, x)
            else:
                self._backup_node(run, x)

    def _backup_node(self, run: Run, x: int) -> None:
        """v̂(x) from its evaluated children and the unexpanded rest (module docstring)."""
        t = run.tree
        lam = self.lam
        kids = t.kids(x)
        vis = kids[t.visits[kids] > 0]
        terms = t.logp[vis] + lam * t.value[vis]
        rest = log_rest_mass(t, x, vis, run.session)
        if rest > -math.inf:
            terms = np.append(terms, rest + lam * t.mean_value(x))
        t.value[x] = logsumexp(terms) / lam

    def _backup_one(self, run: Run, x: int) -> None:
        """``backup`` at a node with one child, on Python floats: the same operations as the
        array formula in the same order (the log-sum-exp of one term is that term; of two, one
        ``np.exp`` call), so the same value to the bit (``tests/test_search_exactness.py``)."""
        t = run.tree
        lam = self.lam
        (c,) = t.children[x].values()
        if not t.visits[c] > 0:  # nothing evaluated below x: the array formula's empty sum
            vis = np.zeros(0, dtype=np.int64)
            rest = log_rest_mass(t, x, vis, run.session)
            terms = [rest + lam * t.mean_value(x)] if rest > -math.inf else []
            t.value[x] = (logsumexp(terms) if terms else -math.inf) / lam
            return
        term = float(t.logp[c]) + lam * float(t.value[c])
        rest = log_rest_mass(t, x, np.array([c]), run.session)
        if rest > -math.inf:
            (v,) = logsumexp_pairs([(term, rest + lam * t.mean_value(x))])
        else:
            v = term + 0.0  # logsumexp of one term: the term (+ log 1)
        t.value[x] = v / lam
