"""How close is the law of each method's answer to π(x) ∝ p_θ(x)·exp(λ·r(x))?

On an enumerable toy model (6 tokens + EOS, at most 4 tokens: 1555 complete continuations; a
seeded random table-LM, rewards drawn once from U(0, 1) per continuation) every method runs with
its default config (``specdifftree/conf/method/*.yaml``) from many independent seeds. For each
search the *exact* law of its answer given the search is computed — the normalised resampling
weights for ``dts``/``sir``/``smc``, a point mass on the answer for the optimisers ``best_of_n``
and ``maxent_ts`` (default ``answer: best``), and for ``maxent_ts (soft policy)`` the law of a
draw from its tree's soft policy. Averaged over the seeds it is the law of the returned sample;
the tables give its total-variation distance (TV) to the exact π over all 1555 continuations

- at equal rollouts (``budget.rollouts`` = 16, 64, 256) and
- at equal tokens (``budget.tokens`` = 40, 100, 250 tokens processed, prompt of 4 included),

for λ ∈ {0.5, 2, 10}, plus ``dts`` with equal rewards (π = p_θ). ``floor`` is the TV that an
exact sampler drawing N i.i.d. samples of π per seed shows with the same number of seeds (the
Monte-Carlo noise of the table itself).

Speed: the tree methods run through :class:`TableSession` with the numpy sampler (no MLX; the
same token accounting as the model Session), ``sir`` and ``best_of_n`` are vectorised over seeds
(N draws from the enumerated p_θ at once; the same algorithm and token count as the methods), and
the seeds are split into fixed chunks of ``--chunk`` seeds run by ``--workers`` processes (the
results do not depend on ``--workers``).

    python experiments/bench_exactness.py --seeds 1000 --workers 16 --out-md tv.md

Writes ``--out-json`` (every cell, with the run's settings and time) and ``--out-md`` (the
tables, ready to paste into docs/search.md), and prints the total time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the toy table-LM session (a test double)

from specdifftree.search import build  # noqa: E402
from specdifftree.search.base import Budget, RewardOracle  # noqa: E402
from toy_session import (TableLM, TableSession, enumerate_sequences,  # noqa: E402
                          exact_target, table_reward)
from specdifftree.search.tree import tree_distribution  # noqa: E402

VOCAB, EOS, D, PROMPT = 7, 6, 4, 4
LAMS = (0.5, 2.0, 10.0)
ROLLOUTS = (16, 64, 256)
TOKENS = (40, 100, 250)
METHODS = ("dts", "sir", "smc", "maxent_ts", "best_of_n")
#: extra rows a run can ask for with --methods
VARIANTS = {"dts (β 0)": ("dts", {"defensive": 0.0}),
            "dts (β 0.25)": ("dts", {"defensive": 0.25})}
#: rows a method's run produces (maxent_ts: its default answer and its soft policy, one run)
ROWS = {"maxent_ts": ("maxent_ts", "maxent_ts (soft policy)")}


def method_config(name: str) -> dict:
    import yaml  # plain YAML: the method files have no interpolations

    with open(ROOT / "specdifftree" / "conf" / "method" / f"{name}.yaml") as f:
        cfg = yaml.safe_load(f)
    return {k: v for k, v in cfg.items() if k not in ("name", "_target_")}


def toy():
    lm = TableLM.random(VOCAB, eos_ids=[EOS], seed=11, alpha=1.0)
    seqs, logps = enumerate_sequences(lm, D)
    g = np.random.default_rng(7)
    rewards = np.array([g.random() for _ in seqs])
    return lm, seqs, logps, rewards


LM, SEQS, LOGPS, REWARDS = toy()
INDEX = {s: i for i, s in enumerate(SEQS)}
P_THETA = np.exp(LOGPS) / np.exp(LOGPS).sum()
COST = np.array([len(s) - 1 for s in SEQS])  # tokens a rollout from the root feeds


def law_array(law: dict) -> np.ndarray:
    a = np.zeros(len(SEQS))
    for s, v in law.items():
        a[INDEX[s]] += v
    return a


def _budget(kind: str, b: int) -> Budget:
    return Budget(rollouts=b, max_new_tokens=D) if kind == "rollouts" else \
        Budget(tokens=b, max_new_tokens=D)


# ------------------------------------------------------------------ tree methods (one search)
def _search_laws(name, m, run, lam) -> dict:
    """{row label: law of the answer} given the search's current state."""
    if name == "dts":
        return {None: law_array(m.answer_law(run))}
    best = np.zeros(len(SEQS))  # maxent_ts: the default answer (the best found) ...
    best[INDEX[run.tree.prefix(run.best)]] = 1.0
    # ... and a draw from the soft policy of the same tree
    return {"maxent_ts": best, "maxent_ts (soft policy)":
            law_array(tree_distribution(run.tree, lam))}


