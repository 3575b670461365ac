"""Warnings about a run's quality, from ``summary.csv``: low valid rate, errors, undefined MASE."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

#: a method × dataset × seed whose share of fully parsed forecasts is below this is flagged
MIN_VALID_RATE = 0.9


def flags_from_summary(df: pd.DataFrame) -> list[str]:
    out = []
    for _, r in df.iterrows():
        what = f"{r.get('method')} {r.get('dataset')} seed {r.get('seed')}"
        n = int(r.get("n") or 0)
        vr = r.get("valid_rate")
        if vr is not None and pd.notna(vr) and float(vr) < MIN_VALID_RATE:
            out.append(f"{what}: valid rate {float(vr):.0%} < {MIN_VALID_RATE:.0%} — its metrics "
                       "score completed (padded) forecasts; check max_new_tokens and the prompt")
        errors = int(r.get("errors") or 0) if pd.notna(r.get("errors")) else 0
        if errors:
            out.append(f"{what}: {errors} of {n} samples failed (the `error` field of "
                       "results.jsonl says why)")
        fails, nonfinite = (int(r.get(k)) if r.get(k) is not None and pd.notna(r.get(k)) else 0
                            for k in ("reward_failures", "reward_nonfinite_values"))
        if fails or nonfinite:
            out.append(f"{what}: the reward raised in {fails} call(s) and returned {nonfinite} "
                       "non-finite value(s), each replaced by reward.failure_reward "
                       "(`reward_error` in results.jsonl says why)")
        undef = r.get("mase_undefined")
        if undef is not None and pd.notna(undef) and int(undef):
            out.append(f"{what}: MASE undefined for {int(undef)} series (constant or 1-value "
                       "history), left out of both MASE means (docs/metrics.md)")
    return out


def summary_flags(run_dir: str | Path | None) -> list[str]:
    if not run_dir:
        return []
    path = Path(run_dir) / "summary.csv"
    try:
        df = pd.read_csv(path)
    except (OSError, pd.errors.EmptyDataError, pd.errors.ParserError):
        return []
    return flags_from_summary(df)
