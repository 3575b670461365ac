r"""Anytime curves from ``samples.jsonl``: what a search had at every token budget, from one run.

A run records every continuation its search scored, with the tokens the search had processed when
it was scored (see :mod:`specdifftree.rollouts`). Because a search stopped by a token budget T is
the beginning of the same search with a larger budget (same seed; the budget only decides when
the loop stops, a test checks it), one run with a large budget answers "what would budget T have
given" for every T below it: the search at budget T has scored exactly the continuations recorded
up to the first one finished at or after T. On that set, per series:

- ``best_reward``: the best reward so far;
- ``smape_best``: sMAPE of the best-reward continuation so far (the ``best`` answer rule);
- ``smape_median``: sMAPE of the step-wise median of the parsed continuations so far (the
  ``median`` rule over everything scored; for ``best_of_n`` exactly median-of-n);
- ``smape_mean``: sMAPE of their step-wise mean (the ``mean`` rule);
- ``crps``: normalised CRPS of the continuations so far as a sample set.

So each answer rule that a budget determines (``best``, ``median``, ``mean``) has its own curve
per method; the ``sample`` rule (a resample drawn at the end of the search) has none.

Budgets are the powers of two from the smallest budget at which every series has one finished
continuation up to the tokens every series' search reached (its last continuation): a larger
budget would have let the search go on, so this run does not answer it. Each curve point is the mean over series with a 95% confidence band (mean ± 1.96 standard errors over
series); a curve is drawn only through two or more budgets. Rows come out sorted by dataset,
method and variant with the numbers inside them compared as numbers (``budget.tokens=8000``
before ``16000``), then by budget.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .metrics.m4 import smape
from .metrics.probabilistic import crps

QUANTITIES = ("best_reward", "smape_best", "smape_median", "smape_mean", "crps")
#: answer rule -> the quantity that is its sMAPE curve
RULE_QUANTITY = {"best": "smape_best", "median": "smape_median", "mean": "smape_mean"}


def budgets(first: float, last: float) -> np.ndarray:
    """Powers of two T with first ≤ T ≤ last (empty when there is none)."""
    if not (first > 0 and last >= first):
        return np.zeros(0)
    lo, hi = math.ceil(math.log2(first)), math.floor(math.log2(last))
    return 2.0 ** np.arange(lo, hi + 1) if hi >= lo else np.zeros(0)


def series_curve(rows: list[dict], truth, grid: np.ndarray) -> dict[str, np.ndarray]:
    """Each quantity at every budget of ``grid`` for one series' rows (in scoring order)."""
    tokens = np.array([r["tokens"] for r in rows], dtype=np.float64)
    rewards = np.array([np.nan if r.get("reward") is None else r["reward"] for r in rows],
                       dtype=np.float64)
    fc = np.array([[np.nan if v is None else v for v in r["forecast"]] for r in rows],
                  dtype=np.float64)
    valid = np.array([bool(r.get("valid")) for r in rows])
    y = np.asarray(truth, dtype=np.float64)
    out = {q: np.full(grid.size, np.nan) for q in QUANTITIES}
    for j, t in enumerate(grid):
        # the search at budget t scored every row up to the first one finished at or after t
        k = int(np.searchsorted(tokens, t, side="left")) + 1
        k = min(k, len(rows))
        if tokens[0] > t:
            continue
        r, f, ok = rewards[:k], fc[:k], valid[:k]
        if np.isfinite(r).any():
            i = int(np.nanargmax(r))
            out["best_reward"][j] = r[i]
            out["smape_best"][j] = float(smape(y, f[i]))
        use = f[ok] if ok.any() else f
        out["smape_median"][j] = float(smape(y, np.median(use, axis=0)))
        out["smape_mean"][j] = float(smape(y, np.mean(use, axis=0)))
        out["crps"][j] = crps(use, y)
    return out


def curves(samples: pd.DataFrame, results: pd.DataFrame,
           group_keys=("method", "dataset", "variant")) -> pd.DataFrame:
    """Mean and 95% band over series of every quantity at every budget, per group.

    ``samples``: lines of samples.jsonl (plus ``run_dir`` and ``variant``); ``results``: lines
    of results.jsonl (for the truth). Returns one row per group × budget."""
    if samples.empty or results.empty or "truth" not in results:
        return pd.DataFrame()
    from .results import ROW_KEY

    keys = ["run_dir", *ROW_KEY]
    truth = {tuple(r[k] for k in keys): r["truth"] for _, r in results.iterrows()
             if isinstance(r.get("truth"), list)}
    out = []
    for gkey, g in samples.groupby(list(group_keys), sort=False, dropna=False):
        per_series = []
        for skey, s in g.groupby(keys, sort=False):
            y = truth.get(tuple(skey))
            if y is None:
                continue
            per_series.append((s.sort_values("rollout").to_dict("records"), y))
        if not per_series:
            continue
        # from the budget at which every series has a finished continuation to the largest
        # budget every series' search reached (beyond its last row a search at a larger budget
        # would have gone on, so that budget is not answered by this run)
        first = max(rows[0]["tokens"] for rows, _ in per_series)
        last = min(rows[-1]["tokens"] for rows, _ in per_series)
        grid = budgets(first, last)
        if grid.size == 0:
            continue
        vals = [series_curve(rows, y, grid) for rows, y in per_series]
        for j, t in enumerate(grid):
            row = dict(zip(group_keys, gkey))
            row.update(tokens=float(t), n_series=len(vals))
            for q in QUANTITIES:
                v = np.array([c[q][j] for c in vals], dtype=np.float64)
                v = v[np.isfinite(v)]
                m = float(v.mean()) if v.size else float("nan")
                se = float(v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else float("nan")
                row[f"{q}_mean"], row[f"{q}_lo"], row[f"{q}_hi"] = m, m - 1.96 * se, m + 1.96 * se
            out.append(row)
    if not out:
        return pd.DataFrame()
    from .report_table import natural_key

    df = pd.DataFrame(out)
    order = sorted(range(len(df)), key=lambda i: (
        tuple(natural_key("" if pd.isna(df.iloc[i][k]) else df.iloc[i][k]) for k in group_keys),
        float(df.iloc[i]["tokens"])))
    return df.iloc[order].reset_index(drop=True)