def tree_laws(label, lam, cells, seed, equal) -> dict:
    """{(row label, kind, budget): (law, tokens)} of one search per seed for every cell in
    ``cells`` ((kind, budget) pairs). The tree methods (``dts``, ``maxent_ts``) are anytime with
    ``parallel_rollouts`` 1 — nothing before the stop depends on the budget — so one search is
    read at every budget: after the step where the Meter would stop it (rollouts reached, or
    tokens processed ≥ the token budget; the whole search if its root closes first). ``smc``
    plans its particles from the budget: one run per cell."""
    name, over = VARIANTS.get(label, (label, {}))
    cfg = {**method_config(name), **over, "lam": lam}
    m = build(name, **cfg)
    r = np.zeros(len(SEQS)) if equal else REWARDS
    out = {}

    def fresh():
        return (TableSession(LM, PROMPT, sampler="numpy"),
                RewardOracle(table_reward(dict(zip(SEQS, r)))),
                np.random.default_rng([seed, 12345]))

    if name == "smc":
        for kind, b in cells:
            session, oracle, rng = fresh()
            law = m.answer_law(session, oracle, _budget(kind, b), rng)
            out[(label, kind, b)] = (law_array(law), session.tokens_processed)
        return out
    session, oracle, rng = fresh()
    todo = set(cells)

    def record(run, todo_now):
        laws = _search_laws(name, m, run, lam)
        for kind, b in todo_now:
            for row, law in laws.items():
                out[(row or label, kind, b)] = (law, session.tokens_processed)

    def after_step(run):
        hit = {(k, b) for k, b in todo if (run.meter.done >= b if k == "rollouts"
                                          else session.tokens_processed >= b)}
        if hit:
            record(run, hit)
            todo.difference_update(hit)
        return bool(todo)

    run = m.run(session, oracle, Budget(rollouts=10**9, max_new_tokens=D), rng, after_step)
    if todo:  # the root closed first: every later budget ends in the same state
        record(run, todo)
    return out


# ------------------------------------------------------------------ sir / best_of_n, vectorised
def sampled_rollouts(kind, b, rng, n_seeds):
    """The rollouts of ``n_seeds`` independent searches that draw from p_θ at the root one at a
    time (``sir``, ``best_of_n`` with parallel_rollouts 1): sequence indices (S, M) and a mask of
    the rollouts the Meter lets run, and the tokens each search processes."""
    if kind == "rollouts":
        idx = rng.choice(len(SEQS), size=(n_seeds, b), p=P_THETA)
        run = np.ones(idx.shape, dtype=bool)
    else:
        m = b + 16
        while True:
            idx = rng.choice(len(SEQS), size=(n_seeds, m), p=P_THETA)
            c = COST[idx]
            before = PROMPT + np.cumsum(c, axis=1) - c  # tokens processed before rollout i
            run = before < b  # the Meter: a rollout starts while tokens are left ...
            run[:, 0] = True  # ... and the first always runs
            if not run[:, -1].any():
                break
            m *= 2
    tokens = PROMPT + (COST[idx] * run).sum(axis=1)
    return idx, run, tokens


def vector_laws(label, lam, cells, seeds, equal) -> dict:
    r = np.zeros(len(SEQS)) if equal else REWARDS
    out = {}
    for kind, b in cells:
        rng = np.random.default_rng([int(seeds[0]), len(seeds), b, 777])
        idx, run, tokens = sampled_rollouts(kind, b, rng, len(seeds))
        acc = np.zeros(len(SEQS))
        if label == "sir":
            logw = np.where(run, lam * r[idx], -np.inf)
            w = np.exp(logw - logw.max(axis=1, keepdims=True))
            w /= w.sum(axis=1, keepdims=True)
            np.add.at(acc, idx[run], w[run])
        else:  # best_of_n: the first rollout with the best reward
            rr = np.where(run, r[idx], -np.inf)
            np.add.at(acc, idx[np.arange(len(seeds)), np.argmax(rr, axis=1)], 1.0)
        out[(label, kind, b)] = (acc, int(tokens.sum()))
    return out


