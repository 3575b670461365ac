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

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

#: the fields that identify a row: results.jsonl holds one row per key (samples.jsonl one line per
#: key and ``rollout``); :func:`row_key` is the only place a key is built
ROW_KEY = ("method", "dataset", "seed", "series_id")
#: the row schema: every field a results.jsonl row may hold, in the order of README.md's table
#: ("results.jsonl fields", which documents each; a test keeps the two equal and checks the rows
#: of every method against it). A row holds the fields that apply to its method and task.
ROW_FIELDS = (
    *ROW_KEY, "model", "sample_index", "horizon", "period", "reward_name", "budget_rollouts",
    "budget_tokens", "reward", "text", "caption", "reference", "forecast", "truth", "history_tail",
    "valid", "n_parsed", "smape", "mase", "smape_naive2", "mase_naive2", "caption_rougeL_f1",
    "caption_token_f1", "model_calls", "tokens_processed", "prompt_tokens", "prompt_boundary",
    "generated_tokens", "mean_logprob", "perplexity", "plain_mean_logprob", "logprob_gap",
    # search statistics (search.stats.build_result)
    "rollouts", "model_rollouts", "nodes", "max_depth", "mean_branching", "distinct_samples",
    "ngram_diversity", "best_reward", "tree_exhausted", "budget_stopped", "failed_rollouts",
    "samples_independent", "particles", "resamples",
    # the sample's reward diagnostics (rewards.base.RewardDiagnostics.row)
    "reward_calls", "reward_evaluations", "reward_failures", "reward_nonfinite_values",
    "reward_error", "reward_time_s", "model_time_s", "time_s",
    # answer rule and sample-set scores
    "answer", "n_forecast_samples", "samples_valid", "crps", "crps_mase", "msis", "coverage",
    "quantile_levels", "quantiles", "wql", "mase_scale", "cache_mode", "recomputed_tokens",
    "error",
)
SUMMARY_KEYS = ("method", "dataset", "seed")
RESULTS_FILE = "results.jsonl"
SUMMARY_FILE = "summary.csv"
#: means of the sample-set scores, in summary.csv when the rows have them
DISTRIBUTION_KEYS = ("crps", "crps_mase", "msis", "coverage", "wql", "n_forecast_samples")
REJECTED_FILE = "results.rejected.jsonl"

log = logging.getLogger(__name__)


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


@dataclass
class BadLine:
    """A line of ``results.jsonl`` that is not a usable row."""

    lineno: int
    reason: str
    text: str


@dataclass
class Scan:
    rows: list[dict]
    raw: list[bytes]          # each row's original line (newline included)
    bad: list[BadLine]


def row_key(row) -> tuple:
    """The key (method, dataset, seed, series_id) of a row (any mapping; absent fields: None)."""
    return tuple(row.get(k) for k in ROW_KEY)


def scan_results(run_dir: str | Path) -> Scan:
    """Rows of ``results.jsonl`` and the lines that are not rows, each with its reason.

    A line is bad when it is not JSON, not a JSON object, lacks the row keys, repeats the key
    (method, dataset, seed, series_id) of an earlier row, or is torn (the last line without its
    newline: a crash mid-write). Reading never stops at a bad line.
    """
    from .errors import DataError

    path = Path(run_dir) / RESULTS_FILE
    scan = Scan([], [], [])
    if not path.exists():
        return scan
    if path.is_dir():
        raise DataError(f"{path} is a folder, not a results file; move it away or choose another "
                        "run dir (hydra.run.dir=...)")
    if not path.is_file():
        raise DataError(f"{path} is not a regular file; move it away or choose another run dir "
                        "(hydra.run.dir=...)")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    seen: set[tuple] = set()
    for i, line, text, row, reason in jsonl_lines(data):
        if reason:
            scan.bad.append(BadLine(i, reason, text))
            continue
        if not isinstance(row, dict):
            scan.bad.append(BadLine(i, f"a JSON {type(row).__name__}, not an object", text))
            continue
        if not {"method", "series_id"} <= set(row):
            scan.bad.append(BadLine(i, "not a results row (no method/series_id)", text))
            continue
        k = row_key(row)
        if k in seen:
            scan.bad.append(BadLine(i, "duplicate of an earlier row", text))
            continue
        seen.add(k)
        scan.rows.append(row)
        scan.raw.append(line + b"\n")
    return scan


def jsonl_lines(data: bytes):
    """Each non-blank line of JSON-lines bytes as ``(line number, raw line, text, object,
    reason)``: ``reason`` is None and ``object`` the parsed value, or ``object`` is None and
    ``reason`` says why the line is unusable — torn (the last line without its newline: a crash
    mid-write) or not JSON."""
    lines = data.split(b"\n")
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue  # blank lines, and the empty tail after the final newline
        text = line.decode("utf-8", errors="replace")
        if i == len(lines):
            yield i, line, text, None, "torn line (no newline: cut by a crash)"
            continue
        try:
            obj = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            yield i, line, text, None, "not JSON"
            continue
        yield i, line, text, obj, None


def read_results(run_dir: str | Path) -> list[dict]:
    """Rows of ``results.jsonl``; bad lines are skipped with a warning (see :func:`scan_results`)."""
    scan = scan_results(run_dir)
    if scan.bad:
        log.warning("%s: %d unreadable line(s) skipped (%s)", Path(run_dir) / RESULTS_FILE,
                    len(scan.bad), "; ".join(f"line {b.lineno}: {b.reason}" for b in scan.bad[:5]))
    return scan.rows


def _mean(values) -> float:
    arr = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    return float(arr.mean()) if arr.size else float("nan")


