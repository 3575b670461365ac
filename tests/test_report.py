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
                  "num_samples=2", "max_new_tokens=4", "max_new_tokens_check=false",
                  "output.progress=false",
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


# ------------------------------------------------------------------ sample sets, anytime, formats

def _samples(path, method, sid, rows):
    """samples.jsonl lines of one series: rows = [(tokens, reward, forecast, valid)]."""
    with (path / "samples.jsonl").open("a") as fh:
        for i, (tok, rew, fc, ok) in enumerate(rows):
            fh.write(json.dumps({"method": method, "dataset": "d1", "seed": 0, "series_id": sid,
                                 "sample_index": 0, "rollout": i, "tokens": tok, "reward": rew,
                                 "forecast": fc, "valid": ok, "text": "", "answer": False}) + "\n")


def test_anytime_curves_follow_the_token_budget_rule(tmp_path):
    from specdifftree.anytime import curves

    row = _row("bon", 0, "s1", 10.0, 900)
    row.update(truth=[10.0, 10.0, 10.0], reward_name="oracle_smape")
    _write_run(tmp_path, [row])
    # rollouts finish at 300, 500, 700 and 1100 tokens; rewards 1, 3, 2, 5
    _samples(tmp_path, "bon", "s1", [(300, 1.0, [8, 8, 8], True), (500, 3.0, [12, 12, 12], True),
                                     (700, 2.0, [9, 9, 9], True), (1100, 5.0, [10, 10, 10], False)])
    res = build_report(tmp_path)
    df = pd.read_csv(tmp_path / "anytime.csv").fillna({"variant": ""})
    # powers of two from the first row's tokens to the last row's: 2048 would need more rows
    assert list(df["tokens"]) == [512.0, 1024.0]
    # budget 512: a search stops after the first rollout finished at or beyond it -> rows 1..3
    first = df.iloc[0]
    assert first["best_reward_mean"] == 3.0 and first["n_series"] == 1
    # the median of the valid forecasts so far is 9 at every step: sMAPE 200·1/19
    assert first["smape_median_mean"] == pytest.approx(200 / 19)
    assert first["smape_best_mean"] == pytest.approx(200 * 2 / 22)  # best so far: the 12s
    # the mean rule: step-wise mean of the valid forecasts so far, (8 + 12 + 9) / 3
    assert first["smape_mean_mean"] == pytest.approx(200 * (10 - 29 / 3) / (10 + 29 / 3))
    # budget 1024: all four rows; the best (reward 5) is the exact one, the invalid row stays
    # out of the median
    second = df.iloc[1]
    assert second["best_reward_mean"] == 5.0 and second["smape_best_mean"] == 0.0
    assert second["smape_median_mean"] == pytest.approx(200 / 19)
    assert second["smape_mean_mean"] == pytest.approx(first["smape_mean_mean"])
    assert not math.isfinite(first["best_reward_lo"])  # one series: no band
    md = (tmp_path / "report.md").read_text()
    assert "## Anytime" in md and "best reward (oracle_smape)" in md
    assert res["figures"] and (tmp_path / "figures" / "anytime.pdf").read_bytes()[:4] == b"%PDF"
    curves_again = curves(res["collected"].samples, res["collected"].rows)
    pd.testing.assert_frame_equal(curves_again.reset_index(drop=True), df, check_dtype=False)


def test_anytime_curves_per_answer_rule_sort_budgets_numerically(tmp_path):
    """Two runs of one method at token budgets 16000 and 8000 (the larger in the dir that sorts
    first): anytime.csv, the report table and the figure list 8000 first, with one curve per
    answer rule (best, median, mean) and the CRPS."""
    from specdifftree.anytime import RULE_QUANTITY

    for i, budget in enumerate((16000, 8000)):
        d = tmp_path / str(i)
        _job(d, i, ["method=bon", f"budget.tokens={budget}", "seed=0"])
        row = _row("bon", 0, "s1", 10.0, 900)
        row.update(truth=[10.0, 10.0, 10.0], reward_name="oracle_smape")
        _write_run(d, [row])
        _samples(d, "bon", "s1", [(300, 1.0, [8, 8, 8], True), (500, 3.0, [12, 12, 12], True),
                                  (1100, 2.0, [13, 13, 13], True)])
    res = build_report(tmp_path)
    df = pd.read_csv(tmp_path / "anytime.csv")
    assert list(df["variant"]) == ["budget.tokens=8000"] * 2 + ["budget.tokens=16000"] * 2
    assert list(df["tokens"]) == [512.0, 1024.0] * 2
    for q in RULE_QUANTITY.values():
        assert np.isfinite(df[f"{q}_mean"]).all()
    at1024 = df.iloc[1]  # rows 8, 12, 13: best = 12, median = 12, mean = 11
    assert at1024["smape_best_mean"] == pytest.approx(200 * 2 / 22)
    assert at1024["smape_median_mean"] == pytest.approx(200 * 2 / 22)
    assert at1024["smape_mean_mean"] == pytest.approx(200 * 1 / 21)
    md = (tmp_path / "report.md").read_text().split("## Anytime", 1)[1]
    assert md.index("budget.tokens=8000") < md.index("budget.tokens=16000")
    assert "sMAPE best (%)" in md and "sMAPE median (%)" in md and "sMAPE mean (%)" in md
    fig_titles = [ax.get_title() for ax in __import__("specdifftree.report", fromlist=["x"])
                  .fig_anytime(res["collected"].anytime, "reward").axes]
    assert sum("answer rule" in t for t in fig_titles) == 3