def _task(args):
    label, lam, cells, seeds, equal = args
    if label in ("sir", "best_of_n"):
        return lam, equal, vector_laws(label, lam, cells, seeds, equal), len(seeds)
    acc = {}
    for sd in seeds:
        for key, (law, tok) in tree_laws(label, lam, cells, sd, equal).items():
            a = acc.setdefault(key, [0.0, 0])
            a[0] = a[0] + law
            a[1] += tok
    return lam, equal, {k: tuple(v) for k, v in acc.items()}, len(seeds)


def tv(a: np.ndarray, b: np.ndarray) -> float:
    return 0.5 * float(np.abs(a - b).sum())


def floor_tv(pi: np.ndarray, n: int, nseeds: int, rng) -> float:
    counts = rng.multinomial(n * nseeds, pi / pi.sum())
    return tv(counts / (n * nseeds), pi)


def target(lam: float, equal: bool = False) -> np.ndarray:
    r = np.zeros(len(SEQS)) if equal else REWARDS
    pi = exact_target(SEQS, LOGPS, r, lam)
    return np.array([pi[s] for s in SEQS])


def run_all(seeds: int, workers: int, methods, lams, kinds, chunk: int, equal_table: bool):
    cells = [(k, b) for k in kinds for b in (ROLLOUTS if k == "rollouts" else TOKENS)]
    jobs = [("dts", 1.0, [("rollouts", b) for b in ROLLOUTS], True)] if equal_table else []
    jobs += [(m, lam, cells, False) for lam in lams for m in methods]
    chunks = [list(range(s, min(seeds, s + chunk))) for s in range(0, seeds, chunk)]
    tasks = [(m, lam, c, ch, eq) for (m, lam, c, eq) in jobs for ch in chunks]
    # the slow tree searches first, so the pool ends evenly
    tasks.sort(key=lambda t: t[0] in ("sir", "best_of_n", "smc"))
    acc: dict = {}
    with Pool(workers) as pool:
        for lam, eq, laws, n in pool.imap_unordered(_task, tasks):
            for (label, kind, b), (law, tok) in laws.items():
                a = acc.setdefault((label, lam, kind, b, eq), [np.zeros(len(SEQS)), 0, 0])
                a[0] += law
                a[1] += tok
                a[2] += n
    rng = np.random.default_rng(0)
    order = {m: i for i, m in enumerate([*METHODS, "maxent_ts (soft policy)", *VARIANTS])}
    rows = []
    for (label, lam, kind, b, eq), (law, tok, n) in sorted(
            acc.items(), key=lambda kv: (not kv[0][4], kv[0][1], kv[0][2], kv[0][3],
                                         order.get(kv[0][0], 99))):
        pi = target(lam, eq)
        rows.append({"table": "equal_rewards" if eq else "target", "method": label, "lam": lam,
                     "kind": kind, "budget": b, "tv": tv(law / n, pi),
                     "floor": floor_tv(pi, b, n, rng) if kind == "rollouts" else None,
                     "tokens": tok / n, "seeds": n})
    return rows


