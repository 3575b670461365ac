r"""``smc`` — sequential Monte Carlo over token blocks, an approximate sampler of
π(x) ∝ p_θ(x)·exp(λ·r(x)).

K particles are extended block by block (``block_size`` tokens per block, sampled from p_θ at
temperature 1). After every block each particle's weight is multiplied by the incremental
potential ψ_t / ψ_{t−1} and, when the effective sample size falls below
``resample_threshold``·K, the particles are resampled (multinomial) and their weights reset. A
particle that completes (EOS or the depth limit) gets its exact final factor exp(λ·r(x)) / ψ_{t−1}
and keeps its weight from then on. The answer is one complete particle drawn ∝ its weight.

The potential ψ_t of a prefix (``potential``):

- ``lookahead`` (default, for rewards defined only on complete continuations): ψ_t =
  exp(λ·r(y)) with y one p_θ rollout that completes the prefix — an unbiased estimate of the
  twisting function Z(prefix) = E_{p_θ}[exp(λ·r) | prefix] (the optimal twist). The look-ahead is
  a fresh random variable carried with the particle, so the weights telescope to exp(λ·r(x)) and
  the final particles target π exactly on the extended space. Each look-ahead is a scored
  rollout and counts against the budget.
- ``prefix``: ψ_t = exp(λ·r(prefix)) — the reward of the partial continuation scored as if it
  were complete (the forecasting task parses any prefix: missing values repeat the last one), i.e.
  resampling by the incremental reward. Costs reward calls only; informative only when the
  reward of a prefix predicts the final reward.
- ``none``: ψ = 1 until completion — importance resampling of K p_θ samples (= ``sir``).

Budget: with ``budget.rollouts`` = N the filter runs K = max(1, ⌊N / B⌋) particles, B =
⌈D / block_size⌉ blocks (each particle uses at most one scored rollout per block: a look-ahead
or its completion). Under ``budget.tokens`` K is fixed up front from the worst-case cost of a
particle (D tokens plus D − L for the look-ahead at each block boundary L), so SMC usually spends
less than its token budget (particles that end early cost less); when even
one particle does not fit, it runs one particle without look-aheads (one rollout). Like every
consistent sampler at a finite budget, its law carries an O(1/K) bias; here a large one at large
λ, because one look-ahead is a noisy twist (measured on the benchmark toy at 256 rollouts: TV
0.035 from π at λ 0.5 and 2, 0.20 at λ 10; docs/search.md).

``samples``: ``num_draws`` draws with replacement from the final weighted particles
(correlated: ``samples_independent`` is False unless ``num_draws`` is 1).
"""

from __future__ import annotations

import math

import numpy as np

from ..backend.base import Session
from .base import (Budget, Meter, Method, RewardOracle, SearchResult, check_choice,
                   check_positive)
from .numerics import gumbel_argmax, logsumexp
from .stats import build_result
from .tree import Tree


