r"""``dts`` and ``dts_star`` — Diffusion Tree Sampling / Search (Jain et al. 2025, arXiv
2506.20701) on a token tree.

Target: π(x) ∝ p_θ(x)·exp(λ·r(x)) over complete continuations x, λ = ``temperature``. Its soft
value V(x) = (1/λ)·log E_{p_θ(x'|x)}[exp(λ·r(x'))] satisfies the soft Bellman equation

    V(x) = (1/λ)·log Σ_a p_θ(a|x)·exp(λ·V(xa)),      V(x) = r(x) for complete x,

and π(a|x) = p_θ(a|x)·exp(λ·(V(xa) − V(x))), so sampling top-down with V gives exact samples.

**Tree estimate.** A node x has children S(x) (distinct tokens, drawn from p_θ). Because a language
model gives the exact p_θ(a|x), the estimate weights each child by its exact probability,
renormalised over the children seen:

    v̂(x) = (1/λ)·log Σ_{c∈S(x)} w_c·exp(λ·v̂(c)),     w_c = p_θ(c|x) / P_S(x),   P_S = Σ_{c∈S} p_θ(c|x),

instead of the paper's equal weights for children sampled i.i.d. from the prior. Both estimate
(1/λ)·log E_{p_θ}[exp(λ·V)]; the exact weights remove the noise of the empirical frequencies
(children are distinct tokens, so repeats would merge anyway), and the estimate is *exact* once
S(x) holds every token with p_θ > 0 and the children's values are exact — so a fully explored
tree reproduces V and π exactly. The weights equal the children's probabilities under the
"unseen tokens are like the seen ones" completion, which puts the unexplored mass 1 − P_S(x) at
value v̂(x).

**Selection (``dts``).** At x, draw (Gumbel-max, in log space) among

- each evaluated, not fully explored child c with weight p_θ(c|x)·exp(λ·v̂(c)), and
- "a new child" with weight (1 − P_S(x))·exp(λ·v̂(x)) — the mass the estimate gives to unseen
  tokens — available while x has fewer than ``expansion_k`` children (0 = no limit) and unseen
  tokens have p_θ > 0.

So at every node the selection probabilities are the tree's current estimate of π(a|x), and new
children are opened exactly as often as that estimate puts mass on them (at a node with one
dominant token, rarely; at an uncertain one, often). 1 − P_S is computed as log1mexp(log P_S), or
from the full next-token vector when it is below 1e-4 (exact for tiny and zero masses).

**Expansion.** "A new child" draws a token a ∝ p_θ(a|x) among the tokens that are not children yet
(Gumbel-max over the node's log-probs with the children masked to −inf).

**Rollout.** From the new child the base model completes the sequence (``rollout_temperature``,
1.0 = p_θ; other values bias the estimate) and the rollout's tokens join the tree as a chain.

**Backup.** v̂(terminal) = r; every ancestor is recomputed with the soft Bellman backup above
(a chain node's single child gives v̂(x) = v̂(c)).

**Answer (``dts``).** ``num_samples`` draws from the tree's estimate of π: from the root, pick an
evaluated child with probability ∝ p_θ(c|x)·exp(λ·v̂(c)) down to a complete continuation. The
first draw is the answer (``answer: sample``); the best continuation evaluated is recorded in
``best_tokens``/``best_reward`` (``answer: best`` returns it instead).

**``dts_star``.** Same tree and backups; selection is greedy: the child maximising
ṽ(c) + C·sqrt(ln N(x) / N(c)), with ṽ the soft value min–max normalised by the rewards seen, and
the "new child" option scoring ṽ(x) + C·sqrt(ln N(x) / |S(x)|) (always taken first at a node with
no children). C = ``exploration``. Answer: the best-reward continuation found.
"""

from __future__ import annotations

import math

import numpy as np

from .base import check_positive
from .engine import Run, TreeSearch
from .numerics import gumbel_argmax, logsumexp
from .tree import tail_mass

NEW = -2


class DTS(TreeSearch):
    name = "dts"
    sampling = True
    default_answer = "sample"
    unlimited_k = True

    # ------------------------------------------------------------------ expansion
    def can_expand(self, run: Run, x: int) -> bool:
        t = run.tree
        if self.expansion_k and len(t.children[x]) >= self.expansion_k:
            return False
        return tail_mass(t, x, run.session) > -math.inf

    def no_new(self, run: Run, x: int) -> bool:
        return not self.can_expand(run, x)

    def expand_one(self, run: Run, x: int) -> int | None:
        """A new child of ``x``: a token drawn ∝ p_θ among those not yet children."""
        t = run.tree
        lp = np.array(run.session.logprobs([t.prefix(x)])[0], dtype=np.float64)
        kids = t.kids(x)
        lp[t.token[kids]] = -np.inf
        a = gumbel_argmax(lp, run.rng)
        if a < 0:
            t.tail[x] = -math.inf  # every token with p_θ > 0 is a child already
            return None
        return t.add_child(x, a, float(lp[a]))

    # ------------------------------------------------------------------ selection
    def choose(self, run: Run, x: int, ok: np.ndarray, new: bool) -> int:
        """Boltzmann choice among the children ``ok`` and (if ``new``) a new child."""
        t = run.tree
        if ok.size == 0:
            return NEW if new else -1
        logw = t.logp[ok] + self.lam * t.value[ok]
        if new:
            logw = np.append(logw, tail_mass(t, x, run.session) + self.lam * t.value[x])
        j = gumbel_argmax(logw, run.rng)
        if j < 0:
            return -1
        return NEW if j == ok.size else int(ok[j])

    def select(self, run: Run) -> int | None:
        t = run.tree
        x = 0
        while True:
            kids = t.kids(x)
            ok = kids[~t.closed[kids] & ~t.pending[kids]]
            c = self.choose(run, x, ok, self.can_expand(run, x))
            if c == NEW:
                leaf = self.expand_one(run, x)
                if leaf is not None:
                    return leaf
                continue  # no token left after all: choose again at x
            if c < 0:
                if self.dead_end(run, x):
                    x = 0
                    continue
                return None
            x = c

    # ------------------------------------------------------------------ backup
    def backup(self, run: Run, path: list[int]) -> None:
        t = run.tree
        lam = self.lam
        for x in reversed(path[:-1]):
            ch = t.children[x]
            if len(ch) == 1:
                (c,) = ch.values()
                t.value[x] = t.value[c]
                continue
            kids = t.kids(x)
            kids = kids[t.visits[kids] > 0]
            lw = t.logp[kids]
            t.value[x] = logsumexp(lw - logsumexp(lw) + lam * t.value[kids]) / lam


class DTSStar(DTS):
    name = "dts_star"
    sampling = False
    default_answer = "best"

    def __init__(self, exploration: float = 1.0, **kw):
        super().__init__(**kw)
        self.c = check_positive("exploration", exploration, allow_zero=True)

    def choose(self, run: Run, x: int, ok: np.ndarray, new: bool) -> int:
        t = run.tree
        nk = len(t.children[x])
        if new and nk == 0:
            return NEW
        if ok.size == 0:
            return NEW if new else -1
        logn = math.log(max(int(t.visits[x]), 1))
        score = run.normalise(t.value[ok]) + self.c * np.sqrt(logn / t.visits[ok])
        j = int(np.argmax(score))
        if new:
            s_new = float(run.normalise(t.value[x])) + self.c * math.sqrt(logn / nk)
            if s_new > score[j]:
                return NEW
        return int(ok[j])
