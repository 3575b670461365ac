"""The end-of-run tables, built from ``summary.csv`` (the results contract) only.

One format per column, the same in the CLI table, the table after a multirun and report.md
(:data:`FORMATS`): a column keeps its number of decimals from run to run. Units are in the
headers; :func:`legend` is the line printed below a table.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

#: fixed number format of each summary column (also used by specdifftree.report)
FORMATS = {
    "valid_rate": "{:.0%}", "smape": "{:.2f}", "mase": "{:.3f}", "owa": "{:.3f}",
    "caption_rougeL_f1": "{:.3f}", "reward": "{:.3f}", "perplexity": "{:.2f}",
    "mean_logprob": "{:.3f}", "tokens_processed": "{:.0f}", "model_calls": "{:.0f}",
    "time_s": "{:.3f}", "n": "{:.0f}", "errors": "{:.0f}",
}

#: (summary.csv column, header) of the CLI table, in order; ``reward`` is named after the reward
COLUMNS = [
    ("method", "method"), ("dataset", "dataset"), ("seed", "seed"), ("n", "n"),
    ("errors", "errors"), ("valid_rate", "valid"), ("smape", "sMAPE%"), ("mase", "MASE"),
    ("owa", "OWA"), ("caption_rougeL_f1", "ROUGE-L"), ("reward", "reward"), ("perplexity", "ppl"),
    ("tokens_processed", "tok/smp"), ("model_calls", "calls/smp"), ("time_s", "s/smp"),
]


def legend(reward_name: str | None = None) -> str:
    """One line explaining the columns (the reward named when known)."""
    reward = f"mean {reward_name} reward" if reward_name else "mean reward"
    return (f"valid: outputs that parsed | sMAPE in % | MASE, OWA unitless (OWA 1 = Naive2) | "
            f"reward: {reward} (higher is better) | ppl: perplexity of the answers | per sample: "
            "tok = tokens through the model (prompt included), calls = forward passes, "
            "s = seconds | -: undefined")


def fmt(column: str, value) -> str:
    """``value`` in ``column``'s fixed format; ``-`` for a missing or non-finite number."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        return "-" if value is None else str(value)
    if x != x or x in (float("inf"), float("-inf")):
        return "-"
    f = FORMATS.get(column)
    return f.format(x) if f else str(value)


def _reward_names(df: pd.DataFrame) -> list[str]:
    if "reward_name" not in df:
        return []
    return sorted({str(n) for n in df["reward_name"].dropna().unique()})


def render(df: pd.DataFrame, lead: list[tuple[str, str]] = ()) -> str:
    """The table of the summary rows ``df`` (columns of :data:`COLUMNS` present), after the
    ``lead`` columns (name, header), right-aligned numbers; then the legend line."""
    names = _reward_names(df)
    cols = list(lead) + [(c, h) for c, h in COLUMNS if c in df.columns]
    headers = [f"reward({names[0]})" if c == "reward" and len(names) == 1 else h for c, h in cols]
    def cell(c, v):
        if c in FORMATS or (c == "seed" and isinstance(v, float)):  # a float column: NaN rows
            return fmt(c, v) if c in FORMATS else ("-" if pd.isna(v) else f"{v:.0f}")
        return "-" if v is None or (isinstance(v, float) and pd.isna(v)) else str(v)

    cells = [[cell(c, r.get(c)) for c, _ in cols] for r in df.to_dict("records")]
    widths = [max([len(h)] + [len(row[i]) for row in cells]) for i, h in enumerate(headers)]
    left = {"method", "dataset", "job", "status", "overrides"}

    def line(values):
        return "  ".join(v.ljust(w) if c in left else v.rjust(w)
                         for v, w, (c, _) in zip(values, widths, cols)).rstrip()

    out = [line(headers)] + [line(row) for row in cells]
    out.append(legend(", ".join(names) if names else None))
    return "\n".join(out)


def summary_table(run_dir: str | Path) -> str:
    path = Path(run_dir) / "summary.csv"
    if not path.exists():
        return f"(no summary.csv in {run_dir})"
    df = pd.read_csv(path)
    if df.empty:
        return "(no samples)"
    return render(df)


def _job_info(job_dir: Path) -> dict:
    try:
        info = json.loads((job_dir / "job.json").read_text())
        return info if isinstance(info, dict) else {}
    except (OSError, ValueError):
        return {}


def _job_overrides(job_dir: Path) -> list[str]:
    ov = _job_info(job_dir).get("overrides")
    if ov is not None:
        return [str(o) for o in ov]
    try:
        from omegaconf import OmegaConf

        return [str(o) for o in OmegaConf.load(job_dir / ".hydra" / "overrides.yaml")]
    except Exception:  # noqa: BLE001 - no record of the overrides
        return []


def sweep_table(sweep_dir: str | Path) -> str:
    """One row per job dir of a multirun (job number, status from ``job.json`` when the launcher
    wrote one, its overrides, its summary), in job order.

    A job without a summary (failed before its first sample) shows ``-`` in every metric."""
    sweep_dir = Path(sweep_dir)
    dirs = sorted((p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()),
                  key=lambda p: int(p.name)) if sweep_dir.is_dir() else []
    rows = []
    for d in dirs:
        ov = " ".join(o for o in _job_overrides(d) if not o.startswith("hydra."))
        lead = {"job": d.name, "status": _job_info(d).get("status") or "-", "overrides": ov}
        summary = d / "summary.csv"
        frame = pd.read_csv(summary) if summary.exists() else pd.DataFrame()
        if frame.empty:
            rows.append(lead)
        for r in frame.to_dict("records"):
            rows.append({**lead, **r})
    if not rows:
        return f"(no job dirs in {sweep_dir})"
    df = pd.DataFrame(rows)
    lead_cols = [("job", "job")] + ([("status", "status")] if (df["status"] != "-").any() else [])
    return render(df, lead=lead_cols + [("overrides", "overrides")])


def natural_key(text) -> tuple:
    """Sort key that orders the numbers inside a string numerically ("k=800" < "k=1600")."""
    import re

    parts = re.split(r"(-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)", str(text))
    return tuple((0, float(p), "") if i % 2 else (1, 0.0, p) for i, p in enumerate(parts) if p)
