r"""``dts`` and ``dts_star`` — Diffusion Tree Sampling / Search (Jain et al. 2025, arXiv
2506.20701) on a token tree.

Target of ``dts``: π(x) ∝ p_θ(x)·exp(λ·r(x)) over complete continuations x, λ = ``lam``
(a sampler). ``dts_star`` is an optimiser of r (answer: the best continuation found). The soft
value V(x) = (1/λ)·log E_{p_θ(x'|x)}[exp(λ·r(x'))] satisfies the soft Bellman equation

    V(x) = (1/λ)·log Σ_a p_θ(a|x)·exp(λ·V(xa)),      V(x) = r(x) for complete x,

and π(a|x) = p_θ(a|x)·exp(λ·(V(xa) − V(x))).

**Tree values.** A node x has children S(x) (distinct tokens, drawn from p_θ). The tree estimate
weights each child by its exact probability, renormalised over the children seen,

    v̂(x) = (1/λ)·log Σ_{c∈S(x)} w_c·exp(λ·v̂(c)),     w_c = p_θ(c|x) / P_S(x),

which equals V once S(x) holds every token with p_θ > 0 and the children's values are exact (a
fully explored tree reproduces V and π exactly). At a finite budget it is biased (it gives the
unseen mass the value of the seen children), so ``dts`` uses it only to *propose*, and corrects
with importance weights — the estimate the answer comes from is unbiased per simulation:

**Proposal.** At node x the tree proposal q_tree draws among

- each visited child c with weight p_θ(c|x)·exp(λ·v̂(c)) (a child whose value is not known yet —
  in flight, or its reward failed and its rollout was dropped — at v̂(x); a failed terminal: 0);
- "a new child" with weight (1 − P_S(x))·exp(λ·v̂(x)) while x may get one (``expansion_k`` = 0:
  always while unseen tokens have p_θ > 0; k > 0: while x has fewer than k children), whose token
  is then drawn ∝ p_θ among the tokens that are not children yet.

Below the new child the base model rolls out (``rollout_temperature`` 1 = p_θ). The simulation's
proposal is the defensive mixture q = β·p_θ + (1 − β)·q_tree (β = ``defensive``, Hesterberg 1995):
with probability ∝ β the walk draws every token from p_θ itself. With ``expansion_k`` 0, q gives
every continuation with p_θ > 0 positive probability; with equal rewards q_tree = p_θ exactly.

**Drawing only what is new (Rao-Blackwellisation).** Evaluated continuations are never drawn
again: each node keeps the share O(x) of q's mass below it that is still unevaluated, and the walk
picks options ∝ weight × O (first the mixture component, then a token per node). Simulation i
thus draws x_i from q_i restricted to the open part, whose mass is O_i(root); the part of q_i on
the evaluated set E_i is accounted for exactly. With π̃(x) = p_θ(x)·exp(λ·r(x)), simulation i's
unbiased contribution to the (unnormalised) target measure is

    Σ_{x∈E_i} π̃(x)·δ_x  +  π̃(x_i)·O_i(root) / q_i(x_i) · δ_{x_i},

so after N simulations every evaluated x carries the weight

    W(x) = π̃(x)·( O_t(root)/q_t(x) + N − 1 − t )      (x found by simulation t).

**Answer.** One evaluated x drawn ∝ W(x) (self-normalised). With equal rewards every
simulation contributes mass exactly 1, so the normaliser is N and the answer's law is exactly
p_θ at every budget. Otherwise the law carries the O(1/N) bias of self-normalisation and tends to
π as N grows (the weights of late, well-guided draws are near π̃/π̃ ∝ 1; β > 0 bounds every weight
by exp(λ·r)/β·O). When the root closes with ``expansion_k`` 0 the whole space is in the tree and
v̂ = V: the answer is then an exact top-down draw from the tree (independent draws).

``samples``: ``num_draws`` draws from the same weights — correlated draws of one search
(``samples_independent`` is False unless 1); ``answer: best`` returns the best continuation found
instead. The weights assume ``rollout_temperature`` 1 and ``parallel_rollouts`` 1 (with n > 1 the
leaves of one step avoid each other's new terminals, a small approximation).

**``dts_star``.** Same tree and value backups; selection is greedy: the child maximising
ṽ(c) + C·sqrt(ln N(x) / N(c)), with ṽ the soft value min–max normalised by the finite rewards seen,
and the "new child" option scoring ṽ(x) + C·sqrt(ln N(x) / |S(x)|) (always taken first at a node
with no children); closed (fully evaluated) subtrees are skipped. C = ``exploration``.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import ConfigError
from .base import check_positive
from .engine import Run, TreeSearch
from .numerics import gumbel_argmax, logsumexp, logsumexp_pairs
from .tree import sample_from_tree, tail_mass, tree_distribution

NEW = -2


class DTS(TreeSearch):
    name = "dts"
    sampling = True
    default_answer = "sample"

    def __init__(self, expansion_k: int | None = 0,
                 lam: float = 1.0, defensive: float = 0.5,
                 rollout_temperature: float = 1.0, parallel_rollouts: int = 1,
                 num_draws: int = 8, answer: str | None = None):
        super().__init__(expansion_k=0 if expansion_k is None else expansion_k,
                         lam=lam, rollout_temperature=rollout_temperature,
                         parallel_rollouts=parallel_rollouts, num_draws=num_draws,
                         answer=answer)
        self.defensive = check_positive("defensive", defensive, allow_zero=True)
        if self.defensive >= 1:
            raise ConfigError(f"method.defensive={defensive!r}: must be in [0, 1)")

    # ------------------------------------------------------------------ expansion
    def can_expand(self, run: Run, x: int) -> bool:
        t = run.tree
        if self.expansion_k and len(t.children[x]) >= self.expansion_k:
            return False
        return tail_mass(t, x, run.session) > -math.inf

    def no_new(self, run: Run, x: int) -> bool:
        return not self.can_expand(run, x)

    def expand_one(self, run: Run, x: int) -> tuple[int | None, float]:
        """A new child of ``x``: a token drawn ∝ p_θ among those not yet children; returns it and
        the log-probability of that draw (log p_θ(a|x) − log of the unseen mass)."""
        t = run.tree
        kids = t.kids(x)
        draw = getattr(run.session, "draw_excluding", None)
        if draw is not None:  # a model Session draws on the device: four scalars to the host
            got = draw(t.prefix(x), t.token[kids], run.rng)
            if got is None:
                t.tail[x] = -math.inf  # every token with p_θ > 0 is a child already
                return None, 0.0
            a, lp_a, rest, rest_after = got
            leaf = t.add_child(x, a, lp_a)
            t.tail[x] = rest_after
            return leaf, lp_a - rest
        lp = np.array(run.session.logprobs([t.prefix(x)])[0], dtype=np.float64)
        lp[t.token[kids]] = -np.inf
        a = gumbel_argmax(lp, run.rng)
        if a < 0:
            t.tail[x] = -math.inf  # every token with p_θ > 0 is a child already
            return None, 0.0
        return t.add_child(x, a, float(lp[a])), float(lp[a]) - logsumexp(lp)

    # ------------------------------------------------------------------ selection (sampler)
    def _value(self, t, x: int) -> float:
        """v̂(x), or 0 before x has a value (only the root, before the first simulation)."""
        v = t.value[x]
        return 0.0 if math.isnan(v) else float(v)

    def options(self, run: Run, x: int):
        """The proposals at ``x`` over [children..., new child]: the tree's log-weights, p_θ's
        log-weights, and the log open share of each option under each (see the module
        docstring). A visited child c weighs p_θ(c|x)·exp(λ·v̂(c)); a child without a value yet
        (its rollout is in flight or was dropped) p_θ(c|x)·exp(λ·v̂(x)); a failed terminal 0;
        the new child (1 − P_S(x))·exp(λ·v̂(x)) while x may get one (``expansion_k``)."""
        t = run.tree
        kids = t.kids(x)
        n = kids.size
        vx = self._value(t, x)
        val = t.value[kids]
        visited = t.visits[kids] > 0
        closed = t.terminal[kids]  # evaluated, failed or in flight: never drawn again
        tail = tail_mass(t, x, run.session) if self.can_expand(run, x) else -np.inf
        # each array: the n children, then the new child
        logp = np.empty(n + 1)
        logp[:n] = t.logp[kids]
        logp[:n][~visited & closed & t.closed[kids]] = -np.inf  # a failed terminal
        logp[n] = tail
        logw = np.empty(n + 1)
        logw[:n] = logp[:n] + self.lam * np.where(np.isnan(val), vx, val)
        logw[n] = tail + self.lam * vx
        logo = np.zeros(n + 1)
        logo_p = np.zeros(n + 1)
        logo[:n] = np.where(visited, t.logopen[kids], 0.0)
        logo_p[:n] = np.where(visited, t.logopen_p[kids], 0.0)
        logo[:n][closed] = -np.inf
        logo_p[:n][closed] = -np.inf
        return kids, logw, logp, logo, logo_p

    def refresh_open(self, run: Run, path: list[int]) -> None:
        """Recompute the open shares bottom-up on ``path`` (root ... leaf)."""
        t = run.tree
        for x in reversed(path):
            if t.terminal[x]:
                t.logopen[x] = t.logopen_p[x] = -np.inf if not math.isnan(t.reward[x]) else 0.0
                continue
            if len(t.children[x]) == 1:  # a rollout's chain, mostly: the same sums on floats
                self._refresh_one(run, x)
            else:
                self._refresh_node(run, x)

    def _refresh_node(self, run: Run, x: int) -> None:
        """The open shares of a non-terminal node from its :meth:`options`."""
        t = run.tree
        _, logw, logp, logo, logo_p = self.options(run, x)
        a, b = logsumexp(logw + logo), logsumexp(logp + logo_p)
        t.logopen[x] = a - logsumexp(logw) if math.isfinite(a) else -np.inf
        t.logopen_p[x] = b - logsumexp(logp) if math.isfinite(b) else -np.inf

    def _refresh_one(self, run: Run, x: int) -> None:
        """``refresh_open`` at a node with one child, computed on Python floats: the same
        operations as :meth:`options` and :func:`logsumexp` on its two options (child, new
        child) in the same order, and one ``np.exp`` call for the four sums' exponentials, so
        the result is the same to the bit (``tests/test_search_exactness.py`` checks it)."""
        t = run.tree
        (c,) = t.children[x].values()
        vx = self._value(t, x)
        val = float(t.value[c])
        visited = bool(t.visits[c] > 0)
        closed = bool(t.terminal[c])
        tail = tail_mass(t, x, run.session) if self.can_expand(run, x) else -math.inf
        lp0 = float(t.logp[c])
        if not visited and closed and t.closed[c]:
            lp0 = -math.inf  # a failed terminal
        lw0 = lp0 + self.lam * (vx if math.isnan(val) else val)
        lw1 = tail + self.lam * vx
        if closed:
            lo0 = lo0_p = -math.inf
        elif visited:
            lo0, lo0_p = float(t.logopen[c]), float(t.logopen_p[c])
        else:
            lo0 = lo0_p = 0.0
        pairs = ((lw0 + lo0, lw1 + 0.0), (lp0 + lo0_p, tail + 0.0), (lw0, lw1), (lp0, tail))
        a, b, zw, zp = logsumexp_pairs(pairs)
        t.logopen[x] = a - zw if math.isfinite(a) else -np.inf
        t.logopen_p[x] = b - zp if math.isfinite(b) else -np.inf

    def select(self, run: Run) -> int | None:
        """One draw from the proposal q = β·p_θ + (1 − β)·q_tree restricted to what is not
        evaluated yet (β = ``defensive``): pick the component ∝ its weight × its open share at
        the root, then at every node an option ∝ that component's weight × its open share, down
        to a new child, a child without a value, or an unevaluated terminal. Keeps
        log q(walk) under both unrestricted components and log of q's open share."""
        t = run.tree
        beta = self.defensive
        x = 0
        lq_tree = lq_p = 0.0
        log_open = None
        plain = False
        while True:
            if t.terminal[x]:
                break  # a new terminal child
            kids, logw, logp, logo, logo_p = self.options(run, x)
            lse, lsp = logsumexp(logw), logsumexp(logp)
            if log_open is None:  # at the root: the mixture's open share and the component
                a, b = logsumexp(logw + logo) - lse, logsumexp(logp + logo_p) - lsp
                a = a if math.isfinite(a) else -math.inf
                b = b if math.isfinite(b) else -math.inf
                if beta > 0:
                    ta, tb = math.log1p(-beta) + a, math.log(beta) + b
                    log_open = float(np.logaddexp(ta, tb))
                    plain = math.isfinite(log_open) and run.rng.random() < math.exp(tb - log_open)
                else:
                    log_open = a
            both = (logp + logo_p) if plain else (logw + logo)
            j = gumbel_argmax(both, run.rng)
            if j < 0:
                if x != 0 and self.dead_end(run, x):
                    x, lq_tree, lq_p, log_open = 0, 0.0, 0.0, None
                    continue
                return None  # nothing open: the space under the expansion rule is evaluated
            lq_tree += float(logw[j]) - lse
            lq_p += float(logp[j]) - lsp
            if j == kids.size:  # a new child
                leaf, lq = self.expand_one(run, x)
                if leaf is None:
                    continue  # no token left after all: choose again at x
                lq_tree += lq
                lq_p += lq
                x = leaf
                break
            x = int(kids[j])
            if t.visits[x] == 0:
                break  # in flight or dropped: roll out from it (again)
        if beta > 0:
            logq = float(np.logaddexp(math.log1p(-beta) + lq_tree, math.log(beta) + lq_p))
        else:
            logq = lq_tree
        run.extra.setdefault("sel", []).append((logq, log_open))
        return x

    def simulated(self, run: Run, leaf: int, end: int, r: float, failed: bool) -> None:
        t = run.tree
        logq, log_open = run.extra["sel"].pop(0)
        # the rollout below the leaf is p_θ (rollout_temperature 1) under q and in π̃: it cancels
        logw = -math.inf if failed else t.seq_logprob(leaf) + self.lam * r - logq + log_open
        run.extra.setdefault("sims", []).append((end, logw, failed))

    # ------------------------------------------------------------------ backup
    def backup(self, run: Run, path: list[int]) -> None:
        t = run.tree
        lam = self.lam
        for x in reversed(path[:-1]):
            kids = t.kids(x)
            kids = kids[t.visits[kids] > 0]
            if kids.size == 1:
                t.value[x] = t.value[kids[0]]
            else:
                lw = t.logp[kids]
                t.value[x] = logsumexp(lw - logsumexp(lw) + lam * t.value[kids]) / lam
        self.refresh_open(run, path)

    def _drop(self, run: Run, leaf: int, end: int, r: float) -> None:
        super()._drop(run, leaf, end, r)
        self.refresh_open(run, run.tree.path(leaf))

    # ------------------------------------------------------------------ answer
    def answer_weights(self, run: Run) -> tuple[list[int], np.ndarray]:
        """Terminal nodes and log-weights of the answer's resampling (module docstring): each
        evaluated x gets π̃(x)·(1/q̃(x) + number of simulations after it)."""
        t = run.tree
        sims = run.extra.get("sims", [])
        n = len(sims)
        ends, logw = [], []
        for i, (end, lw, failed) in enumerate(sims):
            if failed:
                continue
            later = n - 1 - i
            lpt = t.seq_logprob(end) + self.lam * float(t.reward[end])  # log π̃(x)
            ends.append(end)
            logw.append(float(np.logaddexp(lw, lpt + math.log(later))) if later else lw)
        return ends, np.array(logw, dtype=np.float64)

    def draws(self, run: Run) -> tuple[list[int], bool]:
        t = run.tree
        if run.best < 0:
            return [run.fallback], True
        if t.closed[0] and not self.expansion_k:
            # the whole space is in the tree: v̂ = V exactly, so top-down draws are exact and
            # independent given the (deterministic) tree
            return [sample_from_tree(t, self.lam, run.rng) for _ in range(self.num_draws)], True
        ends, logw = self.answer_weights(run)
        out = [ends[gumbel_argmax(logw, run.rng)] for _ in range(self.num_draws)]
        return out, self.num_draws == 1

    def answer_law(self, run: Run) -> dict[tuple[int, ...], float]:
        """The exact law of the returned sample given this search (its tree and simulations):
        the normalised resampling weights, or the tree's distribution when the space is
        enumerated. Averaged over searches it is the law of the answer (tests, benchmarks)."""
        t = run.tree
        if t.closed[0] and not self.expansion_k:
            return tree_distribution(t, self.lam)
        ends, logw = self.answer_weights(run)
        return weights_law([t.prefix(e) for e in ends], logw)


