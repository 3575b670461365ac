"""Report over a run or multirun dir, from the results contract only.

    python -m specdifftree.report outputs/multirun/2025-01-01/12-00-00

reads every ``results.jsonl``, ``summary.csv`` and ``job.json`` below the dir and writes, into it:

* ``report.md`` — jobs (done / failed / skipped) and, per method × dataset (× variant), the
  mean ± sd over seeds of every metric of ``summary.csv`` (accuracy, reward, tokens, calls, time);
* ``report.csv`` — the same numbers, one row per method × dataset × variant, columns
  ``<metric>_mean`` and ``<metric>_sd``;
* ``report.tex`` — the accuracy and cost tables as LaTeX (booktabs) tables;
* ``anytime.csv`` — from ``samples.jsonl``: best reward so far, sMAPE of the best and of the
  median answer, and CRPS of the continuations so far, at every power-of-two token budget
  (mean and 95% band over series; :mod:`specdifftree.anytime`);
* ``figures/<name>.{png,pdf,svg}`` (vector PDF/SVG beside the PNG): ``reward_vs_tokens``,
  ``accuracy`` (sMAPE, MASE, OWA per method), ``forecasts`` (forecasts vs truth for a few series)
  and ``anytime`` (the curves of ``anytime.csv`` on a log-2 token axis).

Swept values sort numerically (``budget.tokens=800`` before ``1600``); axes name the reward
(``reward_name`` of the rows) and the budget unit; a line joins two or more points only. The
report flags every method × dataset × variant with errors, an invalid-output rate, or reward
failures. Other modules add sections through :func:`register_section`.

A *variant* is what distinguishes jobs beyond method, dataset and seed: the overrides (from
``job.json``) that differ between the jobs of the dir, e.g. ``budget.tokens=2000`` in a budget
sweep. Seeds are averaged within a variant; sd is the sample standard deviation over seeds
(ddof = 1; blank with a single seed).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from typing import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from .report_table import FORMATS as _TABLE_FORMATS
from .report_table import natural_key
from .results import RESULTS_FILE, SUMMARY_FILE, scan_results, summarize

JOB_FILE = "job.json"
KEYS = ["method", "dataset", "variant"]
_SKIP_PARTS = {"wandb", ".submitit", ".hydra", "figures"}
_GRID_KEYS = {"method", "dataset", "seed"}
# how each metric is labelled and formatted
METRICS = {
    "smape": ("sMAPE (%)", "{:.2f}"), "mase": ("MASE", "{:.3f}"), "owa": ("OWA", "{:.3f}"),
    "valid_rate": ("valid", "{:.0%}"), "reward": ("reward", "{:.3f}"),
    "perplexity": ("perplexity", "{:.2f}"), "mean_logprob": ("mean log-prob", "{:.3f}"),
    "tokens_processed": ("tokens/sample", "{:.0f}"), "model_calls": ("model calls/sample", "{:.0f}"),
    "time_s": ("s/sample", "{:.3f}"), "n": ("samples", "{:.0f}"), "errors": ("errors", "{:.0f}"),
    "crps": ("CRPS", "{:.4f}"), "crps_mase": ("CRPS/MASE scale", "{:.3f}"),
    "msis": ("MSIS", "{:.3f}"), "coverage": ("95% coverage", "{:.0%}"), "wql": ("WQL", "{:.4f}"),
    "n_forecast_samples": ("samples/set", "{:.1f}"),
}
# the CLI table's formats (specdifftree.report_table.FORMATS) are the report's: one number, one text
METRICS.update({k: (METRICS[k][0] if k in METRICS else k, f) for k, f in _TABLE_FORMATS.items()})
ACCURACY = ["smape", "mase", "owa", "valid_rate", "reward", "perplexity", "mean_logprob"]
COST = ["tokens_processed", "model_calls", "time_s", "n", "errors"]
DISTRIBUTION = ["crps", "crps_mase", "msis", "coverage", "wql", "n_forecast_samples"]


@dataclass
class Collected:
    """What was read below a dir: per-seed summaries, per-sample rows, job records."""

    root: Path
    summary: pd.DataFrame   # one row per run dir × (method, dataset, seed), plus run_dir, variant
    rows: pd.DataFrame      # results.jsonl rows, plus run_dir, variant
    jobs: pd.DataFrame      # job.json records, plus job_dir
    samples: pd.DataFrame = field(default_factory=pd.DataFrame)  # samples.jsonl lines
    anytime: pd.DataFrame = field(default_factory=pd.DataFrame)  # anytime.curves of samples
    #: (results.jsonl or samples.jsonl, line number, reason) of unusable lines (skipped, reported)
    unreadable: list = field(default_factory=list)


#: extra report.md sections: functions (Collected, aggregate) -> markdown text ("" for none)
SECTIONS: list[Callable[[Collected, pd.DataFrame], str]] = []


def register_section(fn: Callable[[Collected, pd.DataFrame], str]):
    """Add a section to every report.md (appended after the result tables, in order)."""
    if fn not in SECTIONS:
        SECTIONS.append(fn)
    return fn


# ------------------------------------------------------------------------------------ reading

def _walk(root: Path, name: str) -> list[Path]:
    return sorted(p for p in root.rglob(name)
                  if p.is_file() and not (_SKIP_PARTS & set(p.relative_to(root).parts[:-1])))


def _read_job(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _override_key(o: str) -> str:
    return o.split("=", 1)[0].lstrip("+~")


def variants(overrides_by_dir: dict[Path, list[str]]) -> dict[Path, str]:
    """Per run dir: the overrides that differ between dirs (method/dataset/seed and hydra.* aside)."""
    clean = {d: sorted(o for o in ovs if _override_key(o) not in _GRID_KEYS
                       and not _override_key(o).startswith("hydra."))
             for d, ovs in overrides_by_dir.items()}
    if not clean:
        return {}
    common = set.intersection(*(set(v) for v in clean.values()))
    return {d: " ".join(o for o in v if o not in common) for d, v in clean.items()}


def collect(root: str | Path) -> Collected:
    from .errors import DataError

    root = Path(root)
    if not root.is_dir():
        raise DataError(f"report: {root} is not a folder; give a run or multirun dir "
                        "(one holding results.jsonl or job subfolders)")
    run_dirs = sorted({p.parent for n in (RESULTS_FILE, SUMMARY_FILE) for p in _walk(root, n)})
    job_files = _walk(root, JOB_FILE)
    jobs = []
    for p in job_files:
        j = _read_job(p)
        if j is not None:
            j = dict(j)
            j["job_dir"] = str(p.parent)
            jobs.append(j)
    if not run_dirs and not jobs:
        raise DataError(f"report: no {RESULTS_FILE}, {SUMMARY_FILE} or {JOB_FILE} under {root}")
    overrides = {d: list((_read_job(d / JOB_FILE) or {}).get("overrides") or []) for d in run_dirs}
    var = variants(overrides)
    summaries, rows, sample_rows, unreadable = [], [], [], []
    from .rollouts import SAMPLES_FILE, scan_samples

    for d in run_dirs:
        try:
            scan = scan_results(d)
        except DataError as exc:
            unreadable.append((str(d / RESULTS_FILE), 0, str(exc)))
            continue
        rs = scan.rows
        unreadable += [(str(d / RESULTS_FILE), b.lineno, b.reason) for b in scan.bad]
        samples, bad_samples = scan_samples(d)
        unreadable += [(str(d / SAMPLES_FILE), n, reason) for n, reason, _ in bad_samples]
        for r in samples:
            r["run_dir"], r["variant"] = str(d), var.get(d, "")
            sample_rows.append(r)
        s = None
        if (d / SUMMARY_FILE).is_file():
            try:
                s = pd.read_csv(d / SUMMARY_FILE)
            except (pd.errors.EmptyDataError, pd.errors.ParserError):
                s = None
        if s is None or (s.empty and rs):
            s = summarize(rs)
        s = s.copy()
        s["run_dir"], s["variant"] = str(d), var.get(d, "")
        summaries.append(s)
        for r in rs:
            r = dict(r)
            r["run_dir"], r["variant"] = str(d), var.get(d, "")
            rows.append(r)
    summary = pd.concat(summaries, ignore_index=True) if summaries else pd.DataFrame()
    if not summary.empty:
        summary = summary[summary["method"].notna()].reset_index(drop=True)
    return Collected(root, summary, pd.DataFrame(rows), pd.DataFrame(jobs),
                     pd.DataFrame(sample_rows), unreadable=unreadable)


# ---------------------------------------------------------------------------------- aggregate

def metric_columns(summary: pd.DataFrame) -> list[str]:
    skip = {"seed", "budget_rollouts", "budget_tokens"}
    cols = [c for c in summary.columns
            if c not in skip and c not in KEYS and c != "run_dir"
            and pd.api.types.is_numeric_dtype(summary[c])]
    order = {m: i for i, m in enumerate(ACCURACY + COST)}
    return sorted(cols, key=lambda c: (order.get(c, len(order)), c))


def aggregate(summary: pd.DataFrame) -> pd.DataFrame:
    """Mean and sd over seeds per method × dataset × variant, for every numeric metric."""
    if summary.empty:
        return pd.DataFrame(columns=KEYS + ["n_seeds", "n_runs"])
    metrics = metric_columns(summary)
    out = []
    for key, g in summary.groupby(KEYS, sort=True, dropna=False):
        row = dict(zip(KEYS, key))
        row["n_seeds"] = int(g["seed"].nunique()) if "seed" in g else len(g)
        row["n_runs"] = len(g)
        for m in metrics:
            v = pd.to_numeric(g[m], errors="coerce").to_numpy(dtype=np.float64)
            v = v[np.isfinite(v)]
            row[f"{m}_mean"] = float(v.mean()) if v.size else float("nan")
            row[f"{m}_sd"] = float(v.std(ddof=1)) if v.size > 1 else float("nan")
        out.append(row)
    df = pd.DataFrame(out)
    order = sorted(range(len(df)), key=lambda i: tuple(natural_key(df.iloc[i][k]) for k in KEYS))
    return df.iloc[order].reset_index(drop=True)


def reward_label(rows: pd.DataFrame) -> str:
    """'reward (<name>)' from the rows' reward_name (several names are listed)."""
    names = []
    if not rows.empty and "reward_name" in rows:
        names = sorted({str(n) for n in rows["reward_name"].dropna().unique()})
    return f"reward ({', '.join(names)})" if names else "reward"


