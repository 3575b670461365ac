"""Quick holdout evaluation of ``tiny_tslm`` (greedy and temperature-1 samples) against Naive2.

A stand-alone check used for the model card until the project CLI's table replaces it: for a
seeded selection of M3 yearly/quarterly/monthly series and M4 Hourly/Weekly series it builds the
task's prompt, decodes through :class:`Session` (greedy, and ``--samples`` draws at temperature 1
with distinct seeds), parses with :meth:`ForecastTask.parse` and scores sMAPE / MASE / OWA and the
valid rate next to naive, seasonal naive and Naive2 (the project's M4 metrics).

Run::

    python -m specdifftree.backend.mlx.blas exec -- python experiments/eval_tiny_tslm.py --out outputs/tiny_tslm_eval
"""

from __future__ import annotations

import argparse
import os
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from specdifftree.tasks.forecasting import ForecastTask  # noqa: E402
from specdifftree.tasks.serialize import Serializer  # noqa: E402
from specdifftree.metrics.m4 import mase, smape  # noqa: E402
from specdifftree.metrics.naive2 import naive2, seasonal_naive  # noqa: E402
from specdifftree.tasks.series import Series  # noqa: E402
from specdifftree.tasks.sources import FcompdataSource, M4CsvSource, select  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_tiny_tslm import Settings, is_validation  # noqa: E402

HELDOUT_FRACTION = Settings().val_fraction  # the split the shipped model was trained with


# ----------------------------------------------------------------------------- data
def m3_series(subset: str) -> list[Series]:
    out = FcompdataSource("M3", subset).load()
    for s in out:
        s.meta["heldout"] = is_validation("M3", s.id, HELDOUT_FRACTION)
    return out


def m4_series(root: Path, freq: str) -> list[Series]:
    out = M4CsvSource(freq, str(root)).load()
    for s in out:
        s.meta["heldout"] = True  # M4 was never used in training
    return out


def pick(series: list[Series], n: int | None, seed: int) -> list[Series]:
    return select(series, n, seed)


# ----------------------------------------------------------------------------- evaluation
def build_rewards(names: list[str]) -> dict:
    """The project's rewards by config name (``specdifftree/conf/reward/<name>.yaml``)."""
    from omegaconf import OmegaConf

    from specdifftree.rewards.build import build_reward

    conf = REPO / "specdifftree" / "conf" / "reward"
    return {n: build_reward(OmegaConf.load(conf / f"{n}.yaml")) for n in names if n}