def weights_law(seqs, logw: np.ndarray) -> dict[tuple[int, ...], float]:
    """{sequence: Σ of its normalised weights} for resampling ``seqs`` ∝ exp(logw)."""
    logw = np.asarray(logw, dtype=np.float64)
    z = logsumexp(logw)
    out: dict[tuple[int, ...], float] = {}
    for s, w in zip(seqs, logw):
        if np.isfinite(w):
            out[s] = out.get(s, 0.0) + math.exp(w - z)
    return out


class DTSStar(DTS):
    name = "dts_star"
    sampling = False
    default_answer = "best"

    def __init__(self, expansion_k: int | None = 4,
                 lam: float = 1.0, exploration: float = 1.0,
                 rollout_temperature: float = 1.0, parallel_rollouts: int = 1):
        # an optimiser: one answer (the best found), no resamples, no defensive walks
        super().__init__(expansion_k=expansion_k,
                         lam=lam, rollout_temperature=rollout_temperature,
                         parallel_rollouts=parallel_rollouts)
        self.c = check_positive("exploration", exploration, allow_zero=True)

    def simulated(self, run: Run, leaf: int, end: int, r: float, failed: bool) -> None:
        pass

    def refresh_open(self, run: Run, path: list[int]) -> None:
        pass  # the sampler's bookkeeping; dts_star skips closed subtrees instead

    def draws(self, run: Run) -> tuple[list[int], bool]:
        return TreeSearch.draws(self, run)

    def select(self, run: Run) -> int | None:
        """Greedy descent that skips closed subtrees (each simulation finds a new terminal)."""
        t = run.tree
        x = 0
        while True:
            kids = t.kids(x)
            ok = kids[~t.closed[kids] & ~t.pending[kids]]
            c = self.choose(run, x, ok, self.can_expand(run, x))
            if c == NEW:
                leaf, _ = self.expand_one(run, x)
                if leaf is not None:
                    return leaf
                continue  # no token left after all: choose again at x
            if c < 0:
                if self.dead_end(run, x):
                    x = 0
                    continue
                return None
            if t.visits[c] == 0:
                return c  # its rollout was dropped (failed reward): roll out again
            x = c

    def choose(self, run: Run, x: int, ok: np.ndarray, new: bool) -> int:
        t = run.tree
        nk = len(t.children[x])
        if new and nk == 0:
            return NEW
        if ok.size == 0:
            return NEW if new else -1
        fresh = ok[t.visits[ok] == 0]
        if fresh.size:
            return int(fresh[0])
        logn = math.log(max(int(t.visits[x]), 1))
        score = run.normalise(t.value[ok]) + self.c * np.sqrt(logn / t.visits[ok])
        j = int(np.argmax(score))
        if new:
            s_new = float(run.normalise(t.value[x])) + self.c * math.sqrt(logn / nk)
            if s_new > score[j]:
                return NEW
        return int(ok[j])