def flags(col: Collected, agg: pd.DataFrame) -> list[str]:
    """One line per method × dataset × variant whose samples had errors, invalid outputs or
    reward failures (from the per-sample rows)."""
    if col.rows.empty:
        return []
    out = []
    for key, g in col.rows.groupby(KEYS, sort=False, dropna=False):
        n = len(g)
        errs = int(g["error"].notna().sum()) if "error" in g else 0
        valid = float(pd.to_numeric(g.get("valid"), errors="coerce").fillna(0).mean()) \
            if "valid" in g else 1.0
        rf = int(pd.to_numeric(g.get("reward_failures"), errors="coerce").fillna(0).sum()) \
            if "reward_failures" in g else 0
        what = []
        if errs:
            what.append(f"{errs} of {n} samples failed")
        if valid < 1.0:
            what.append(f"valid outputs {valid:.0%}")
        if rf:
            what.append(f"{rf} reward failures")
        if what:
            label = " / ".join(str(k) for k in key if str(k) not in ("", "nan"))
            out.append(f"- **{label}**: " + "; ".join(what))
    return sorted(out, key=natural_key)


def _fmt(metric: str, mean: float, sd: float) -> str:
    fmt = METRICS.get(metric, (metric, "{:.4g}"))[1]
    if mean is None or not math.isfinite(mean):
        return "–"
    text = fmt.format(mean)
    if sd is not None and math.isfinite(sd):
        text += " ± " + fmt.format(sd)
    return text


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    esc = [[str(c).replace("|", "\\|") for c in r] for r in rows]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in esc]
    return "\n".join(lines)