def build_parser() -> argparse.ArgumentParser:
    """The command line (its flags are checked against the docs' commands)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=1000, help="independent searches per cell")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--chunk", type=int, default=25, help="seeds per task")
    ap.add_argument("--lams", default=",".join(f"{x:g}" for x in LAMS))
    ap.add_argument("--methods", default=",".join(METHODS),
                    help=f"any of {', '.join([*METHODS, *VARIANTS])}")
    ap.add_argument("--kinds", default="rollouts,tokens")
    ap.add_argument("--no-equal", action="store_true", help="skip the equal-rewards table")
    ap.add_argument("--out-json", default=str(ROOT / "outputs" / "bench_exactness" / "tv.json"))
    ap.add_argument("--out-md", default=str(ROOT / "outputs" / "bench_exactness" / "tv.md"))
    return ap


def main(argv=None) -> None:
    ap = build_parser()
    args = ap.parse_args(argv)
    methods = args.methods.split(",")
    for m in methods:
        if m not in METHODS and m not in VARIANTS:
            ap.error(f"--methods: unknown {m!r}; use {', '.join([*METHODS, *VARIANTS])}")
    t0 = time.time()
    rows = run_all(args.seeds, args.workers, methods, [float(x) for x in args.lams.split(",")],
                   args.kinds.split(","), args.chunk, not args.no_equal)
    total = time.time() - t0
    md = markdown(rows, args.seeds)
    for p in (args.out_json, args.out_md):
        Path(p).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out_json).write_text(json.dumps({
        "seeds": args.seeds, "workers": args.workers, "chunk": args.chunk,
        "cpu_count": os.cpu_count(), "machine": platform.platform(), "total_s": total,
        "space": {"vocab": VOCAB, "eos": EOS, "max_len": D, "continuations": len(SEQS),
                  "prompt_tokens": PROMPT},
        "rows": rows}, indent=1))
    Path(args.out_md).write_text(md)
    print(md)
    print(f"wrote {args.out_json} and {args.out_md}")
    print(f"total time: {total:.1f} s ({args.seeds} seeds per cell, {args.workers} workers)")


def _cell(rows, **key):
    return next((r for r in rows if all(r[k] == v for k, v in key.items())), None)


def markdown(rows, seeds: int) -> str:
    lines = []
    eq = [r for r in rows if r["table"] == "equal_rewards"]
    if eq:
        lines += [f"Equal rewards (π = p_θ), `dts` default: TV of the answer's law from p_θ "
                  f"({seeds} seeds per cell)", "",
                  "| rollouts | TV | exact-sampler floor | goal TV ≤ 0.02 (at 16) |",
                  "|---:|---:|---:|---|"]
    misses = []
    if eq:
        for r in eq:
            goal = ("met" if r["tv"] <= 0.02 else "**missed**") if r["budget"] == 16 else ""
            lines.append(f"| {r['budget']} | {r['tv']:.4f} | {r['floor']:.4f} | {goal} |")
            if goal == "**missed**":
                misses.append(f"equal rewards: `dts` TV {r['tv']:.4f} > 0.02 at 16 rollouts "
                              f"(exact-sampler floor {r['floor']:.4f})")
        lines.append("")
    tg = [r for r in rows if r["table"] == "target"]
    for kind in ("rollouts", "tokens"):
        sub = [r for r in tg if r["kind"] == kind]
        if not sub:
            continue
        lams = sorted({r["lam"] for r in sub})
        budgets = sorted({r["budget"] for r in sub})
        head = [f"λ={lam:g}, {b}" for lam in lams for b in budgets]
        what = "(cell: TV)" if kind == "rollouts" else "(cell: TV (mean tokens processed))"
        lines += [f"TV from π at equal {kind} {what}, {seeds} seeds per cell", "",
                  "| method | " + " | ".join(head) + " |", "|---|" + "---:|" * len(head)]
        for label in dict.fromkeys(r["method"] for r in sub):
            cells = []
            for lam in lams:
                for b in budgets:
                    r = _cell(sub, method=label, lam=lam, budget=b)
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
                    r = _cell(sub, lam=lam, budget=b)
                    cells.append(f"{r['floor']:.3f}")
            lines.append("| *exact-sampler floor* | " + " | ".join(cells) + " |")
            for lam in lams:
                for label in ("dts", "sir"):
                    r = _cell(sub, method=label, lam=lam, budget=max(budgets))
                    if r is not None and max(budgets) == 256 and r["tv"] >= 0.05:
                        misses.append(f"`{label}` λ={lam:g}: TV {r['tv']:.3f} ≥ 0.05 at 256 "
                                      f"rollouts (floor {r['floor']:.3f})")
        else:
            cells = []
            for lam in lams:
                for b in budgets:
                    d, s = _cell(sub, method="dts", lam=lam, budget=b), \
                        _cell(sub, method="sir", lam=lam, budget=b)
                    if d is None or s is None:
                        cells.append("")
                        continue
                    ok = d["tv"] <= s["tv"] + 0.01
                    cells.append(f"{d['tv'] - s['tv']:+.3f} {'met' if ok else '**missed**'}")
                    if not ok:
                        misses.append(f"equal tokens λ={lam:g}, {b}: `dts` {d['tv']:.3f} > "
                                      f"`sir` {s['tv']:.3f} + 0.01")
            if any(cells):
                lines.append("| *dts − sir (goal ≤ +0.01)* | " + " | ".join(cells) + " |")
        lines.append("")
    lines.append("Cells that miss a goal: " + ("; ".join(misses) if misses else "none") + ".")
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