def _count(rs: list[dict], key: str) -> int:
    """Sum of an integer counter over rows (absent or null: 0)."""
    return int(sum(int(r.get(key) or 0) for r in rs))


def _paired_means(rs: list[dict], key: str) -> tuple[float, float, int]:
    """Means of ``key`` and ``key_naive2`` over the rows where both are finite, and how many rows
    were left out: OWA compares a method and Naive2 on the same series (docs/metrics.md)."""
    a = np.array([np.nan if r.get(key) is None else r.get(key) for r in rs], dtype=np.float64)
    b = np.array([np.nan if r.get(f"{key}_naive2") is None else r.get(f"{key}_naive2") for r in rs],
                 dtype=np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    if not ok.any():
        return float("nan"), float("nan"), int(len(rs))
    return float(a[ok].mean()), float(b[ok].mean()), int((~ok).sum())


def _first(rs: list[dict], key: str):
    vals = {json.dumps(r.get(key)) for r in rs if r.get(key) is not None}
    if not vals:
        return None
    return json.loads(sorted(vals)[0]) if len(vals) == 1 else "mixed"


#: what was run, named in summary.csv next to the grouping keys
CONTEXT_KEYS = ("model", "reward_name", "budget_rollouts", "budget_tokens")


def summarize(rows: list[dict]) -> pd.DataFrame:
    """One row per (method, dataset, seed): means over samples; OWA from the means.

    ``owa = ½ (mean sMAPE / mean sMAPE_Naive2 + mean MASE / mean MASE_Naive2)`` on the same series:
    a series whose MASE is undefined for the method or for Naive2 (constant or 1-value history,
    docs/metrics.md) leaves both MASE means and is counted in ``mase_undefined``.
    """
    if not rows:
        return pd.DataFrame(columns=[*SUMMARY_KEYS, "n"])
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(tuple(r.get(k) for k in SUMMARY_KEYS), []).append(r)
    out = []
    for key, rs in groups.items():
        smape, s2, _ = _paired_means(rs, "smape")
        mase, m2, mase_undef = _paired_means(rs, "mase")
        owa = 0.5 * (smape / s2 + mase / m2) if s2 > 0 and m2 > 0 else float("nan")
        lps = [r.get("mean_logprob") for r in rs if r.get("mean_logprob") is not None]
        row = dict(zip(SUMMARY_KEYS, key))
        row.update({k: _first(rs, k) for k in CONTEXT_KEYS})
        row.update(
            n=len(rs),
            errors=sum(1 for r in rs if r.get("error")),
            # reward calls that raised / returned NaN (each replaced by reward.failure_reward)
            reward_failures=_count(rs, "reward_failures"),
            reward_nonfinite_values=_count(rs, "reward_nonfinite_values"),
            valid_rate=_mean(1.0 if r.get("valid") else 0.0 for r in rs),
            smape=smape, mase=mase, owa=owa, mase_undefined=mase_undef,
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
    """Appends rows to ``results.jsonl`` (flushed and fsynced per row) and writes ``summary.csv``.

    Opening an existing file (resume) moves its bad lines (:func:`scan_results`) to
    ``results.rejected.jsonl`` and rewrites the good rows atomically (temporary file, fsync,
    rename), so appends start on a clean line and a crash never loses a written row.
    """

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.run_dir / RESULTS_FILE
        scan = scan_results(self.run_dir)
        self.rows = scan.rows
        self.rejected = scan.bad
        if scan.bad:
            self._quarantine(scan)
        self._fh = self.path.open("ab", buffering=0)  # each row goes straight to the OS
        self._start = os.fstat(self._fh.fileno()).st_size

    def lines_appended(self) -> int:
        """Complete lines this writer appended, counted on disk (exact also when an interrupt
        arrived between a row's write and its bookkeeping)."""
        with self.path.open("rb") as fh:
            fh.seek(self._start)
            return sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))

    def _quarantine(self, scan: Scan) -> None:
        from .atomic import atomic_write, fsync_dir

        side = self.run_dir / REJECTED_FILE
        with side.open("a") as fh:
            for b in scan.bad:
                fh.write(json.dumps({"line": b.lineno, "reason": b.reason, "text": b.text,
                                     "moved_at": pd.Timestamp.now(tz="UTC").isoformat()}) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        fsync_dir(self.run_dir)
        atomic_write(self.path, b"".join(scan.raw))
        log.warning("%s: %d unusable line(s) moved to %s (%s)", self.path, len(scan.bad), side,
                    "; ".join(f"line {b.lineno}: {b.reason}" for b in scan.bad[:5]))

    def done_keys(self) -> set[tuple]:
        return {row_key(r) for r in self.rows}

    def write(self, row: dict) -> None:
        from . import faults

        row = _jsonable(row)
        data = (json.dumps(row, allow_nan=False) + "\n").encode()
        if os.environ.get("SPECDIFFTREE_CRASH_AT", "").startswith("torn"):
            self._write_all(data[: len(data) // 2])
            faults.crash_point("torn")
            data = data[len(data) // 2:]
        self._write_all(data)
        os.fsync(self._fh.fileno())
        self.rows.append(row)
        faults.crash_point("row")

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = self._fh.write(view)
            view = view[n:]

    def write_summary(self) -> pd.DataFrame:
        from .atomic import atomic_write

        df = summarize(self.rows)
        atomic_write(self.run_dir / SUMMARY_FILE, df.to_csv(index=False))
        return df

    def close(self) -> None:
        if not self._fh.closed:
            try:
                self._fh.close()
            except OSError:  # the write error itself has been reported
                pass
