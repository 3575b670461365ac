"""Answer rules over sample sets and samples.jsonl, on the shipped tiny_tslm model (real runs)."""

import json
import signal

import numpy as np
import pytest

import specdifftree as sdt
from specdifftree.errors import ConfigError
from specdifftree.rollouts import SAMPLES_FILE, SamplesWriter, read_samples
from specdifftree.runner import prepare

BASE = ["model=tiny_tslm", "dataset=m3_yearly", "dataset.context_length=24", "num_samples=3",
        "output.progress=false"]


def run(tmp_path_factory, name, *overrides):
    d = tmp_path_factory.mktemp(name)
    df = sdt.run(sdt.compose([*BASE, *overrides]), run_dir=d)
    return df, read_samples(d), d


@pytest.fixture(scope="module")
def median_run(tmp_path_factory):
    return run(tmp_path_factory, "median", "method=best_of_n", "method.answer=median",
               "budget.rollouts=6")


@pytest.fixture(scope="module", params=["best_of_n", "dts", "sir"])
def best_runs(request, tmp_path_factory):
    # the same search with two token budgets: the smaller run must be a prefix of the larger
    short = [f"method={request.param}", "dataset.context_length=16", "num_samples=2",
             "budget.rollouts=1000000"]  # short prompts; only the token budget stops the search
    return (run(tmp_path_factory, "small", *short, "budget.tokens=300")[1:],
            run(tmp_path_factory, "large", *short, "budget.tokens=520")[1:])


def by_series(rows):
    out = {}
    for r in rows:
        out.setdefault(r["series_id"], []).append(r)
    return out


def test_median_answer_is_the_stepwise_median_of_the_parsed_samples(median_run):
    df, samples, _ = median_run
    groups = by_series(samples)
    assert set(groups) == set(df.series_id)
    for _, row in df.iterrows():
        rows = groups[row.series_id]
        assert len(rows) == 6 == row.rollouts  # every rollout recorded, none twice
        assert all(r["in_samples"] >= 1 for r in rows) and not any(r["answer"] for r in rows)
        fc = np.array([r["forecast"] for r in rows])
        ok = np.array([r["valid"] for r in rows])
        want = np.median(fc[ok] if ok.any() else fc, axis=0)
        np.testing.assert_allclose(row.forecast, want, rtol=1e-12)
        assert row.answer == "median" and row.samples_valid == ok.sum()
        assert row.n_forecast_samples == max(1, ok.sum())
        # tokens when each rollout finished: increasing, the last equals the sample's total
        toks = [r["tokens"] for r in rows]
        assert toks == sorted(toks) and toks[-1] == row.tokens_processed


def test_report_reads_past_an_unusable_samples_line_and_names_it(median_run, tmp_path):
    import shutil

    from specdifftree.report import build_report

    _, samples, d = median_run
    run = tmp_path / "run"
    shutil.copytree(d, run)
    lines = (run / SAMPLES_FILE).read_bytes().splitlines(keepends=True)
    (run / SAMPLES_FILE).write_bytes(b"".join(lines[:3]) + b"{torn by hand\n" + b"".join(lines[3:]))
    res = build_report(run, tmp_path / "rep", figures=False)
    assert len(res["collected"].samples) == len(samples)  # every line after it still read
    text = res["report_md"].read_text()
    assert "Unreadable lines" in text and "samples.jsonl" in text and "| 4 | not JSON |" in text


def test_recorded_logprobs_are_the_models(median_run):
    """Σ logprob / Σ tokens over the rollouts is the Session's own plain-sampling mean."""
    df, samples, _ = median_run
    groups = by_series(samples)
    for _, row in df.iterrows():
        rows = groups[row.series_id]
        lp = sum(r["logprob"] for r in rows) / sum(r["generated_tokens"] for r in rows)
        assert lp == pytest.approx(row.plain_mean_logprob, rel=1e-6)


def test_distribution_scores_come_from_the_sample_set(median_run):
    from specdifftree.metrics.probabilistic import crps, crps_steps

    df, samples, _ = median_run
    groups = by_series(samples)
    for _, row in df.iterrows():
        rows = groups[row.series_id]
        fc = np.array([r["forecast"] for r in rows if r["valid"]] or
                      [r["forecast"] for r in rows])
        assert row.crps == pytest.approx(crps(fc, row.truth))
        assert row.crps_mase == pytest.approx(crps_steps(fc, row.truth).mean() / row.mase_scale)
        if len(fc) > 1:
            q = np.array(row.quantiles)
            assert q.shape == (len(row.quantile_levels), len(row.truth))
            assert 0 <= row.coverage <= 1 and row.msis >= 0
        else:  # one parsed sample: a point forecast, no interval
            assert row.msis is None or np.isnan(row.msis)
    summary = __import__("pandas").read_csv(median_run[2] / "summary.csv")
    assert summary.crps[0] == pytest.approx(df.crps.mean())


