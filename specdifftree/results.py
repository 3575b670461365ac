"""The results contract: ``results.jsonl`` (one object per scored sample) and ``summary.csv``.

Every later tool (report, W&B, notebook) reads these files, never internal objects. Rows are
appended and flushed as they are produced, so a crash loses at most the sample in flight. A run
started again in the same folder skips samples already written (resume).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

SUMMARY_KEYS = ("method", "dataset", "seed")
RESULTS_FILE = "results.jsonl"
SUMMARY_FILE = "summary.csv"
#: means of the sample-set scores, in summary.csv when the rows have them
DISTRIBUTION_KEYS = ("crps", "crps_mase", "msis", "coverage", "wql", "n_forecast_samples")


def _jsonable(v):
    if isinstance(v, np.ndarray):
        return [_jsonable(x) for x in v.tolist()]
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (np.floating, float)):
        v = float(v)
        return v if math.isfinite(v) else None
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.bool_):
        return bool(v)
    return v


def read_results(run_dir: str | Path) -> list[dict]:
    """Rows of ``results.jsonl``; a torn last line (crash mid-write) is ignored."""
    path = Path(run_dir) / RESULTS_FILE
    rows = []
    if not path.exists():
        return rows
    with path.open() as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return rows


def _mean(values) -> float:
    arr = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    return float(arr.mean()) if arr.size else float("nan")


def summarize(rows: list[dict]) -> pd.DataFrame:
    """One row per (method, dataset, seed): means over samples; OWA from the means.

    ``owa = ½ (mean sMAPE / mean sMAPE_Naive2 + mean MASE / mean MASE_Naive2)`` on the same series.
    """
    if not rows:
        return pd.DataFrame(columns=[*SUMMARY_KEYS, "n"])
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(tuple(r.get(k) for k in SUMMARY_KEYS), []).append(r)
    out = []
    for key, rs in groups.items():
        smape, mase = _mean(r.get("smape") for r in rs), _mean(r.get("mase") for r in rs)
        s2, m2 = _mean(r.get("smape_naive2") for r in rs), _mean(r.get("mase_naive2") for r in rs)
        owa = 0.5 * (smape / s2 + mase / m2) if s2 > 0 and m2 > 0 else float("nan")
        lps = [r.get("mean_logprob") for r in rs if r.get("mean_logprob") is not None]
        row = dict(zip(SUMMARY_KEYS, key))
        row.update(
            n=len(rs),
            errors=sum(1 for r in rs if r.get("error")),
            valid_rate=_mean(1.0 if r.get("valid") else 0.0 for r in rs),
            smape=smape, mase=mase, owa=owa,
            reward=_mean(r.get("reward") for r in rs),
            perplexity=float(math.exp(-_mean(lps))) if lps else float("nan"),
            mean_logprob=_mean(lps) if lps else float("nan"),
            model_calls=_mean(r.get("model_calls") for r in rs),
            tokens_processed=_mean(r.get("tokens_processed") for r in rs),
            time_s=_mean(r.get("time_s") for r in rs),
        )
        for k in sorted({k for r in rs for k in r if k.startswith("caption_") and k.endswith("_f1")}):
            row[k] = _mean(r.get(k) for r in rs)
        for k in DISTRIBUTION_KEYS:  # sample-set scores (specdifftree.metrics.probabilistic)
            if any(r.get(k) is not None for r in rs):
                row[k] = _mean(r.get(k) for r in rs)
        out.append(row)
    return pd.DataFrame(out)


class ResultsWriter:
    """Appends rows to ``results.jsonl`` (flushed per row) and writes ``summary.csv``."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.run_dir / RESULTS_FILE
        self.rows = read_results(self.run_dir)
        self._truncate_torn_tail()
        self._fh = self.path.open("a")

    def _truncate_torn_tail(self) -> None:
        """Drop a partial last line left by a crash so appends start on a clean line."""
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        good = b"".join(json.dumps(_jsonable(r)).encode() + b"\n" for r in self.rows)
        if data != good:
            self.path.write_bytes(good)

    def done_keys(self) -> set[tuple]:
        return {(r.get("method"), r.get("dataset"), r.get("seed"), r.get("series_id")) for r in self.rows}

    def write(self, row: dict) -> None:
        row = _jsonable(row)
        self._fh.write(json.dumps(row) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self.rows.append(row)

    def write_summary(self) -> pd.DataFrame:
        df = summarize(self.rows)
        tmp = self.run_dir / (SUMMARY_FILE + ".tmp")
        df.to_csv(tmp, index=False)
        tmp.replace(self.run_dir / SUMMARY_FILE)
        return df

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()