def _label(r) -> str:
    return f"{r['method']} [{r['variant']}]" if r.get("variant") else str(r["method"])


def markdown(col: Collected, agg: pd.DataFrame, figures: list[Path], out_dir: Path | None = None) -> str:
    parts = [f"# Report: {col.root}", ""]
    if not col.jobs.empty and "status" in col.jobs:
        counts = col.jobs["status"].value_counts().to_dict()
        parts += ["## Jobs", "", ", ".join(f"{counts.get(s, 0)} {s}" for s in
                                           ("done", "skipped", "failed")), ""]
        failed = col.jobs[col.jobs["status"] == "failed"]
        if not failed.empty:
            parts += ["Failed jobs:", ""]
            parts += [_md_table(["job", "overrides", "error"],
                                [[str(r.get("job_num", "")),
                                  " ".join(o for o in (r.get("overrides") or [])
                                           if not str(o).startswith("hydra.")),
                                  str(r.get("error"))] for _, r in failed.iterrows()]), ""]
        if "wall_time_s" in col.jobs:
            parts += [f"Total job wall time: {pd.to_numeric(col.jobs['wall_time_s']).sum():.1f} s", ""]
    if col.unreadable:
        parts += ["## Unreadable lines", "",
                  f"{len(col.unreadable)} unreadable line(s) in results files were skipped (a "
                  "resumed run moves them to results.rejected.jsonl / samples.rejected.jsonl):",
                  ""]
        parts += [_md_table(["file", "line", "reason"],
                            [[f, str(n), r] for f, n, r in col.unreadable[:50]]), ""]
    if agg.empty:
        parts += ["No scored samples.", ""]
        return "\n".join(parts)
    parts += ["## Results (mean ± sd over seeds)", "",
              "sMAPE in percent; MASE and OWA unitless (OWA 1 = Naive2); reward is the run's "
              "reward; tokens/sample counts all model work (prompt prefill + generated); "
              "time in seconds per sample.", ""]
    metrics = metric_columns(col.summary)
    groups = [("Accuracy", [m for m in metrics if m in ACCURACY]),
              ("Sample sets (CRPS, 95% intervals)", [m for m in metrics if m in DISTRIBUTION]),
              ("Cost", [m for m in metrics if m in COST]),
              ("Other metrics", [m for m in metrics
                                 if m not in ACCURACY and m not in COST and m not in DISTRIBUTION])]
    has_variant = bool((agg["variant"].astype(str) != "").any())
    for title, ms in groups:
        if not ms:
            continue
        header = ["method", "dataset"] + (["variant"] if has_variant else []) + ["seeds"]
        header += [reward_label(col.rows) if m == "reward" else METRICS.get(m, (m,))[0]
                   for m in ms]
        rows = []
        for _, r in agg.iterrows():
            cells = [str(r["method"]), str(r["dataset"])] + ([str(r["variant"])] if has_variant else [])
            cells.append(str(r["n_seeds"]))
            cells += [_fmt(m, r[f"{m}_mean"], r[f"{m}_sd"]) for m in ms]
            rows.append(cells)
        parts += [f"### {title}", "", _md_table(header, rows), ""]
    flagged = flags(col, agg)
    if flagged:
        parts += ["## Flags", "", "Means above include these samples (scored as the last value "
                  "repeated when the output did not parse or the sample failed).", "", *flagged, ""]
    anytime = getattr(col, "anytime", None)
    if anytime is not None and not anytime.empty:
        parts += [anytime_markdown(anytime, reward_label(col.rows)), ""]
    for section in SECTIONS:
        text = section(col, agg)
        if text:
            parts += [text, ""]
    if figures:
        parts += ["## Figures", ""]
        base = out_dir or col.root
        parts += [f"![{p.stem}]({p.relative_to(base).as_posix()})" for p in figures] + [""]
    return "\n".join(parts)


