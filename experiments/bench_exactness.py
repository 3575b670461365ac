"""How close is the law of each sampler's answer to π(x) ∝ p_θ(x)·exp(λ·r(x))?

On an enumerable toy model (6 tokens + EOS, at most 4 tokens: 1555 complete continuations; a
seeded random table-LM, rewards drawn once from U(0, 1) per continuation) every method runs with
its default config (``specdifftree/conf/method/*.yaml``; ``smc`` with one-token blocks) from many
independent seeds. For each search the *exact* law of its answer given the search is computed
(the normalised resampling weights for ``dts``/``sir``/``smc``, the tree's soft policy for
``maxent_ts``, a point mass for ``best_of_n``); averaging it over the seeds gives the law of the
returned sample, whose total-variation distance to the exact π is reported

- at equal rollouts (``budget.rollouts`` = 16, 64, 256) and
- at equal tokens (``budget.tokens`` = 40, 100, 250 tokens processed, prompt of 4 included).

``floor`` is the TV that an exact sampler drawing N i.i.d. samples of π per seed shows with the
same number of seeds (the Monte-Carlo noise of the table itself). A separate table checks that
``dts`` with equal rewards returns exactly p_θ.

    python experiments/bench_exactness.py --seeds 1000 --workers 16   # writes outputs/bench_exactness/
    python experiments/bench_exactness.py --merge a/tv.csv b/tv.csv     # one table from split runs

Writes ``tv.csv`` (one row per method × λ × budget) and ``tv.md``.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from specdifftree.search import build  # noqa: E402
from specdifftree.search.base import Budget, RewardOracle  # noqa: E402
from specdifftree.search.stats import total_variation  # noqa: E402
from specdifftree.search.toy import (TableLM, TableSession, enumerate_sequences,  # noqa: E402
                                     exact_target, table_reward)
from specdifftree.search.tree import tree_distribution  # noqa: E402

VOCAB, EOS, D, PROMPT = 7, 6, 4, 4
LAMS = (0.5, 2.0, 10.0)
ROLLOUTS = (16, 64, 256)
TOKENS = (40, 100, 250)


def method_config(name: str) -> dict:
    import yaml  # plain YAML: the method files have no interpolations

    with open(ROOT / "specdifftree" / "conf" / "method" / f"{name}.yaml") as f:
        cfg = yaml.safe_load(f)
    cfg = {k: v for k, v in cfg.items() if k not in ("name", "_target_")}
    if name == "smc":
        cfg["block_size"] = 1
    return cfg


VARIANTS = {  # row label -> (method, config overrides on top of the yaml)
    "dts": ("dts", {}),
    "dts (β 0)": ("dts", {"defensive": 0.0}),
    "dts (β 0.25)": ("dts", {"defensive": 0.25}),
    "sir": ("sir", {}),
    "smc": ("smc", {}),
    "maxent_ts (soft policy)": ("maxent_ts", {"answer": "sample"}),
    "best_of_n": ("best_of_n", {}),
}


def toy():
    lm = TableLM.random(VOCAB, eos_ids=[EOS], seed=11, alpha=1.0)
    seqs, logps = enumerate_sequences(lm, D)
    g = np.random.default_rng(7)
    rewards = {s: float(g.random()) for s in seqs}
    return lm, seqs, logps, rewards


LM, SEQS, LOGPS, REWARDS = toy()


def answer_law(label, lam, budget, seed, equal=False):
    name, over = VARIANTS[label]
    cfg = {**method_config(name), **over, "temperature": lam}
    m = build(name, **cfg)
    fn = table_reward({s: 0.0 for s in SEQS}) if equal else table_reward(REWARDS)
    session = TableSession(LM, PROMPT)
    oracle = RewardOracle(fn)
    rng = np.random.default_rng([seed, 12345])
    if name in ("sir", "smc"):
        law = m.answer_law(session, oracle, budget, rng)
        return law, session.tokens_processed
    if name == "best_of_n":
        res = m.search(session, oracle, budget, rng)
        return {res.tokens: 1.0}, session.tokens_processed
    run = m.run(session, oracle, budget, rng)
    if name == "dts":
        return m.answer_law(run), session.tokens_processed
    return tree_distribution(run.tree, lam), session.tokens_processed


def _chunk(args):
    label, lam, kind, b, seeds, equal = args
    budget = Budget(rollouts=b, max_new_tokens=D) if kind == "rollouts" else \
        Budget(tokens=b, max_new_tokens=D)
    acc: dict = {}
    tok = 0
    for sd in seeds:
        law, t = answer_law(label, lam, budget, sd, equal)
        for k, v in law.items():
            acc[k] = acc.get(k, 0.0) + v
        tok += t
    return acc, tok


def averaged_law(pool, label, lam, kind, b, nseeds, workers, equal=False):
    chunks = np.array_split(np.arange(nseeds), max(1, workers * 2))
    acc: dict = {}
    tok = 0
    for a, t in pool.imap_unordered(_chunk, [(label, lam, kind, b, c.tolist(), equal)
                                             for c in chunks if c.size]):
        for k, v in a.items():
            acc[k] = acc.get(k, 0.0) + v
        tok += t
    return {k: v / nseeds for k, v in acc.items()}, tok / nseeds


def floor_tv(pi: dict, n: int, nseeds: int, rng) -> float:
    keys = list(pi)
    p = np.array([pi[k] for k in keys])
    counts = rng.multinomial(n * nseeds, p / p.sum())
    emp = dict(zip(keys, counts / (n * nseeds)))
    return total_variation(emp, pi)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--lams", default=",".join(str(x) for x in LAMS))
    ap.add_argument("--methods", default=",".join(VARIANTS))
    ap.add_argument("--kinds", default="rollouts,tokens")
    ap.add_argument("--no-equal", action="store_true", help="skip the equal-rewards table")
    ap.add_argument("--merge", nargs="+", help="only merge these tv.csv files into --out")
    ap.add_argument("--out", default=str(ROOT / "outputs" / "bench_exactness"))
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.merge:
        rows = []
        for f in args.merge:
            with open(f) as fh:
                for r in csv.DictReader(fh):
                    for k in ("lam", "tv", "floor", "tokens"):
                        r[k] = float(r[k])
                    r["budget"] = int(r["budget"])
                    rows.append(r)
        write(out, rows)
        return
    lams = [float(x) for x in args.lams.split(",")]
    labels = args.methods.split(",")
    rows = []
    t0 = time.time()
    rng = np.random.default_rng(0)
    with Pool(args.workers) as pool:
        # equal rewards: dts must return exactly p_θ
        p_theta = exact_target(SEQS, LOGPS, np.zeros(len(SEQS)), 1.0)
        for b in (() if args.no_equal else ROLLOUTS):
            law, tok = averaged_law(pool, "dts", 1.0, "rollouts", b, args.seeds, args.workers,
                                    equal=True)
            rows.append({"table": "equal_rewards", "method": "dts", "lam": 1.0, "kind": "rollouts",
                         "budget": b, "tv": total_variation(law, p_theta),
                         "floor": floor_tv(p_theta, b, args.seeds, rng), "tokens": tok,
                         "seeds": args.seeds})
            print(rows[-1], flush=True)
        for lam in lams:
            pi = exact_target(SEQS, LOGPS, np.array([REWARDS[s] for s in SEQS]), lam)
            for kind in args.kinds.split(","):
                for b in (ROLLOUTS if kind == "rollouts" else TOKENS):
                    fl = floor_tv(pi, b, args.seeds, rng) if kind == "rollouts" else float("nan")
                    for label in labels:
                        law, tok = averaged_law(pool, label, lam, kind, b, args.seeds,
                                                args.workers)
                        rows.append({"table": "target", "method": label, "lam": lam,
                                     "kind": kind, "budget": b,
                                     "tv": total_variation(law, pi), "floor": fl,
                                     "tokens": tok, "seeds": args.seeds})
                        print(rows[-1], f"{time.time() - t0:.0f}s", flush=True)
                        write(out, rows, quiet=True)  # partial results survive a time limit
    write(out, rows)


def write(out: Path, rows: list, quiet: bool = False) -> None:
    with open(out / "tv.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    (out / "tv.md").write_text(markdown(rows))
    if not quiet:
        print(markdown(rows))


def markdown(rows) -> str:
    lines = []
    eq = [r for r in rows if r["table"] == "equal_rewards"]
    if eq:
        lines += ["Equal rewards (π = p_θ), `dts` default: TV of the answer's law from p_θ",
                  "", "| rollouts | TV | exact-sampler floor |", "|---:|---:|---:|"]
        lines += [f"| {r['budget']} | {r['tv']:.4f} | {r['floor']:.4f} |" for r in eq]
        lines.append("")
    tg = [r for r in rows if r["table"] == "target"]
    for kind in ("rollouts", "tokens"):
        sub = [r for r in tg if r["kind"] == kind]
        if not sub:
            continue
        lams = sorted({r["lam"] for r in sub})
        budgets = sorted({r["budget"] for r in sub})
        head = [f"λ={lam:g}, {b}" for lam in lams for b in budgets]
        lines += [f"TV from π at equal {kind} (cell: TV; mean tokens processed at equal tokens)", "",
                  "| method | " + " | ".join(head) + " |",
                  "|---|" + "---:|" * len(head)]
        for label in dict.fromkeys(r["method"] for r in sub):
            cells = []
            for lam in lams:
                for b in budgets:
                    r = next((r for r in sub if r["method"] == label and r["lam"] == lam
                              and r["budget"] == b), None)
                    if r is None:
                        cells.append("")
                    elif kind == "tokens":
                        cells.append(f"{r['tv']:.3f} ({r['tokens']:.0f})")
                    else:
                        cells.append(f"{r['tv']:.3f}")
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        if kind == "rollouts":
            cells = []
            for lam in lams:
                for b in budgets:
                    r = next((r for r in sub if r["lam"] == lam and r["budget"] == b), None)
                    cells.append("" if r is None else f"{r['floor']:.3f}")
            lines.append("| *exact-sampler floor* | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