class SMC(Method):
    name = "smc"
    sampling = True  # its samples are a sample set (answer rules, specdifftree.answers)

    def __init__(self, lam: float = 1.0, block_size: int = 0,
                 potential: str = "lookahead", resample_threshold: float = 0.5,
                 num_draws: int = 8, answer: str = "sample"):
        self.lam = check_positive("lam", lam)
        self.block_size = check_positive("block_size", block_size, integer=True, allow_zero=True)
        self.potential = check_choice("potential", potential, ("lookahead", "prefix", "none"))
        self.threshold = check_positive("resample_threshold", resample_threshold, allow_zero=True)
        self.num_draws = check_positive("num_draws", num_draws, integer=True)
        self.answer = check_choice("answer", answer, ("sample", "best"))

    def _plan(self, meter: Meter) -> tuple[int, int, str]:
        """(particles K, block size, potential) for this budget."""
        D = meter.depth
        bs = self.block_size or max(1, -(-D // 4))
        blocks = -(-D // bs)
        potential = self.potential
        if meter.max_rollouts is not None:
            k = max(1, meter.max_rollouts // (blocks if potential == "lookahead" else 1))
        else:
            k = None
        left = meter.tokens_left()
        if left is not None:
            # worst case per particle: every block's tokens, and every look-ahead from depth L
            # feeding the block's last token and D − L − 1 generated ones
            per = D
            if potential == "lookahead":
                per += sum(D - b * bs for b in range(1, blocks) if D - b * bs > 0)
            kt = max(0, left // per)
            if kt == 0:
                return 1, D, "none"  # not even one filtered particle fits: one plain rollout
            k = kt if k is None else min(k, kt)
        return int(k), int(bs), potential

    def run_filter(self, session: Session, reward: RewardOracle, budget: Budget,
                   rng: np.random.Generator) -> dict:
        """Run the filter; returns its final particles, weights and bookkeeping."""
        meter = Meter(budget, session)
        D = meter.depth
        K, bs, potential = self._plan(meter)
        lam = self.lam
        eos = session.eos_ids
        parts: list[tuple[int, ...]] = [()] * K
        plogp = np.zeros(K)                 # log p_θ of each particle
        logw = np.zeros(K)                  # log weights
        logpsi = np.zeros(K)                # log ψ of each particle's current prefix
        done = np.zeros(K, dtype=bool)
        final_r = np.full(K, np.nan)
        scored: list[tuple[tuple[int, ...], float, float]] = []  # (seq, reward, log p_θ)
        sims = model_rollouts = resamples = 0
        depth = 0  # every live particle has exactly this many tokens

        while not done.all():
            alive = np.flatnonzero(~done)
            step = min(bs, D - depth)
            ros = session.rollout([parts[i] for i in alive], step, temperature=1.0, rng=rng)
            model_rollouts += len(ros)
            depth += step
            for i, ro in zip(alive, ros):
                parts[i] = parts[i] + tuple(int(t) for t in ro.tokens)
                plogp[i] += float(sum(ro.logprobs))
            fin = [int(i) for i in alive if len(parts[i]) >= D or parts[i][-1] in eos]
            cont = [int(i) for i in alive if not (len(parts[i]) >= D or parts[i][-1] in eos)]
            look: list[tuple[int, ...]] = []
            look_lp: list[float] = []
            if cont and potential == "lookahead":
                lro = session.rollout([parts[i] for i in cont], D - depth, temperature=1.0,
                                      rng=rng)
                model_rollouts += len(lro)
                for i, ro in zip(cont, lro):
                    look.append(parts[i] + tuple(int(t) for t in ro.tokens))
                    look_lp.append(float(plogp[i] + sum(ro.logprobs)))
            pref = [parts[i] for i in cont] if potential == "prefix" else []
            batch = [parts[i] for i in fin] + look + pref
            rs = reward(batch) if batch else np.zeros(0)
            bad = [reward.failed(q) for q in batch]
            sims += len(fin) + len(look)
            for n, i in enumerate(fin):
                final_r[i] = float(rs[n])
                done[i] = True
                logw[i] += (-math.inf if bad[n] else lam * float(rs[n])) - logpsi[i]
                scored.append((parts[i], float(rs[n]), float(plogp[i])))
            off = len(fin)
            for n, y in enumerate(look):
                if not bad[off + n]:
                    scored.append((y, float(rs[off + n]), look_lp[n]))
            if potential != "none":
                off2 = off  # look-aheads (lookahead) or the prefixes themselves (prefix)
                for n, i in enumerate(cont):
                    if bad[off2 + n]:
                        continue  # no information: ψ stays (incremental weight 1)
                    lp_new = lam * float(rs[off2 + n])
                    logw[i] += lp_new - logpsi[i]
                    logpsi[i] = lp_new
            # resample when the effective sample size is low
            if not done.all() and K > 1:
                z = logsumexp(logw)
                if math.isfinite(z):
                    wn = np.exp(logw - z)
                    ess = 1.0 / float(np.sum(wn ** 2))
                    if ess < self.threshold * K:
                        idx = rng.choice(K, size=K, p=wn / wn.sum())
                        parts = [parts[j] for j in idx]
                        plogp, logpsi, done, final_r = (plogp[idx], logpsi[idx], done[idx],
                                                        final_r[idx])
                        logw = np.full(K, z - math.log(K))
                        resamples += 1
        meter.done = sims
        return {"parts": parts, "logw": logw, "plogp": plogp, "rewards": final_r,
                "scored": scored, "sims": sims, "model_rollouts": model_rollouts,
                "particles": K, "resamples": resamples}

    def answer_law(self, session, reward, budget, rng) -> dict[tuple[int, ...], float]:
        """The exact law of the answer given one run of the filter (tests, benchmarks)."""
        from .dts import weights_law

        f = self.run_filter(session, reward, budget, rng)
        return weights_law(f["parts"], f["logw"])

    def search(self, session: Session, reward: RewardOracle, budget: Budget,
               rng: np.random.Generator) -> SearchResult:
        f = self.run_filter(session, reward, budget, rng)
        parts, logw = f["parts"], f["logw"]
        # every complete continuation scored (particles and look-aheads) competes for best
        cand = [c for c in f["scored"] if math.isfinite(c[1]) and not reward.failed(c[0])]
        ok = np.isfinite(logw)
        if ok.any():
            draws = [gumbel_argmax(logw, rng) for _ in range(self.num_draws)]
        else:
            draws = [0]
        if cand:
            bs, br, blp = max(cand, key=lambda c: c[1])
        else:
            bs, br, blp = parts[draws[0]], float(f["rewards"][draws[0]]), float(f["plogp"][draws[0]])
        samples = [parts[i] for i in draws]
        if self.answer == "sample":
            tokens, rew, lp = samples[0], float(f["rewards"][draws[0]]), float(f["plogp"][draws[0]])
        else:
            tokens, rew, lp = bs, br, blp
        tree = Tree(max(1, max(len(s) for s in parts)), session.eos_ids)
        for s in parts:
            node = 0
            for t in s:
                node = tree.add_child(node, t, 0.0)
        return build_result(tree, reward, tokens=tokens, value=rew, logprob=lp, samples=samples,
                            sample_rewards=[f["rewards"][i] for i in draws], best_tokens=bs,
                            best_reward=br, independent=len(samples) == 1, rollouts=f["sims"],
                            model_rollouts=f["model_rollouts"], particles=f["particles"],
                            resamples=f["resamples"])