def anytime_markdown(any_df: pd.DataFrame, reward: str) -> str:
    """The anytime table: best reward so far and sMAPE of the median answer per budget."""
    parts = ["## Anytime: one run, every budget (from samples.jsonl)", "",
             f"Mean over series (± half-width of the 95% band) of the best {reward} found, of "
             "the sMAPE (%) of each answer rule over the continuations scored (best: the "
             "best-reward one; median and mean: step-wise over the parsed ones) and of their "
             "CRPS, when the search had processed at most the given tokens per sample (prompt "
             "included).", ""]
    labels = [(k, g) for k, g in any_df.groupby(["dataset", "method", "variant"], sort=False,
                                                dropna=False)]
    labels.sort(key=lambda kg: tuple(natural_key(x) for x in kg[0]))
    rows = []
    for (ds, method, variant), g in labels:
        for _, r in g.sort_values("tokens").iterrows():
            def cell(q):
                if f"{q}_mean" not in r:
                    return "–"
                m, hi = r[f"{q}_mean"], r[f"{q}_hi"]
                if not math.isfinite(m):
                    return "–"
                return f"{m:.4g}" + (f" ± {hi - m:.2g}" if math.isfinite(hi) else "")
            rows.append([str(ds), str(method) + (f" [{variant}]" if variant else ""),
                         f"{r['tokens']:.0f}", str(int(r["n_series"])), cell("best_reward"),
                         cell("smape_best"), cell("smape_median"), cell("smape_mean"),
                         cell("crps")])
    parts.append(_md_table(["dataset", "method", "tokens ≤", "series", f"best {reward}",
                            "sMAPE best (%)", "sMAPE median (%)", "sMAPE mean (%)", "CRPS"], rows))
    return "\n".join(parts)


