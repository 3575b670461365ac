"""Paired per-series differences against a reference method, with bootstrap confidence intervals.

Methods are compared on the same series: for every method (× variant) and dataset, each series'
metric is averaged over the seeds that ran it, the reference method's per-series value is
subtracted, and the mean of these differences gets a percentile bootstrap interval over series
(resampling series with replacement). Seeds of a sweep evaluate the same series
(``dataset.subset_seed`` picks them), so the seed-to-seed spread is sampling noise only and the
pairing removes series difficulty from the comparison.

Output (one row per dataset × method × metric): ``n_series`` (paired series), ``n_seeds``,
``mean_diff`` (method − reference; for sMAPE/MASE negative is better, for reward positive),
``ci_low``/``ci_high`` (95% by default), ``better_share`` (share of series where the method is
better than the reference).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: metric -> True when lower is better
METRICS = {"smape": True, "mase": True, "reward": False}
N_BOOT = 2000
LEVEL = 0.95


def _label(method, variant) -> str:
    return f"{method} [{variant}]" if isinstance(variant, str) and variant else str(method)


def pick_reference(labels: list[str], reference: str | None = None) -> str | None:
    if reference:
        return reference if reference in labels else None
    for cand in ("naive2", "greedy"):
        if cand in labels:
            return cand
    return sorted(labels)[0] if labels else None


def bootstrap_mean_ci(d: np.ndarray, n_boot: int = N_BOOT, level: float = LEVEL,
                      seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``d`` (resampling its entries)."""
    d = np.asarray(d, dtype=np.float64)
    if d.size == 0:
        return float("nan"), float("nan")
    if d.size == 1:
        return float(d[0]), float(d[0])
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, d.size, size=(n_boot, d.size))].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def paired_differences(rows: pd.DataFrame, reference: str | None = None,
                       n_boot: int = N_BOOT, level: float = LEVEL, seed: int = 0) -> pd.DataFrame:
    cols = ["dataset", "method", "reference", "metric", "n_series", "n_seeds", "mean_diff",
            "ci_low", "ci_high", "better_share"]
    need = {"method", "dataset", "series_id"}
    if rows is None or rows.empty or not need <= set(rows.columns):
        return pd.DataFrame(columns=cols)
    df = rows.copy()
    df["label"] = [_label(m, v) for m, v in zip(df["method"], df.get("variant", [""] * len(df)))]
    ref = pick_reference(sorted(df["label"].astype(str).unique()), reference)
    if ref is None:
        return pd.DataFrame(columns=cols)
    out = []
    for ds, g in df.groupby("dataset", sort=True):
        metrics = [m for m in METRICS if m in g.columns]
        for metric in metrics:
            vals = pd.to_numeric(g[metric], errors="coerce")
            per = (g.assign(_v=vals).dropna(subset=["_v"])
                   .groupby(["label", "series_id"])["_v"].mean().unstack("label"))
            if ref not in per.columns:
                continue
            for label in sorted(c for c in per.columns if c != ref):
                pair = per[[label, ref]].dropna()
                if pair.empty:
                    continue
                d = (pair[label] - pair[ref]).to_numpy()
                lo, hi = bootstrap_mean_ci(d, n_boot, level, seed)
                better = (d < 0) if METRICS[metric] else (d > 0)
                seeds = g.loc[g["label"] == label, "seed"].nunique() if "seed" in g else 1
                out.append({"dataset": ds, "method": label, "reference": ref, "metric": metric,
                            "n_series": int(d.size), "n_seeds": int(seeds),
                            "mean_diff": float(d.mean()), "ci_low": lo, "ci_high": hi,
                            "better_share": float(better.mean())})
    return pd.DataFrame(out, columns=cols)


def markdown_section(paired: pd.DataFrame, level: float = LEVEL) -> list[str]:
    if paired.empty:
        return []
    ref = paired["reference"].iloc[0]
    lines = [f"## Paired differences vs `{ref}`", "",
             f"Per series: the metric averaged over the seeds that ran it, minus `{ref}`'s on the "
             f"same series; mean over series with a {level:.0%} percentile bootstrap interval "
             "(series resampled). sMAPE/MASE: negative = better than the reference; reward: "
             "positive = better. `better` = share of series where the method is better.", "",
             "| dataset | method | metric | series | seeds | mean diff | CI | better |",
             "|---|---|---|---|---|---|---|---|"]
    for _, r in paired.iterrows():
        ci = f"[{r['ci_low']:.4g}, {r['ci_high']:.4g}]"
        sig = " *" if (r["ci_low"] > 0 or r["ci_high"] < 0) else ""
        lines.append(f"| {r['dataset']} | {str(r['method']).replace('|', '/')} | {r['metric']} | "
                     f"{r['n_series']} | {r['n_seeds']} | {r['mean_diff']:.4g}{sig} | {ci} | "
                     f"{r['better_share']:.0%} |")
    lines += ["", "`*`: the interval excludes 0.", ""]
    return lines
