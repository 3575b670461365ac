"""Benchmark: reward vs tokens processed for every search method on the tiny model.

Every method runs on a built-in model (``--model``: ``tiny_tslm``, default, or ``tiny_random``) through the Session (not the runner) for a
few M3 monthly series at a ladder of token budgets. The reward is

    r(x) = −sMAPE(f(x), y) + w · c(x)

with f(x) the forecast parsed from the generated text (missing values completed as the task
does), y the held-out truth (an oracle reward: fine for comparing search methods), c(x) the share
of generated characters that belong to the number format ("0123456789.,- ") and w =
``--format-weight`` (default 0: plain −sMAPE, i.e. search as an optimiser of a known objective).
With ``tiny_random`` use ~20: the format term gives the random model's search a signal, since
almost every continuation of it parses to the same naive forecast. Budgets
count every token the model processes for the sample, the prompt prefill included.

Writes under ``--out`` (default ``outputs/bench_methods``):

- ``results.csv``: one row per method × series × budget (reward of the answer, best reward found,
  sMAPE, tokens processed, rollouts, nodes, seconds);
- ``summary.csv`` and ``summary.md``: mean over series per method × budget;
- ``reward_vs_tokens.png``: mean reward against mean tokens processed, one line per method.

Full ladder (slow on CPU): ``python experiments/bench_methods.py``. The table in docs/search.md
was made with the small settings given there.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from specdifftree.metrics.m4 import smape  # noqa: E402
from specdifftree.search import build, search_methods  # noqa: E402
from specdifftree.search.base import Budget, RewardOracle  # noqa: E402

NUMBER_CHARS = set("0123456789.,- ")


def load_series(n: int, horizon: int | None):
    """The first n M3 monthly series, the horizon optionally truncated."""
    from specdifftree.tasks.series import Series
    from specdifftree.tasks.sources import FcompdataSource

    out = []
    for s in FcompdataSource("M3", "monthly").load()[:n]:
        h = int(horizon or s.horizon)
        out.append(Series(id=s.id, x=s.x, y=np.asarray(s.y)[:h], horizon=h, period=s.period,
                          frequency=s.frequency))
    return out


def build_parser() -> argparse.ArgumentParser:
    """The command line (its flags are checked against the docs' commands)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--methods", default=",".join(search_methods()))
    ap.add_argument("--budgets", default="1000,2000,4000,8000,16000,32000")
    ap.add_argument("--series", type=int, default=3)
    ap.add_argument("--horizon", type=int, default=None, help="truncate the horizon (default: M3's 18)")
    ap.add_argument("--context", type=int, default=36, help="history values in the prompt")
    ap.add_argument("--parallel", type=int, default=1, help="method.parallel_rollouts")
    ap.add_argument("--model", default="tiny_tslm", choices=["tiny_tslm", "tiny_random"])
    ap.add_argument("--format-weight", type=float, default=0.0,
                    help="w; 0 = plain oracle -sMAPE (use ~20 with tiny_random)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "outputs" / "bench_methods"))
    return ap


def main(argv=None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)

    import pandas as pd
    from omegaconf import OmegaConf

    from specdifftree.backend.mlx.loader import load
    from specdifftree.backend.mlx.session import Session
    from specdifftree.tasks.forecasting import ForecastTask
    from specdifftree.tasks.serialize import Serializer

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    budgets = [int(b) for b in args.budgets.split(",")]
    lm = load(OmegaConf.create({"builtin": args.model, "dtype": "float32"}))
    task = ForecastTask(Serializer(), context_length=args.context)
    series = load_series(args.series, args.horizon)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    rows = []
    for si, s in enumerate(series):
        prompt = lm.encode(task.prompt_text(s))
        D = task.max_new_tokens(s)

        def score(q, s=s):
            text = lm.decode(list(q))
            fmt = sum(ch in NUMBER_CHARS for ch in text) / max(1, len(text))
            err = float(smape(s.y, task.parse(text, s).values))
            return -err + args.format_weight * fmt, err

        def reward_fn(seqs):
            return np.array([score(q)[0] for q in seqs])

        for name in methods:
            for b in budgets:
                session = Session(lm, prompt, max_new_tokens=D)
                oracle = RewardOracle(reward_fn)
                method = build(name, parallel_rollouts=args.parallel)
                t0 = time.perf_counter()
                res = method.search(session, oracle, Budget(tokens=b, max_new_tokens=D),
                                    np.random.default_rng([args.seed, si]))
                dt = time.perf_counter() - t0
                rows.append({"method": name, "series": s.id, "budget": b,
                             "tokens_processed": session.tokens_processed,
                             "prompt_tokens": len(prompt), "max_new_tokens": D,
                             "reward": res.reward, "best_reward": res.best_reward,
                             "smape": score(res.tokens)[1], "rollouts": res.stats["rollouts"],
                             "nodes": res.stats["nodes"], "seconds": round(dt, 3)})
                print(f"{s.id} {name:10s} budget={b:6d} tokens={session.tokens_processed:6d} "
                      f"reward={res.reward:8.3f} best={res.best_reward:8.3f} "
                      f"rollouts={res.stats['rollouts']:4d} {dt:6.1f}s", flush=True)

    df = pd.DataFrame(rows)
    df.to_csv(out / "results.csv", index=False)
    summary = (df.groupby(["method", "budget"], sort=False)
                 .agg(tokens_processed=("tokens_processed", "mean"), reward=("reward", "mean"),
                      best_reward=("best_reward", "mean"), smape=("smape", "mean"),
                      rollouts=("rollouts", "mean"),
                      seconds=("seconds", "mean"))
                 .reset_index())
    summary.to_csv(out / "summary.csv", index=False)
    rew = summary.pivot(index="method", columns="budget", values="reward").loc[methods]
    err = summary.pivot(index="method", columns="budget", values="smape").loc[methods]
    tok = summary.pivot(index="method", columns="budget", values="tokens_processed").loc[methods]
    md = ["| method | " + " | ".join(f"{b} tokens" for b in rew.columns) + " |",
          "|---|" + "---:|" * len(rew.columns)]
    for m in methods:
        cells = [f"{rew.loc[m, b]:.2f} ({err.loc[m, b]:.1f}; {tok.loc[m, b]:.0f})" for b in rew.columns]
        md.append(f"| {m} | " + " | ".join(cells) + " |")
    (out / "summary.md").write_text("\n".join(md) + "\n")
    print("\nmean reward of the answer (mean sMAPE %; mean tokens processed) over series:\n"
          + "\n".join(md))

    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for m in methods:
        d = summary[summary.method == m]
        ax.plot(d.tokens_processed, d.reward, marker="o", label=m)
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xticks(budgets)
    ax.set_xticklabels([f"{b / 1000:g}k" for b in budgets])
    ax.set_xlabel("tokens processed (mean over series)")
    ax.set_ylabel("reward of the answer (−sMAPE %" + (" + w·format)" if args.format_weight else ")"))
    ax.set_title(f"{args.model}, {len(series)} M3 monthly series, horizon {series[0].horizon}")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "reward_vs_tokens.png", dpi=120)
    print(f"wrote {out}/results.csv, summary.csv, summary.md, reward_vs_tokens.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
