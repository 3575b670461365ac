"""The end-of-run table, built from ``summary.csv`` (the results contract) only."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

COLUMNS = [
    ("method", "method"), ("dataset", "dataset"), ("seed", "seed"), ("n", "n"),
    ("errors", "errors"), ("valid_rate", "valid"), ("smape", "sMAPE"), ("mase", "MASE"),
    ("owa", "OWA"), ("caption_rougeL_f1", "ROUGE-L"), ("reward", "reward"), ("perplexity", "ppl"),
    ("tokens_processed", "tokens"), ("model_calls", "calls"), ("time_s", "s/sample"),
]


def summary_table(run_dir: str | Path) -> str:
    path = Path(run_dir) / "summary.csv"
    if not path.exists():
        return f"(no summary.csv in {run_dir})"
    df = pd.read_csv(path)
    if df.empty:
        return "(no samples)"
    cols = [(c, h) for c, h in COLUMNS if c in df.columns]
    out = df[[c for c, _ in cols]].rename(columns=dict(cols))
    fmt = {"valid": "{:.0%}".format, "sMAPE": "{:.3f}".format, "MASE": "{:.3f}".format,
           "OWA": "{:.3f}".format, "ROUGE-L": "{:.3f}".format, "reward": "{:.4g}".format, "ppl": "{:.3g}".format,
           "tokens": "{:.0f}".format, "calls": "{:.0f}".format, "s/sample": "{:.3f}".format}
    return out.to_string(index=False, formatters={k: v for k, v in fmt.items() if k in out.columns},
                         na_rep="-")