def test_a_smaller_budget_run_is_a_prefix_of_a_larger_one(best_runs):
    """What makes reward-vs-tokens from one run valid: the search at budget T is the first
    rollouts of the search at a larger budget (same seed), so samples.jsonl answers every T."""
    (small, small_dir), (large, _) = best_runs
    s, g = by_series(small), by_series(large)
    assert set(s) == set(g)
    for sid, rows in s.items():
        big = g[sid]
        assert len(big) > len(rows) >= 2
        keys = ("text", "reward", "tokens", "logprob")
        assert [tuple(r[k] for k in keys) for r in rows] == \
            [tuple(r[k] for k in keys) for r in big[:len(rows)]]
        # the token rule: a rollout starts while tokens are left, so the small run stops at the
        # first rollout that finished at or beyond its budget
        assert rows[-1]["tokens"] >= 300 and all(r["tokens"] < 300 for r in rows[:-1])
    results = [json.loads(x) for x in (small_dir / "results.jsonl").read_text().splitlines()]
    for res in results:
        rows = s[res["series_id"]]
        best = max(rows, key=lambda r: r["reward"])
        assert res["best_reward"] == pytest.approx(best["reward"])
        assert [r["answer"] for r in rows].count(True) >= 1
        assert res["text"] == next(r["text"] for r in rows if r["answer"])
        assert res["reward"] == next(r["reward"] for r in rows if r["answer"])


def test_dts_median_over_its_draws(tmp_path_factory):
    df, samples, _ = run(tmp_path_factory, "dts", "method=dts", "method.answer=median",
                         "budget.rollouts=5", "method.num_draws=6", "num_samples=2")
    for _, row in df.iterrows():
        rows = [r for r in samples if r["series_id"] == row.series_id]
        assert len(rows) == row.rollouts
        # the draws are terminals the search scored; each line counts how often it was drawn
        unique = list({r["text"]: r for r in rows}.values())
        assert sum(r["in_samples"] for r in unique) == 6
        drawn = [r for r in unique for _ in range(r["in_samples"])]
        fc = np.array([r["forecast"] for r in drawn])
        ok = np.array([r["valid"] for r in drawn])
        np.testing.assert_allclose(row.forecast, np.median(fc[ok] if ok.any() else fc, axis=0))


@pytest.mark.parametrize("method,answer,needle", [
    ("greedy", "median", "greedy returns a single continuation"),
    ("best_of_n", "mode", "must be one of best, sample, median, mean"),
    ("naive2", "median", "naive2 forecasts one point without a model"),
])
def test_answer_rule_errors_name_the_fix(method, answer, needle):
    with pytest.raises(ConfigError, match=needle):
        prepare(sdt.compose([*BASE, f"method={method}", f"+method.answer={answer}"]
                            if method in ("greedy", "naive2") else
                            [*BASE, f"method={method}", f"method.answer={answer}"]))


def test_resume_drops_lines_of_series_without_a_results_row(tmp_path):
    row = {"method": "m", "dataset": "d", "seed": 0, "series_id": "a", "rollout": 0}
    orphan = dict(row, series_id="b")
    path = tmp_path / SAMPLES_FILE
    path.write_text(json.dumps(row) + "\n" + json.dumps(orphan) + "\n" + '{"method": "m", "da')
    w = SamplesWriter(tmp_path, done={("m", "d", 0, "a")})
    w.write([dict(row, series_id="c")])
    w.close()
    assert [r["series_id"] for r in read_samples(tmp_path)] == ["a", "c"]


def test_unusable_samples_lines_are_moved_aside_and_nothing_after_them_is_lost(tmp_path):
    row = {"method": "m", "dataset": "d", "seed": 0, "series_id": "a", "rollout": 0}
    lines = [json.dumps(row), "{garbage", "[1, 2]", json.dumps(dict(row, rollout=1)),
             json.dumps(dict(row, rollout=1)), json.dumps(dict(row, series_id="b"))]
    (tmp_path / SAMPLES_FILE).write_text("\n".join(lines) + "\n")
    # the reader reads past bad lines (it used to stop at the first)
    assert [(r["series_id"], r["rollout"]) for r in read_samples(tmp_path)] == [
        ("a", 0), ("a", 1), ("b", 0)]
    w = SamplesWriter(tmp_path, done={("m", "d", 0, "a")})  # b has no results row
    w.close()
    assert [(r["series_id"], r["rollout"]) for r in read_samples(tmp_path)] == [("a", 0), ("a", 1)]
    side = [json.loads(x) for x in (tmp_path / "samples.rejected.jsonl").read_text().splitlines()]
    assert [(x["line"], x["reason"].split(" ")[0]) for x in side] == [
        (2, "not"), (3, "not"), (5, "duplicate")]
    assert w.rejected == 3 and w.dropped == 1


