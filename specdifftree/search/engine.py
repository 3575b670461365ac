"""The loop every tree method shares: select → (expand) → rollout → evaluate → backup.

A method subclasses :class:`TreeSearch` and supplies three functions of a :class:`Run` (one
search's state):

- ``select(run) -> node | None`` walks from the root, expanding as the method does, and returns a
  leaf to simulate from: a node never visited (a rollout starts there) or a new terminal child;
- ``backup(run, path)`` updates the method's values on the root path of a finished simulation
  (visit counts and reward sums are already updated by :meth:`Tree.record`);
- ``no_new(run, x) -> bool``: the method will never add another child to ``x`` (used to close
  exhausted subtrees).

One step selects ``n`` leaves (``n`` = ``parallel_rollouts``, less when the budget says so; see
:class:`specdifftree.search.base.Meter`), marks them pending so later selections of the step avoid
them, rolls out all non-terminal leaves with one batched ``Session.rollout`` (one per starting depth on a
session without ``ragged_rollouts``)
(the depth limit is counted from the empty prefix), hands all complete continuations of the step
to the reward in one batch, then backs them up in selection order. With ``parallel_rollouts: 1``
this is exactly the sequential algorithm.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import ConfigError
from ..backend.base import Session
from .base import (Budget, Meter, Method, RewardOracle, SearchResult, check_choice,
                   check_positive)
from .numerics import minmax_normalise
from .stats import build_result
from .tree import Tree, sample_from_tree


@dataclass
class Run:
    """The state of one search (methods are stateless between samples)."""

    session: Session
    reward: RewardOracle
    rng: np.random.Generator
    tree: Tree
    meter: Meter
    rmin: float = math.inf
    rmax: float = -math.inf
    best: int = -1
    model_rollouts: int = 0
    #: rollouts whose reward failed (dropped: never backed up, never in the normalisation)
    failed: int = 0
    #: a failed terminal, reported only when every rollout failed
    fallback: int = -1
    extra: dict = field(default_factory=dict)

    def normalise(self, v) -> np.ndarray:
        """Values mapped to [0, 1] by the range of the finite, non-failed rewards seen so far
        (UCB scales need it; a failed reward never widens the range)."""
        return minmax_normalise(v, self.rmin, self.rmax)

    def observe(self, node: int, r: float) -> None:
        self.rmin = min(self.rmin, r)
        self.rmax = max(self.rmax, r)
        if self.best < 0 or r > self.tree.reward[self.best]:
            self.best = node


class TreeSearch(Method):
    """Base class of the tree methods (see the module docstring)."""

    #: a sampling method returns draws from the tree's estimate of π as ``samples``
    sampling: bool = False
    default_answer: str = "best"
    def __init__(self, expansion_k: int = 4, lam: float = 1.0,
                 rollout_temperature: float = 1.0, parallel_rollouts: int = 1,
                 num_draws: int = 8, answer: str | None = None):
        if expansion_k is None:
            expansion_k = 0
        # 0 (or null) = no cap: every token with p_θ > 0 may become a child
        self.expansion_k = check_positive("expansion_k", expansion_k, integer=True,
                                          allow_zero=True, note=" (0 or null = no cap)")
        self.lam = check_positive("lam", lam)
        self.rollout_temperature = check_positive("rollout_temperature", rollout_temperature,
                                                  allow_zero=True)
        self.parallel_rollouts = check_positive("parallel_rollouts", parallel_rollouts, integer=True)
        self.num_draws = check_positive("num_draws", num_draws, integer=True)
        self.answer = check_choice("answer", answer or self.default_answer, ("best", "sample"))
        if self.answer == "sample" and not self.sampling:
            raise ConfigError(f"method.answer=sample: {self.name} is not a sampling method; "
                              "use answer=best")

    # ------------------------------------------------------------------ hooks
    def select(self, run: Run) -> int | None:
        raise NotImplementedError

    def backup(self, run: Run, path: list[int]) -> None:
        pass

    def no_new(self, run: Run, node: int) -> bool:
        return bool(run.tree.expanded[node])

    def simulated(self, run: Run, leaf: int, end: int, r: float, failed: bool) -> None:
        """Called once per simulation of a step, in selection order, before its backup."""

    # ------------------------------------------------------------------ shared pieces
    def dead_end(self, run: Run, node: int) -> bool:
        """Selection found no option at ``node``. If nothing below it is in flight, close it (and
        what that closes above); True when the caller should restart from the root."""
        t = run.tree
        kids = t.kids(node)
        if kids.size and t.pending[kids].any():
            return False
        t.update_closed(t.path(node), lambda x: self.no_new(run, x))
        return bool(t.closed[node]) and not bool(t.closed[0])

    def _rollout(self, run: Run, leaves: list[int]) -> list[int]:
        """Roll out every non-terminal leaf (batched per depth); returns each leaf's terminal."""
        t = run.tree
        ends = list(leaves)
        groups: dict[int, list[int]] = {}
        for i, leaf in enumerate(leaves):
            if not t.terminal[leaf]:
                groups.setdefault(int(t.depth[leaf]), []).append(i)
        if getattr(run.session, "ragged_rollouts", False) and len(groups) > 1:
            # the model Session batches rows of different depths, each with its own limit
            idx = [i for g in groups.values() for i in g]
            groups = {-1: idx}
        for d, idx in groups.items():
            limits = [t.max_depth - int(t.depth[leaves[i]]) for i in idx]
            ros = run.session.rollout([t.prefix(leaves[i]) for i in idx],
                                      limits[0] if d >= 0 else limits,
                                      temperature=self.rollout_temperature, rng=run.rng)
            run.model_rollouts += len(ros)
            for i, ro in zip(idx, ros):
                end = t.add_chain(leaves[i], ro.tokens, ro.logprobs)
                if not t.terminal[end]:
                    raise RuntimeError(f"a rollout of {len(ro.tokens)} tokens from depth "
                                       f"{int(t.depth[leaves[i]])} did not "
                                       f"reach EOS or the depth limit {t.max_depth}")
                ends[i] = end
        return ends

    # ------------------------------------------------------------------ the loop
    def search(self, session: Session, reward: RewardOracle, budget: Budget,
               rng: np.random.Generator) -> SearchResult:
        return self._result(self.run(session, reward, budget, rng))

    def run(self, session: Session, reward: RewardOracle, budget: Budget,
            rng: np.random.Generator, after_step=None) -> Run:
        """The search loop; returns its final state (the tree) without building a result.

        ``after_step(run)``, if given, is called after every step (where the loop checks the
        budget), and a return value of False stops the search there: the state it sees is the
        final state of the same search under any budget that stops at that step (benchmarks
        read several budgets off one search)."""
        meter = Meter(budget, session)
        tree = Tree(meter.depth, session.eos_ids)
        run = Run(session=session, reward=reward, rng=rng, tree=tree, meter=meter)
        while not tree.closed[0]:
            n = meter.allow(self.parallel_rollouts)
            if n == 0:
                break
            leaves: list[int] = []
            for _ in range(n):
                leaf = self.select(run)
                if leaf is None:
                    break
                tree.pending[leaf] = True
                leaves.append(leaf)
            if not leaves:
                break
            ends = self._rollout(run, leaves)
            rewards = reward([tree.prefix(e) for e in ends])
            for leaf, end, r in zip(leaves, ends, rewards):
                tree.pending[leaf] = False
                r = float(r)
                failed = reward.failed(tree.prefix(end))
                self.simulated(run, leaf, end, r, failed)
                if failed:
                    self._drop(run, leaf, end, r)
                    continue
                path = tree.record(end, r)
                run.observe(end, r)
                self.backup(run, path)
                tree.update_closed(path, lambda x: self.no_new(run, x))
            meter.done += len(leaves)
            if after_step is not None and after_step(run) is False:
                break
        return run

    def _drop(self, run: Run, leaf: int, end: int, r: float) -> None:
        """A simulation whose reward failed is dropped: nothing is backed up and the reward
        range is untouched. The failed terminal stays as a closed child with value −inf (never
        selected, never drawn again); the rollout's other new nodes are unlinked, so ``leaf`` is
        again a child without visits (the next selection may roll out from it again)."""
        t = run.tree
        run.failed += 1
        if run.fallback < 0:
            run.fallback = end
        t.reward[end] = r
        t.value[end] = -math.inf
        t.closed[end] = True
        node = int(t.parent[end])
        child = end
        while node >= 0 and child != leaf and node != leaf and t.visits[node] == 0 \
                and len(t.children[node]) == 1:
            child, node = node, int(t.parent[node])
        # unlink the rollout's chain below ``leaf`` (already done when another simulation of
        # the step rolled out the same failed continuation from the same leaf)
        if child != end and child != leaf and t.children[node].get(int(t.token[child])) == child:
            del t.children[node][int(t.token[child])]
            t.tail[node] = np.nan
        t.update_closed(t.path(end), lambda x: self.no_new(run, x))

    def draws(self, run: Run) -> tuple[list[int], bool]:
        """The terminal nodes returned as ``samples`` and whether they are independent draws.
        Default: draws from the tree's soft policy (sampling methods), else the best found."""
        if self.sampling and run.best >= 0:
            return [sample_from_tree(run.tree, self.lam, run.rng)
                    for _ in range(self.num_draws)], self.num_draws == 1
        return [run.best if run.best >= 0 else run.fallback], True

    def _result(self, run: Run) -> SearchResult:
        t = run.tree
        best = run.best if run.best >= 0 else run.fallback  # every reward failed: report one
        best_seq = t.prefix(best)
        best_r = float(t.reward[best])
        draws, independent = self.draws(run)
        samples = [t.prefix(d) for d in draws]
        chosen = draws[0] if self.answer == "sample" else best
        return build_result(t, run.reward, tokens=t.prefix(chosen), value=t.reward[chosen],
                            logprob=t.seq_logprob(chosen), samples=samples,
                            sample_rewards=[t.reward[d] for d in draws], best_tokens=best_seq,
                            best_reward=best_r, independent=independent,
                            rollouts=run.meter.done, model_rollouts=run.model_rollouts,
                            tree_exhausted=bool(t.closed[0]), failed_rollouts=run.failed)