def test_swept_values_sort_numerically_and_tables_export(tmp_path):
    for i, budget in enumerate((1600, 800, 12800)):
        d = tmp_path / str(i)
        _job(d, i, ["method=m", f"budget.tokens={budget}", "seed=0"])
        rows = [_row("m", 0, "s1", 10.0, budget), _row("m", 0, "s2", 12.0, budget)]
        rows[1].update(valid=False, error="ValueError: bad" if budget == 800 else None)
        _write_run(d, rows)
    res = build_report(tmp_path)
    assert list(res["aggregate"]["variant"]) == ["budget.tokens=800", "budget.tokens=1600",
                                                 "budget.tokens=12800"]
    tex = (tmp_path / "report.tex").read_text()
    assert tex.count("\\begin{table}") == tex.count("\\end{table}") >= 2
    assert "budget.tokens=800" in tex and "12.00 $\\pm$" not in tex  # one seed: no sd
    assert "10.0" not in tex or "\\%" in tex  # percent signs escaped
    md = (tmp_path / "report.md").read_text()
    flags = md.split("## Flags", 1)[1].split("##", 1)[0]
    assert "m / d1 / budget.tokens=800**: 1 of 2 samples failed; valid outputs 50%" in flags
    assert "budget.tokens=1600**: valid outputs 50%" in flags
    import xml.etree.ElementTree as ET

    for name in ("reward_vs_tokens", "accuracy", "forecasts"):
        assert (tmp_path / "figures" / f"{name}.pdf").read_bytes()[:4] == b"%PDF"
        assert ET.parse(tmp_path / "figures" / f"{name}.svg").getroot().tag.endswith("svg")


def test_no_single_point_curves_and_the_reward_is_named(tmp_path):
    from specdifftree.report import fig_anytime, fig_reward_vs_tokens

    rows = [dict(_row(m, 0, "s1", 10.0, t), reward_name="spectral") for m, t in (("a", 100),
                                                                               ("b", 400))]
    for i, r in enumerate(rows):
        _write_run(tmp_path / str(i), [r])
    res = build_report(tmp_path, figures=False)
    col, agg = res["collected"], res["aggregate"]
    fig = fig_reward_vs_tokens(col.summary, agg, "reward (spectral)")
    ax = fig.axes[0]
    assert "spectral" in ax.get_ylabel() and "tokens" in ax.get_xlabel()
    assert all(len(line.get_xdata()) <= 1 or line.get_linestyle() == "None"
               for line in ax.get_lines())
    one_budget = pd.DataFrame([{"method": "a", "variant": "", "dataset": "d1", "tokens": 512.0,
                                "n_series": 1, **{f"{q}_{s}": 1.0 for q in
                                                  ("best_reward", "smape_best", "smape_median",
                                                   "crps") for s in ("mean", "lo", "hi")}}])
    fig = fig_anytime(one_budget, "reward (spectral)")
    for ax in fig.axes:
        assert all(len(line.get_xdata()) <= 1 or line.get_linestyle() == "None"
                   for line in ax.get_lines()), ax.get_title()
        assert ax.get_xscale() == "log"
    assert "spectral" in fig.axes[0].get_ylabel()


def test_sections_can_be_added_by_other_modules(tmp_path):
    from specdifftree import report

    _write_run(tmp_path, [_row("a", 0, "s1", 10.0, 100)])

    def extra(col, agg):
        return f"## Extra\n\n{len(col.rows)} rows"

    report.register_section(extra)
    try:
        build_report(tmp_path, figures=False)
    finally:
        report.SECTIONS.remove(extra)
    assert "## Extra\n\n1 rows" in (tmp_path / "report.md").read_text()