def test_caption_runs_record_their_continuations_without_forecast_scores(tmp_path):
    from test_captions import write_fixture

    write_fixture(tmp_path / "caps")
    df = sdt.run(sdt.compose(["model=tiny_random", "dataset=m4_captions",
                              f"dataset.root={tmp_path / 'caps'}", "dataset.max_new_tokens=6",
                              "method=best_of_n", "budget.rollouts=3", "num_samples=2",
                              "reward=format", "output.progress=false"]), run_dir=tmp_path / "run")
    assert df["error"].isna().all(), df["error"].tolist()
    assert "crps" not in df.columns and "caption_rougeL_f1" in df.columns
    lines = read_samples(tmp_path / "run")
    assert len(lines) == 6 and all(len(r["text"]) >= 0 and r["logprob"] is not None
                                   for r in lines)


# ------------------------------------------------- samples.jsonl under kill -9 (real processes)

KILL_ARGS = ["model=tiny_tslm", "dataset=m3_yearly", "dataset.context_length=24", "num_samples=3",
             "method=best_of_n", "budget.rollouts=2", "output.progress=false",
             "output.print_summary=false"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    d = tmp_path_factory.mktemp("uninterrupted")
    df = sdt.run(sdt.compose(KILL_ARGS), run_dir=d)
    return df, (d / SAMPLES_FILE).read_bytes()


def _no_time(rows):
    return [{k: v for k, v in r.items() if k not in ("time_s", "reward_time_s", "model_time_s")}
            for r in rows]


def _resume_and_compare(run, uninterrupted):
    ref_df, ref_samples = uninterrupted
    df = sdt.run(sdt.compose(KILL_ARGS), run_dir=run)  # the re-run
    assert _no_time(df.to_dict("records")) == _no_time(ref_df.to_dict("records"))
    # every series' lines once, in order, none torn, none of a stale or killed attempt
    assert (run / SAMPLES_FILE).read_bytes() == ref_samples
    lines = read_samples(run)
    assert len(lines) == 6 and len({(r["series_id"], r["rollout"]) for r in lines}) == 6


@pytest.mark.parametrize("crash_at", ["samples-torn:2", "samples:2", "row:2",
                                      "samples:2+rewrite-mid@samples.jsonl:1"])
def test_kill_9_while_writing_samples_then_rerun_equals_an_uninterrupted_run(
        tmp_path, uninterrupted, crash_at):
    """The CLI is killed (SIGKILL) half-way through writing the second series' samples.jsonl
    lines, after they are on disk but before that series' results row, or after it; and once
    more while the resume rewrites samples.jsonl without the killed series' lines."""
    from conftest import run_cli

    run = tmp_path / "run"
    first, *then = crash_at.split("+")
    killed = run_cli(*KILL_ARGS, f"hydra.run.dir={run}", env={"SPECDIFFTREE_CRASH_AT": first})
    assert killed.returncode == -signal.SIGKILL
    data = (run / SAMPLES_FILE).read_bytes()
    ref = uninterrupted[1]
    if first == "samples-torn:2":  # the file ends in a torn line of the killed series
        assert not data.endswith(b"\n") and ref.startswith(data[: data.rindex(b"\n") + 1])
    elif first == "samples:2":  # lines of a series without results row: dropped on resume
        assert ref.startswith(data) and len(data.splitlines()) == 4
    for point in then:  # the resume is killed in its rewrite: the old file stays whole
        again = run_cli(*KILL_ARGS, f"hydra.run.dir={run}", env={"SPECDIFFTREE_CRASH_AT": point})
        assert again.returncode == -signal.SIGKILL
        assert (run / SAMPLES_FILE).read_bytes() == data
        assert [x.name for x in run.iterdir() if ".tmp-" in x.name] == [
            f".{SAMPLES_FILE}.tmp-{json.loads((run / 'run.json').read_text())['runs'][-1]['pid']}"]
    _resume_and_compare(run, uninterrupted)
    assert not [x.name for x in run.iterdir() if ".tmp-" in x.name]
    rejected = run / "samples.rejected.jsonl"
    if crash_at == "samples-torn:2":
        assert "torn" in json.loads(rejected.read_text())["reason"]
    else:
        assert not rejected.exists()


def test_kill_9_from_outside_during_a_run_then_rerun_equals_an_uninterrupted_run(
        tmp_path, uninterrupted):
    """A real SIGKILL sent by another process at whatever point the run has reached once the
    first series' lines are on disk."""
    import os
    import subprocess
    import sys
    import time

    from conftest import REPO

    run = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    p = subprocess.Popen([sys.executable, "-m", "specdifftree", *KILL_ARGS,
                          f"hydra.run.dir={run}"], cwd=REPO, env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and p.poll() is None and not (
            (run / SAMPLES_FILE).exists() and (run / SAMPLES_FILE).stat().st_size > 0):
        time.sleep(0.01)
    p.send_signal(signal.SIGKILL)
    assert p.wait(60) == -signal.SIGKILL
    _resume_and_compare(run, uninterrupted)