def weighted_median(vals: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Step-wise weighted median of ``vals`` (N, h) with weights ``w`` (N,) (lower median)."""
    order = np.argsort(vals, axis=0)
    sv = np.take_along_axis(vals, order, axis=0)
    cw = np.cumsum(w[order], axis=0)
    idx = (cw < 0.5 * w.sum()).sum(axis=0)
    return sv[np.minimum(idx, len(w) - 1), np.arange(vals.shape[1])]


def reward_answers(vals: np.ndarray, r: np.ndarray) -> dict[str, np.ndarray]:
    """Point forecasts chosen from one sample set with a reward ``r`` (N,), no ground truth:
    ``best`` (best-of-N), ``top_half_median`` (median of the better half by reward) and
    ``weighted_median`` (importance weights softmax(r / std(r)), as a resampling step would)."""
    n = len(r)
    out = {"best": vals[int(np.argmax(r))]}
    keep = np.argsort(-r)[: max(1, n // 2)]
    out["top_half_median"] = np.median(vals[keep], axis=0)
    z = (r - r.max()) / (r.std() + 1e-12)
    out["weighted_median"] = weighted_median(vals, np.exp(z))
    return out


def evaluate(lm, series: list[Series], task: ForecastTask, samples: int, seed: int,
             rewards: dict | None = None) -> list[dict]:
    from specdifftree.backend.mlx.session import Session

    rows = []
    for k, s in enumerate(series):
        prompt = lm.encode(task.prompt_text(s))
        budget = task.max_new_tokens(s)
        t0 = time.perf_counter()
        sess = Session(lm, prompt, max_new_tokens=budget)
        (ro,) = sess.rollout([()], budget, temperature=0.0)
        greedy_s = time.perf_counter() - t0
        fc = task.parse(lm.decode(ro.tokens), s)
        row = {"id": s.id, "frequency": s.frequency, "heldout": bool(s.meta.get("heldout")),
               "n": int(s.x.size), "h": s.horizon, "prompt_tokens": len(prompt),
               "new_tokens": len(ro.tokens), "greedy_s": greedy_s, "eos": ro.finished,
               "greedy_valid": fc.valid, "greedy_smape": float(smape(s.y, fc.values)),
               "greedy_mase": float(mase(s.x, s.y, fc.values, s.period))}
        for name, f in (("naive2", naive2(s.x, s.horizon, s.period)),
                        ("snaive", seasonal_naive(s.x, s.horizon, s.period)),
                        ("naive", np.full(s.horizon, s.x[-1]))):
            row[f"{name}_smape"] = float(smape(s.y, f))
            row[f"{name}_mase"] = float(mase(s.x, s.y, f, s.period))
        if samples:
            rng = np.random.default_rng([seed, k])
            ros = sess.rollout([()] * samples, budget, temperature=1.0, rng=rng)
            fcs = [task.parse(lm.decode(r.tokens), s) for r in ros]
            vals = np.stack([f.values for f in fcs])
            sm = smape(s.y, vals)
            row.update({
                "sample_valid_rate": float(np.mean([f.valid for f in fcs])),
                "sample_smape_mean": float(sm.mean()),
                "sample_mase_mean": float(mase(s.x, s.y, vals, s.period).mean()),
                "median_smape": float(smape(s.y, np.median(vals, axis=0))),
                "median_mase": float(mase(s.x, s.y, np.median(vals, axis=0), s.period)),
                "oracle_best_smape": float(sm.min()),
                # spread: per-step std across samples relative to the mean |level| of the context
                "sample_rel_spread": float(np.mean(vals.std(axis=0)) / np.mean(np.abs(task.context(s)))),
                "distinct_samples": len({tuple(r.tokens) for r in ros}),
                "sample_tokens": int(sum(len(r.tokens) for r in ros)),
            })
            texts = [lm.decode(r.tokens) for r in ros]
            ctx = task.reward_context(s)
            for rname, reward in (rewards or {}).items():
                fv, valid = task.reward_inputs(texts, s)
                rv = np.asarray(reward(fv, texts, valid, ctx), dtype=np.float64).reshape(-1)
                for rule, f in reward_answers(vals, rv).items():
                    row[f"{rname}_{rule}_smape"] = float(smape(s.y, f))
                    row[f"{rname}_{rule}_mase"] = float(mase(s.x, s.y, f, s.period))
        rows.append(row)
    return rows


def plot_spread(lm, s: Series, task: ForecastTask, path: Path, n: int = 8, seed: int = 0) -> dict:
    """Plot the greedy forecast and ``n`` temperature-1 samples (seeds 0..n-1) of one series."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from specdifftree.backend.mlx.session import Session

    budget = task.max_new_tokens(s)
    sess = Session(lm, lm.encode(task.prompt_text(s)), max_new_tokens=budget)
    (g,) = sess.rollout([()], budget, temperature=0.0)
    greedy = task.parse(lm.decode(g.tokens), s).values
    draws = [task.parse(lm.decode(sess.rollout([()], budget, temperature=1.0,
                                               rng=np.random.default_rng(seed + i))[0].tokens), s)
             for i in range(n)]
    tail = s.x[-4 * s.horizon:]
    t_hist = np.arange(-tail.size, 0)
    t_fut = np.arange(s.horizon)
    fig, ax = plt.subplots(figsize=(6.4, 3.4), dpi=90)
    ax.plot(t_hist, tail, color="k", lw=1.2, label="history")
    ax.plot(t_fut, s.y, color="k", ls="--", lw=1.2, label="holdout (truth)")
    for i, d in enumerate(draws):
        ax.plot(t_fut, d.values, color="tab:blue", alpha=0.45, lw=0.9,
                label="samples, T=1 (seeds 0-%d)" % (n - 1) if i == 0 else None)
    ax.plot(t_fut, greedy, color="tab:red", lw=1.6, label="greedy")
    ax.set_title(f"tiny_tslm on {s.frequency} series {s.id}")
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return {"series": s.id, "greedy": [round(float(v), 1) for v in greedy],
            "samples": [[round(float(v), 1) for v in d.values] for d in draws],
            "valid": [bool(d.valid) for d in draws], "truth": [float(v) for v in s.y]}


def summarize(rows: list[dict]) -> dict:
    def mean(k):
        v = [r[k] for r in rows if k in r]
        return float(np.mean(v)) if v else float("nan")

    s2, q2 = mean("naive2_smape"), mean("naive2_mase")
    out = {"series": len(rows), "greedy_valid_rate": mean("greedy_valid"),
           "greedy_eos_rate": mean("eos"), "greedy_s_mean": mean("greedy_s")}
    extra = sorted({k[:-6] for r in rows for k in r if k.endswith("_smape") and k.count("_") >= 2
                    and k.split("_")[0] not in ("sample", "oracle", "greedy", "naive2", "snaive",
                                                 "naive", "median")})
    for p in ("greedy", "naive2", "snaive", "naive", "sample", "median", *extra):
        sk = f"{p}_smape" if p != "sample" else "sample_smape_mean"
        mk = f"{p}_mase" if p != "sample" else "sample_mase_mean"
        if any(sk in r for r in rows):
            out[f"{p}_smape"], out[f"{p}_mase"] = mean(sk), mean(mk)
            out[f"{p}_owa"] = 0.5 * (out[f"{p}_smape"] / s2 + out[f"{p}_mase"] / q2)
    for k in ("sample_valid_rate", "oracle_best_smape", "sample_rel_spread", "distinct_samples"):
        if any(k in r for r in rows):
            out[k] = mean(k)
    return out


def paired_owa(rows: list[dict], a: str, b: str, n_boot: int = 4000, seed: int = 0) -> dict:
    """OWA of answer ``a`` minus OWA of answer ``b`` on the same series, with a 95% bootstrap
    interval over series (each resample recomputes both OWAs, Naive2 means included)."""
    keys = [f"{a}_smape", f"{a}_mase", f"{b}_smape", f"{b}_mase", "naive2_smape", "naive2_mase"]
    rows = [r for r in rows if all(r.get(k) not in (None, "") for k in keys)]
    m = np.array([[float(r[k]) for k in keys] for r in rows])
    if not len(m):
        return {"series": 0}

    def owa_diff(x):
        s2, q2 = x[:, 4].mean(), x[:, 5].mean()
        return (0.5 * (x[:, 0].mean() / s2 + x[:, 1].mean() / q2)
                - 0.5 * (x[:, 2].mean() / s2 + x[:, 3].mean() / q2))

    rng = np.random.default_rng(seed)
    boots = np.array([owa_diff(m[rng.integers(0, len(m), len(m))]) for _ in range(n_boot)])
    lo, hi = np.quantile(boots, [0.025, 0.975])
    return {"series": len(m), "a": a, "b": b, "owa_a_minus_b": float(owa_diff(m)),
            "ci95": [float(lo), float(hi)], "share_of_resamples_a_better": float(np.mean(boots < 0))}


def from_cli_run(run_dir: Path, n_boot: int = 4000) -> dict:
    """Reward rules against a CLI run's own answer, from its ``samples.jsonl``.

    For each series of a sampling run (e.g. ``method=best_of_n method.answer=median``), the
    recorded continuations (forecast and reward) give the answers the reward rules of
    :func:`reward_answers` would have chosen from the same samples, i.e. at the same tokens.
    Each is compared with the run's answer (OWA difference, paired bootstrap over series)."""
    from specdifftree.config import compose
    from specdifftree.tasks.sources import load_series

    results = [json.loads(x) for x in (run_dir / "results.jsonl").read_text().splitlines() if x]
    samples: dict[str, list[dict]] = {}
    for x in (run_dir / "samples.jsonl").read_text().splitlines():
        if x:
            d = json.loads(x)
            samples.setdefault(d["series_id"], []).append(d)
    dataset = results[0]["dataset"]
    series = {s.id: s for s in load_series(compose([f"dataset={dataset}"]).dataset)}
    rows = []
    for r in results:
        s, group = series[r["series_id"]], samples.get(r["series_id"], [])
        if r.get("error") or not group:
            continue
        vals = np.array([g["forecast"] for g in group], dtype=np.float64)
        rew = np.array([g["reward"] for g in group], dtype=np.float64)
        row = {"id": s.id, "answer_smape": r["smape"], "answer_mase": r["mase"],
               "naive2_smape": r["smape_naive2"], "naive2_mase": r["mase_naive2"],
               "samples": len(group), "tokens": r.get("tokens_processed")}
        rules = {**reward_answers(vals, rew), "median_of_all": np.median(vals, axis=0)}
        for rule, f in rules.items():
            row[f"{r.get('reward_name') or 'reward'}_{rule}_smape" if rule != "median_of_all"
                else "median_of_all_smape"] = float(smape(s.y, f))
            row[f"{r.get('reward_name') or 'reward'}_{rule}_mase" if rule != "median_of_all"
                else "median_of_all_mase"] = float(mase(s.x, s.y, f, s.period))
        rows.append(row)
    names = sorted({k[:-6] for k in rows[0] if k.endswith("_smape") and not k.startswith(("answer", "naive2"))})
    out = {"run": str(run_dir), "dataset": dataset, "series": len(rows),
           "answer_owa": paired_owa(rows, "answer", "naive2", n_boot)["owa_a_minus_b"] + 1.0,
           "mean_samples": float(np.mean([r["samples"] for r in rows])),
           "mean_tokens_processed": float(np.mean([r["tokens"] or 0 for r in rows])),
           "vs_answer": [paired_owa(rows, n, "answer", n_boot) for n in names]}
    for c in out["vs_answer"]:
        c["owa_a"] = c["owa_a_minus_b"] + out["answer_owa"]
    return out


def build_parser() -> argparse.ArgumentParser:
    """The command line (its flags are checked against the docs' commands)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="tiny_tslm", help="'tiny_tslm' or a model folder")
    p.add_argument("--per-group", type=int, default=100, help="series per M3 group (0 = all)")
    p.add_argument("--m4-n", type=int, default=40, help="series per M4 frequency (0 = all)")
    p.add_argument("--m4-root", type=Path,
                   default=Path(os.environ.get("SPECDIFFTREE_M4_ROOT", "data/m4")),
                   help="folder of the M4 csv files (default: $SPECDIFFTREE_M4_ROOT or data/m4)")
    p.add_argument("--samples", type=int, default=8, help="temperature-1 samples per series")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--heldout-only", action="store_true",
                   help="M3: only the series held out of training (the validation split)")
    p.add_argument("--out", type=Path, default=REPO / "outputs" / "tiny_tslm_eval")
    p.add_argument("--rewards", default="",
                   help="comma-separated reward configs (e.g. spectral,composite): pick answers "
                   "from each series' sample set by them (best, top-half median, weighted median)")
    p.add_argument("--groups", default="yearly,quarterly,monthly", help="M3 groups to evaluate")
    p.add_argument("--no-plot", action="store_true", help="skip the sample-spread figure")
    p.add_argument("--from-rows", type=Path, default=None, metavar="ROWS_CSV",
                   help="no model: summarise an earlier run's rows.csv and compare each reward "
                   "rule with the median of the samples (paired bootstrap over series)")
    p.add_argument("--from-cli", type=Path, nargs="+", default=None, metavar="RUN_DIR",
                   help="no model: compare reward rules with the answer of CLI sampling runs "
                   "(their results.jsonl and samples.jsonl)")
    return p


def main(argv=None) -> None:
    p = build_parser()
    a = p.parse_args(argv)
    if a.from_cli:
        print(json.dumps([from_cli_run(d) for d in a.from_cli], indent=1))
        return
    if a.from_rows:
        with a.from_rows.open() as f:
            rows = list(csv.DictReader(f))
        def num(v):
            if v in ("True", "False"):
                return v == "True"
            try:
                return float(v)
            except ValueError:
                return v

        rows = [{k: num(v) for k, v in r.items() if v != ""} for r in rows]
        out = {}
        for group in sorted({r["group"] for r in rows}):
            g = [r for r in rows if r["group"] == group]
            for sel, sub in (("all", g), ("heldout", [r for r in g if r["heldout"]])):
                rules = sorted({k[:-6] for k in sub[0] if k.endswith("_smape") and "_" in k[:-6]
                                and k.split("_")[0] not in ("sample", "oracle", "naive2")}) if sub else []
                out[f"{group} ({sel})"] = {
                    "summary": summarize(sub),
                    "vs_median": [paired_owa(sub, rule, "median") for rule in rules
                                  if rule not in ("median",)] + [paired_owa(sub, "median", "naive2")],
                }
        print(json.dumps(out, indent=1))
        return

    from specdifftree.backend.mlx.loader import load

    cfg = ({"builtin": "tiny_tslm", "name": "tiny_tslm"} if a.model == "tiny_tslm"
           else {"path": a.model})
    cfg["dtype"] = "float32"
    lm = load(cfg)
    print(f"loaded {lm.name} in {lm.load_time_s:.2f}s", flush=True)
    task = ForecastTask(Serializer(), context_length=200)
    def m3(g):
        ser = m3_series(g)
        if a.heldout_only:
            ser = [s for s in ser if s.meta["heldout"]]
        return pick(ser, a.per_group or None, a.seed)

    groups = [(f"M3 {g}", m3(g)) for g in a.groups.split(",") if g]
    rewards = build_rewards(a.rewards.split(","))
    if (a.m4_root / "Hourly-train.csv").exists():
        groups += [(f"M4 {f}", pick(m4_series(a.m4_root, f), a.m4_n or None, a.seed))
                   for f in ("Hourly", "Weekly")]
    a.out.mkdir(parents=True, exist_ok=True)
    result = {"model": lm.name, "load_time_s": lm.load_time_s, "groups": {}}
    all_rows = []
    for name, ser in groups:
        t0 = time.perf_counter()
        rows = evaluate(lm, ser, task, a.samples, a.seed, rewards)
        for r in rows:
            r["group"] = name
        all_rows += rows
        summ = summarize(rows)
        m3_held = [r for r in rows if r["heldout"]]
        if name.startswith("M3") and m3_held:
            summ["heldout_series"] = summarize(m3_held)
        summ["wall_s"] = time.perf_counter() - t0
        result["groups"][name] = summ
        print(name, json.dumps({k: (round(v, 4) if isinstance(v, float) else v)
                                for k, v in summ.items() if k != "heldout_series"}), flush=True)
    if groups and not a.no_plot:
        spread_series = groups[min(2, len(groups) - 1)][1][0]
        result["spread_example"] = plot_spread(lm, spread_series, task, a.out / "samples.png")
    (a.out / "summary.json").write_text(json.dumps(result, indent=1))
    with (a.out / "rows.csv").open("w", newline="") as f:
        keys = sorted({k for r in all_rows for k in r})
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(all_rows)
    print(f"wrote {a.out}/summary.json and rows.csv")


if __name__ == "__main__":
    main()
