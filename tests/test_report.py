"""The report reads the results contract (results.jsonl, summary.csv, job.json) of a run dir."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import REPO, run_cli
from specdifftree.report import aggregate, build_report, fig_accuracy, fig_forecasts, \
    fig_reward_vs_tokens, variants
from specdifftree.results import ResultsWriter


def _row(method, seed, sid, smape, tokens, reward=0.5, h=3):
    return {"method": method, "dataset": "d1", "seed": seed, "series_id": sid, "horizon": h,
            "smape": smape, "mase": smape / 10, "smape_naive2": 20.0, "mase_naive2": 2.0,
            "valid": True, "reward": reward, "tokens_processed": tokens, "model_calls": tokens // 10,
            "time_s": 0.1, "forecast": [1.0, 2.0, 3.0], "truth": [1.5, 2.5, 3.5],
            "history_tail": [0.0, 0.5, 1.0]}


def _job(path, num, overrides, status="done", error=None):
    path.mkdir(parents=True, exist_ok=True)
    (path / "job.json").write_text(json.dumps({"job_num": num, "overrides": overrides,
                                               "status": status, "error": error,
                                               "wall_time_s": 1.5, "model_cache_hit": None}))


def _write_run(path, rows):
    w = ResultsWriter(path)
    for r in rows:
        w.write(r)
    w.write_summary()
    w.close()


def test_mean_and_sd_over_seeds_per_method_and_variant(tmp_path):
    num = 0
    for budget in (100, 200):
        for seed, (a, b) in enumerate([(5.0, 15.0), (15.0, 25.0), (25.0, 35.0)]):
            d = tmp_path / str(num)
            _job(d, num, ["method=m", f"budget.tokens={budget}", f"seed={seed}", "num_samples=2"])
            _write_run(d, [_row("m", seed, "s1", a, budget), _row("m", seed, "s2", b, budget)])
            num += 1
    _job(tmp_path / str(num), num, ["method=m", "budget.tokens=300", "seed=0", "num_samples=2"],
         status="failed", error="IsADirectoryError: boom")
    res = build_report(tmp_path)
    df = pd.read_csv(tmp_path / "report.csv").fillna({"variant": ""})
    assert list(df["variant"]) == ["budget.tokens=100", "budget.tokens=200"]
    row = df.iloc[0]
    # per-seed sMAPE means are 10, 20, 30 -> mean 20, sample sd 10
    assert row["n_seeds"] == 3 and row["smape_mean"] == pytest.approx(20.0)
    assert row["smape_sd"] == pytest.approx(10.0)
    assert row["tokens_processed_mean"] == 100 and row["tokens_processed_sd"] == 0
    assert {"time_s_mean", "model_calls_mean", "owa_mean", "reward_sd"} <= set(df.columns)
    md = (tmp_path / "report.md").read_text()
    assert "20.00 ± 10.00" in md and "budget.tokens=200" in md
    assert "6 done, 0 skipped, 1 failed" in md and "IsADirectoryError: boom" in md
    assert "num_samples=2" not in md.split("## Results")[1]  # common to every job: not a variant
    assert [p.name for p in res["figures"]] == ["reward_vs_tokens.png", "accuracy.png",
                                                "forecasts.png"]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=6))
def test_aggregate_matches_numpy(values):
    summary = pd.DataFrame({"method": "m", "dataset": "d", "variant": "", "seed": range(len(values)),
                            "smape": values})
    agg = aggregate(summary).iloc[0]
    assert agg["smape_mean"] == pytest.approx(np.mean(values), rel=1e-9, abs=1e-6)
    if len(values) > 1:
        assert agg["smape_sd"] == pytest.approx(np.std(values, ddof=1), rel=1e-9, abs=1e-6)
    else:
        assert math.isnan(agg["smape_sd"])


def test_variants_keep_only_overrides_that_differ():
    v = variants({"a": ["method=x", "seed=0", "k=1", "n=5", "hydra.verbose=true"],
                  "b": ["method=y", "seed=1", "k=2", "n=5"],
                  "c": ["+sweep=p", "method=x", "seed=2", "k=1", "n=5"]})
    assert v == {"a": "k=1", "b": "k=2", "c": "+sweep=p k=1"}
    assert variants({"only": ["method=x", "n=5"]}) == {"only": ""}


def test_figures_are_labelled(tmp_path):
    rows = [_row(m, s, sid, 10.0 + s, t) for m, t in (("a", 100), ("b", 400))
            for s in (0, 1) for sid in ("s1", "s2")]
    for i, (m, s) in enumerate([(m, s) for m in "ab" for s in (0, 1)]):
        _write_run(tmp_path / str(i), [r for r in rows if r["method"] == m and r["seed"] == s])
    res = build_report(tmp_path, figures=False)
    col, agg = res["collected"], res["aggregate"]
    for fig in (fig_reward_vs_tokens(col.summary, agg), fig_accuracy(agg), fig_forecasts(col.rows)):
        assert fig._suptitle is not None and fig._suptitle.get_text()
        for ax in fig.axes:
            if not ax.get_visible():
                continue
            assert ax.get_ylabel() and ax.get_title()
            ticks = {t.get_text() for t in ax.get_xticklabels()}
            # methods are told apart by a legend or, in the bar charts, by the x tick labels
            assert ax.get_xlabel() and ax.get_legend() is not None or {"a", "b"} <= ticks, ax
    forecasts = fig_forecasts(col.rows)
    labels = {t.get_text() for t in forecasts.axes[0].get_legend().get_texts()}
    assert {"truth", "history", "a", "b"} <= labels
    assert "tokens" in fig_reward_vs_tokens(col.summary, agg).axes[0].get_xlabel()


def test_report_cli_on_a_real_sweep(tmp_path):
    sweep = tmp_path / "sweep"
    out = run_cli("--multirun", "model=tiny_random", "method=greedy,naive2", "seed=0,1",
                  "num_samples=2", "max_new_tokens=4", "output.progress=false",
                  f"hydra.sweep.dir={sweep}")
    assert out.returncode == 0, out.stderr[-2000:]
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    rep = subprocess.run([sys.executable, "-m", "specdifftree.report", str(sweep)], env=env,
                         capture_output=True, text=True, timeout=120)
    assert rep.returncode == 0, rep.stderr
    md = (sweep / "report.md").read_text()
    assert "4 done" in md and "| greedy | m3_monthly | 2 |" in md and "| naive2 |" in md
    df = pd.read_csv(sweep / "report.csv")
    assert set(df["method"]) == {"greedy", "naive2"} and (df["n_seeds"] == 2).all()
    greedy = df[df["method"] == "greedy"].iloc[0]
    assert greedy["tokens_processed_mean"] > 0 and greedy["time_s_mean"] > 0
    import matplotlib.image as mpimg

    for name in ("reward_vs_tokens", "accuracy", "forecasts"):
        img = mpimg.imread(sweep / "figures" / f"{name}.png")
        assert img.shape[0] >= 300 and img.shape[1] >= 500, name
        assert img[..., :3].std() > 0.05, name  # not blank


def test_report_errors_are_one_line(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for target, needle in ((tmp_path / "missing", "is not a folder"), (tmp_path, "no results.jsonl")):
        rep = subprocess.run([sys.executable, "-m", "specdifftree.report", str(target)], env=env,
                             capture_output=True, text=True, timeout=60)
        assert rep.returncode == 2
        assert rep.stderr.strip().count("\n") == 0 and needle in rep.stderr, rep.stderr
