r"""``mcts`` — UCT (Kocsis & Szepesvári 2006) over token prefixes.

Each simulation:

- **Selection.** From the root, while the current node x has no unvisited child, move to the child
  maximising

      UCT(x, c) = Q̃(c) + C·sqrt(ln N(x) / N(c)),    Q(c) = W(c) / N(c),

  where W(c) is the sum and N(c) the number of rewards backed up through c, Q̃ is Q min–max
  normalised by the range of rewards seen so far in this search (so C = ``exploration`` means the
  same for rewards in [0, 1] or ±1e6), and closed subtrees (fully explored) are skipped.
- **Expansion.** The first time selection reaches a node, it gets up to ``expansion_k`` children:
  the top-k tokens of p_θ(·|x) (``expansion: topk``) or k tokens drawn without replacement from
  p_θ(·|x) (``expansion: sample``, Gumbel-top-k), plus the child a previous rollout already added;
  ``expansion_k`` 0 (or null) = no cap: every token with p_θ > 0.
  Tokens with p_θ = 0 are never children. The log-probs come from the Session's cache (every node
  was passed through by a rollout), so expansion costs no tokens.
- **Rollout.** From the first unvisited child (highest prior first) the base model completes the
  sequence at ``rollout_temperature`` up to EOS or the depth limit; the rollout's tokens join the
  tree as a chain of nodes.
- **Backup.** The terminal reward r is added to W and 1 to N of every node on the root path (mean
  backup).

Answer: the best-reward complete sequence found (``samples`` = [answer]).
"""

from __future__ import annotations

import numpy as np

from .base import check_choice, check_positive
from .engine import Run, TreeSearch
from .numerics import expansion_tokens, gumbel_topk


class MCTS(TreeSearch):
    name = "mcts"

    def __init__(self, expansion_k: int | None = 4,
                 expansion: str = "topk", exploration: float = 1.4,
                 rollout_temperature: float = 1.0, parallel_rollouts: int = 1):
        # an optimiser of r: no λ, no resamples, the answer is the best continuation found
        super().__init__(expansion_k=0 if expansion_k is None else expansion_k,
                         rollout_temperature=rollout_temperature,
                         parallel_rollouts=parallel_rollouts)
        self.c = check_positive("exploration", exploration, allow_zero=True)
        self.expansion = check_choice("expansion", expansion, ("topk", "sample"))

    def expand(self, run: Run, x: int) -> None:
        t = run.tree
        if self.expansion == "topk":
            toks, lps = expansion_tokens(run.session, t.prefix(x), self.expansion_k)
        else:
            lp = run.session.logprobs([t.prefix(x)])[0]
            toks = gumbel_topk(lp, self.expansion_k or len(lp), run.rng)
            lps = [float(lp[a]) for a in toks]
        for a, v in zip(toks, lps):
            t.add_child(x, int(a), v)
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
            unvisited = ok[t.visits[ok] == 0]
            if unvisited.size:
                return int(unvisited[np.argmax(t.logp[unvisited])])
            n = t.visits[ok].astype(np.float64)
            q = run.normalise(t.value_sum[ok] / n)
            bonus = self.c * np.sqrt(np.log(max(int(t.visits[x]), 1)) / n)
            x = int(ok[np.argmax(q + bonus)])