def latex(col: Collected, agg: pd.DataFrame) -> str:
    """report.tex: the accuracy and cost tables (mean ± sd over seeds), booktabs style."""
    def esc(text) -> str:
        rep = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
               "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
               "^": r"\textasciicircum{}"}
        return "".join(rep.get(c, c) for c in str(text))

    lines = ["% written by python -m specdifftree.report; needs \\usepackage{booktabs}",
             f"% source: {esc(col.root)}"]
    if agg.empty:
        return "\n".join(lines + ["% no scored samples"]) + "\n"
    metrics = metric_columns(col.summary)
    has_variant = bool((agg["variant"].astype(str) != "").any())
    for title, ms in (("Accuracy", [m for m in metrics if m in ACCURACY]),
                      ("Cost", [m for m in metrics if m in COST]),
                      ("Sample sets", [m for m in metrics if m in DISTRIBUTION])):
        if not ms:
            continue
        head = ["method", "dataset"] + (["variant"] if has_variant else []) + ["seeds"]
        head += [METRICS.get(m, (m,))[0] for m in ms]
        lines += ["", "\\begin{table}[t]", "\\centering", "\\small",
                  f"\\caption{{{esc(title)} (mean $\\pm$ sd over seeds).}}",
                  "\\begin{tabular}{" + "l" * (len(head) - len(ms)) + "r" * len(ms) + "}",
                  "\\toprule", " & ".join(esc(h) for h in head) + " \\\\", "\\midrule"]
        for _, r in agg.iterrows():
            cells = [r["method"], r["dataset"]] + ([r["variant"]] if has_variant else [])
            cells.append(r["n_seeds"])
            cells = [esc(c) for c in cells]
            cells += [esc(_fmt(m, r[f"{m}_mean"], r[f"{m}_sd"])).replace("±", "$\\pm$")
                      .replace("–", "--") for m in ms]
            lines.append(" & ".join(cells) + " \\\\")
        lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------ figures

def _colors(methods) -> dict:
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    return {m: cmap(i % 10) for i, m in enumerate(sorted(set(methods)))}


