"""What ``parallel_rollouts`` costs in exactness: DTS's distance to the exact target π.

On the enumerable toy space of the correctness tests (3 tokens + EOS, at most 5 tokens: 364
complete continuations, a seeded random table LM and Gaussian rewards), DTS runs with
``parallel_rollouts`` n ∈ {1, 4, 16} and 25 → 400 rollouts; for each setting the total-variation
distance between the tree's sampling distribution and π(x) ∝ p_θ(x)·exp(λ·r(x)) is averaged over
seeds (``per_search``), and the distance of the seed-averaged distribution to π (``marginal``).

    python experiments/bench_parallel.py            # prints a table, writes outputs/bench_parallel.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the toy table-LM session (a test double)

from specdifftree.search import build  # noqa: E402
from specdifftree.search.base import Budget, RewardOracle  # noqa: E402
from specdifftree.search.stats import total_variation  # noqa: E402
from toy_session import TableLM, TableSession, enumerate_sequences, exact_target  # noqa: E402
from specdifftree.search.tree import tree_distribution  # noqa: E402

TABLE = TableLM.random(4, eos_ids=[3], seed=3, alpha=0.7)
D = 5
SEQS, LOGPS = enumerate_sequences(TABLE, D)
_r = np.random.default_rng(5)
REWARD_TABLE = {s: float(_r.normal()) for s in SEQS}


def reward(seqs):
    return np.array([REWARD_TABLE[tuple(s)] for s in seqs])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parallel", default="1,4,16")
    ap.add_argument("--rollouts", default="25,50,100,200,400")
    ap.add_argument("--lam", type=float, default=1.0)
    ap.add_argument("--seeds", type=int, default=6)
    ap.add_argument("--out", default=str(ROOT / "outputs" / "bench_parallel.json"))
    args = ap.parse_args(argv)
    pi = exact_target(SEQS, LOGPS, reward(SEQS), args.lam)
    rows = []
    for par in (int(x) for x in args.parallel.split(",")):
        for n in (int(x) for x in args.rollouts.split(",")):
            dists = []
            for seed in range(args.seeds):
                m = build("dts", lam=args.lam, expansion_k=0, parallel_rollouts=par)
                tree = m.run(TableSession(TABLE, 4), RewardOracle(reward),
                             Budget(rollouts=n, max_new_tokens=D), np.random.default_rng(seed)).tree
                dists.append(tree_distribution(tree, args.lam))
            avg: dict = {}
            for d in dists:
                for k, v in d.items():
                    avg[k] = avg.get(k, 0.0) + v / len(dists)
            rows.append({"parallel_rollouts": par, "rollouts": n,
                         "per_search_tv": float(np.mean([total_variation(d, pi) for d in dists])),
                         "marginal_tv": float(total_variation(avg, pi))})
            print(" | ".join(f"{v:.4f}" if isinstance(v, float) else str(v) for v in rows[-1].values()),
                  flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"lam": args.lam, "seeds": args.seeds, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
