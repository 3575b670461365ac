"""Seeds evaluate the same series; the report compares methods on them with paired differences."""

import json

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import run_cli
from specdifftree.report import build_report
from specdifftree.report_paired import bootstrap_mean_ci, paired_differences


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-1e3, 1e3), min_size=1, max_size=40))
def test_bootstrap_interval_brackets_the_mean(values):
    d = np.array(values)
    lo, hi = bootstrap_mean_ci(d, n_boot=400)
    assert lo <= d.mean() + 1e-9 and d.mean() - 1e-9 <= hi
    assert d.min() - 1e-9 <= lo <= hi <= d.max() + 1e-9


@settings(max_examples=30, deadline=None)
@given(st.floats(-50, 50), st.integers(2, 30))
def test_constant_shift_has_a_point_interval(shift, n):
    rng = np.random.default_rng(n)
    base = rng.uniform(1, 100, n)
    rows = pd.DataFrame(
        [{"method": "ref", "dataset": "d", "series_id": i, "seed": 0, "smape": b} for i, b in
         enumerate(base)]
        + [{"method": "m", "dataset": "d", "series_id": i, "seed": s, "smape": b + shift}
           for i, b in enumerate(base) for s in (0, 1)])
    p = paired_differences(rows, reference="ref")
    r = p[p["metric"] == "smape"].iloc[0]
    assert r["n_series"] == n and r["n_seeds"] == 2
    assert abs(r["mean_diff"] - shift) < 1e-9
    assert abs(r["ci_low"] - shift) < 1e-9 and abs(r["ci_high"] - shift) < 1e-9


def test_seed_sweep_evaluates_identical_series_and_reports_paired_differences(tmp_path):
    out = run_cli("--multirun", "method=naive2,seasonal_naive", "seed=0,1,2", "num_samples=6",
                  "dataset=m3_quarterly", "output.progress=false", "output.print_summary=false",
                  f"hydra.sweep.dir={tmp_path}")
    assert out.returncode == 0, out.stderr[-2000:]
    series = {}
    for f in tmp_path.glob("*/results.jsonl"):
        rows = [json.loads(x) for x in f.read_text().splitlines()]
        series[(rows[0]["method"], rows[0]["seed"])] = [r["series_id"] for r in rows]
    assert len(series) == 6 and len({tuple(v) for v in series.values()}) == 1
    res = build_report(tmp_path, figures=False)
    p = res["paired"]
    row = p[(p["method"] == "seasonal_naive") & (p["metric"] == "smape")].iloc[0]
    assert row["reference"] == "naive2" and row["n_series"] == 6 and row["n_seeds"] == 3
    assert row["ci_low"] <= row["mean_diff"] <= row["ci_high"]
    md = res["report_md"].read_text()
    assert "Paired differences vs `naive2`" in md and "seasonal_naive" in md
    assert (tmp_path / "report_paired.csv").exists()