def _datasets_axes(n: int, width: float = 5.5, height: float = 4.2, max_cols: int = 3):
    from matplotlib.figure import Figure

    cols = min(n, max_cols)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(width * cols, height * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def fig_reward_vs_tokens(summary: pd.DataFrame, agg: pd.DataFrame, reward: str = "reward"):
    """Mean reward vs tokens processed per sample, one panel per dataset; None without data."""
    need = {"reward", "tokens_processed"}
    if summary.empty or not need <= set(summary.columns):
        return None
    datasets = sorted(agg["dataset"].astype(str).unique())
    colors = _colors(agg["method"])
    fig, axes = _datasets_axes(len(datasets))
    for ax, ds in zip(axes, datasets):
        a = agg[agg["dataset"].astype(str) == ds]
        s = summary[summary["dataset"].astype(str) == ds]
        ax.scatter(s["tokens_processed"], s["reward"], s=12, alpha=0.35,
                   c=[colors[m] for m in s["method"]], linewidths=0)
        for i, (method, g) in enumerate(a.groupby("method")):
            g = g.dropna(subset=["tokens_processed_mean", "reward_mean"])
            if g.empty:
                continue
            g = g.sort_values("tokens_processed_mean")
            marker = "osD^vP*X"[i % 8]
            ax.errorbar(g["tokens_processed_mean"], g["reward_mean"],
                        xerr=g["tokens_processed_sd"].fillna(0), yerr=g["reward_sd"].fillna(0),
                        fmt=marker + ("-" if len(g) > 1 else ""), color=colors[method],
                        label=method, capsize=3, markersize=7, alpha=0.85)
        xs = pd.to_numeric(s["tokens_processed"], errors="coerce")
        pos = xs[xs > 0]
        if len(pos) and pos.max() / max(pos.min(), 1) > 50:
            ax.set_xscale("symlog", linthresh=max(1.0, float(pos.min())))
        ax.set_title(ds)
        ax.set_xlabel("tokens processed per sample (prompt + generated)")
        ax.set_ylabel(f"mean {reward} per sample")
        ax.grid(alpha=0.3)
        ax.legend(title="method (mean ± sd over seeds)", fontsize=8, title_fontsize=8)
    fig.suptitle(f"{reward[0].upper()}{reward[1:]} vs compute (small dots: one seed; "
                 "lines join the budgets of one method)")
    fig.tight_layout()
    return fig


def fig_accuracy(agg: pd.DataFrame):
    """sMAPE, MASE and OWA per method (rows: datasets); None without data."""
    from matplotlib.figure import Figure

    metrics = [(m, lbl) for m, lbl in (("smape", "sMAPE (%)"), ("mase", "MASE"),
                                        ("owa", "OWA (Naive2 = 1)"))
               if f"{m}_mean" in agg.columns and agg[f"{m}_mean"].notna().any()]
    if agg.empty or not metrics:
        return None
    datasets = sorted(agg["dataset"].astype(str).unique())
    colors = _colors(agg["method"])
    n_entries = int(agg.groupby("dataset").size().max())
    fig = Figure(figsize=(len(metrics) * max(3.6, 0.55 * n_entries + 1.6), 3.9 * len(datasets)))
    axes = fig.subplots(len(datasets), len(metrics), squeeze=False)
    for row, ds in enumerate(datasets):
        a = agg[agg["dataset"].astype(str) == ds]
        labels = [_label(r) for _, r in a.iterrows()]
        x = np.arange(len(labels))
        for ax, (m, lbl) in zip(axes[row], metrics):
            ax.bar(x, a[f"{m}_mean"], yerr=a[f"{m}_sd"].fillna(0), capsize=3,
                   color=[colors[mm] for mm in a["method"]])
            if m == "owa":
                ax.axhline(1.0, color="black", linestyle="--", linewidth=1, label="Naive2")
                ax.legend(fontsize=8, loc="lower right")
            ax.set_xticks(x, labels, rotation=30, ha="right", fontsize=8)
            ax.set_ylabel(f"{lbl}, lower is better")
            ax.set_title(f"{lbl} — {ds}", fontsize=10)
            ax.grid(axis="y", alpha=0.3)
    fig.suptitle("Forecast accuracy per method (bars: mean over seeds, whiskers: sd)")
    fig.tight_layout()
    return fig


def fig_forecasts(rows: pd.DataFrame, max_series: int = 4):
    """Forecasts of every method vs truth (and the end of the history) for a few series."""
    if rows.empty or "forecast" not in rows or "series_id" not in rows:
        return None
    rows = rows[rows["forecast"].map(lambda v: isinstance(v, list) and len(v) > 0)]
    if rows.empty:
        return None
    first_seed = rows.groupby(["method", "variant"])["seed"].transform("min")
    rows = rows[rows["seed"] == first_seed]
    keyed = rows.assign(_key=rows["dataset"].astype(str) + " / " + rows["series_id"].astype(str))
    coverage = keyed.groupby("_key")["method"].nunique().sort_values(ascending=False, kind="stable")
    picked = list(coverage.index[:max_series])
    colors = _colors(rows["method"])
    styles = ["--", ":", "-.", (0, (5, 1)), (0, (3, 1, 1, 1, 1, 1))]
    variants_of = {m: sorted(g["variant"].astype(str).unique()) for m, g in rows.groupby("method")}
    fig, axes = _datasets_axes(len(picked), width=6.0, height=3.8, max_cols=2)
    for ax, key in zip(axes, picked):
        g = keyed[keyed["_key"] == key]
        ref = g.iloc[0]
        h = len(ref["forecast"])
        hist = ref.get("history_tail")
        if isinstance(hist, list) and hist:
            ax.plot(np.arange(-len(hist) + 1, 1), hist, color="0.55", label="history")
        truth = ref.get("truth")
        if isinstance(truth, list) and truth:
            ax.plot(np.arange(1, len(truth) + 1), truth, color="black", linewidth=2, label="truth")
        seen = set()
        for _, r in g.iterrows():
            lab = _label(r)
            if lab in seen:
                continue
            seen.add(lab)
            fc = np.array([np.nan if v is None else v for v in r["forecast"]], dtype=np.float64)
            style = styles[variants_of[r["method"]].index(r["variant"]) % len(styles)]
            ax.plot(np.arange(1, len(fc) + 1), fc, linestyle=style, color=colors[r["method"]],
                    label=lab)
        ax.axvline(0.5, color="0.8", linewidth=1)
        ax.set_title(f"{key} (h={h}, seed {int(ref['seed'])})" if "seed" in ref else key, fontsize=9)
        ax.set_xlabel("time step (forecast origin = 0)")
        ax.set_ylabel("value (series units)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Forecasts vs truth")
    fig.tight_layout()
    return fig


ANYTIME_PANELS = (("best_reward", "best {reward} so far", "higher is better"),
                  ("smape_best", "sMAPE (%), answer rule best", "lower is better"),
                  ("smape_median", "sMAPE (%), answer rule median", "lower is better"),
                  ("smape_mean", "sMAPE (%), answer rule mean", "lower is better"),
                  ("crps", "CRPS (normalised) of the set", "lower is better"))


def fig_anytime(any_df: pd.DataFrame, reward: str = "reward"):
    """Anytime curves (rows: datasets; columns: quantities) on a log-2 token axis; bands: 95%
    over series. None without data."""
    from matplotlib.figure import Figure

    if any_df is None or any_df.empty:
        return None
    datasets = sorted(any_df["dataset"].astype(str).unique(), key=natural_key)
    panels = [p for p in ANYTIME_PANELS if f"{p[0]}_mean" in any_df]
    fig = Figure(figsize=(5.2 * len(panels), 3.9 * len(datasets)))
    axes = fig.subplots(len(datasets), len(panels), squeeze=False)
    labels = {k: f"{k[0]} [{k[1]}]" if k[1] else str(k[0])
              for k in any_df.groupby(["method", "variant"], dropna=False).groups}
    colors = _colors(labels.values())
    for row, ds in enumerate(datasets):
        d = any_df[any_df["dataset"].astype(str) == ds]
        for ax, (q, title, better) in zip(axes[row], panels):
            for key, g in sorted(d.groupby(["method", "variant"], dropna=False),
                                 key=lambda kg: tuple(natural_key(x) for x in kg[0])):
                g = g.sort_values("tokens")
                g = g[np.isfinite(g[f"{q}_mean"])]
                if g.empty:
                    continue
                lab = labels[key]
                if len(g) >= 2:
                    ax.plot(g["tokens"], g[f"{q}_mean"], "-o", markersize=3, color=colors[lab],
                            label=lab)
                    ax.fill_between(g["tokens"], g[f"{q}_lo"], g[f"{q}_hi"], alpha=0.18,
                                    color=colors[lab], linewidth=0)
                else:  # one budget: a point with its interval, never a line
                    ax.errorbar(g["tokens"], g[f"{q}_mean"],
                                yerr=(g[f"{q}_hi"] - g[f"{q}_mean"]).fillna(0), fmt="o",
                                color=colors[lab], label=lab, capsize=3)
            ax.set_xscale("log", base=2)
            ax.set_xlabel("tokens processed per sample (prompt + generated), log2 scale")
            ax.set_ylabel(title.format(reward=reward) + f", {better}")
            ax.set_title(f"{title.format(reward=reward)} — {ds}", fontsize=10)
            ax.grid(alpha=0.3, which="both")
            ax.legend(fontsize=7, title="method (band: 95% over series)", title_fontsize=7)
    fig.suptitle("Anytime performance from one run per method (samples.jsonl)")
    fig.tight_layout()
    return fig


FIGURE_FORMATS = ("png", "pdf", "svg")


def make_figures(col: Collected, agg: pd.DataFrame, out_dir: Path, max_series: int = 4) -> list[Path]:
    """Write every figure as PNG (120 dpi) and vector PDF and SVG; returns the PNG paths."""
    fig_dir = out_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    reward = reward_label(col.rows)
    made = []
    anytime = getattr(col, "anytime", None)
    for name, make in (("reward_vs_tokens", lambda: fig_reward_vs_tokens(col.summary, agg, reward)),
                       ("accuracy", lambda: fig_accuracy(agg)),
                       ("forecasts", lambda: fig_forecasts(col.rows, max_series=max_series)),
                       ("anytime", lambda: fig_anytime(anytime, reward))):
        fig = make()
        if fig is None:
            continue
        for ext in FIGURE_FORMATS:
            fig.savefig(fig_dir / f"{name}.{ext}", **({"dpi": 120} if ext == "png" else {}))
        made.append(fig_dir / f"{name}.png")
    return made


# -------------------------------------------------------------------------------------- entry

def build_report(run_dir: str | Path, out_dir: str | Path | None = None, figures: bool = True,
                 max_series: int = 4, reference: str | None = None) -> dict:
    """Write report.md, report.csv, report_paired.csv, report.tex and figures; returns their
    paths, the aggregate and the paired differences (:mod:`specdifftree.report_paired`)."""
    from .anytime import curves
    from .report_paired import markdown_section, paired_differences

    col = collect(run_dir)
    out = Path(out_dir) if out_dir is not None else col.root
    out.mkdir(parents=True, exist_ok=True)
    agg = aggregate(col.summary)
    col.anytime = curves(col.samples, col.rows) if not col.samples.empty else pd.DataFrame()
    figs = make_figures(col, agg, out, max_series=max_series) if figures and not agg.empty else []
    agg.to_csv(out / "report.csv", index=False)
    if not col.anytime.empty:
        col.anytime.to_csv(out / "anytime.csv", index=False)
    paired = paired_differences(col.rows, reference)
    paired.to_csv(out / "report_paired.csv", index=False)
    md = markdown(col, agg, figs, out)
    (out / "report.md").write_text(md + "\n".join(["", *markdown_section(paired)]))
    (out / "report.tex").write_text(latex(col, agg))
    return {"report_md": out / "report.md", "report_csv": out / "report.csv",
            "report_tex": out / "report.tex", "figures": figs, "aggregate": agg,
            "collected": col, "paired": paired, "report_paired_csv": out / "report_paired.csv"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m specdifftree.report",
                                description="Report (markdown, CSV, figures) over a run or "
                                            "multirun dir, from its results files.")
    p.add_argument("dir", help="run dir (holding results.jsonl) or multirun dir (job subdirs)")
    p.add_argument("--out", default=None, help="where to write (default: the dir itself)")
    p.add_argument("--no-figures", action="store_true", help="skip the figures")
    p.add_argument("--max-series", type=int, default=4, help="series in forecasts.png (default 4)")
    p.add_argument("--reference", default=None,
                   help="method the paired differences compare against (default: naive2 if "
                        "present, else greedy, else the first method)")
    args = p.parse_args(argv)
    from .errors import SpecDiffTreeError

    try:
        res = build_report(args.dir, args.out, figures=not args.no_figures,
                           max_series=args.max_series, reference=args.reference)
    except SpecDiffTreeError as exc:
        print(f"specdifftree: error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(f"wrote {res['report_md']}, {res['report_csv']}, {res['report_tex']}"
          + "".join(f", {f}" for f in res["figures"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
