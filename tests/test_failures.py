"""A failing sample becomes a row with `error`; the other samples are untouched."""

import json

import numpy as np
import pytest

from specdifftree import compose
from specdifftree.runner import execute, prepare
from specdifftree.tasks.series import Series


def _three(exp):
    base = exp.samples[:3]
    assert len(base) == 3
    return base


def _run(exp, tmp_path, name):
    df = execute(exp, tmp_path / name)
    rows = [json.loads(x) for x in (tmp_path / name / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 3 == len(df)
    return rows


def _reference(tmp_path):
    exp = prepare(compose(["model=tiny_random", "method=greedy", "num_samples=3", "output.progress=false"]))
    return exp, _run(exp, tmp_path, "ref")


def _assert_others_untouched(rows, ref, bad_index):
    for i, (r, q) in enumerate(zip(rows, ref)):
        if i == bad_index:
            continue
        assert r["error"] is None
        for key in ("series_id", "text", "forecast", "smape", "mase", "tokens_processed", "valid"):
            assert r[key] == q[key], key


def test_backend_context_overflow_is_recorded(tmp_path):
    exp, ref = _reference(tmp_path)
    samples = _three(exp)
    s = samples[1]
    long_x = np.tile(np.asarray(s.x, dtype=float), 2000 // len(s.x) + 2)  # > 8192 prompt tokens
    exp.samples = [samples[0], Series(s.id, long_x, s.y, s.horizon, s.period), samples[2]]
    exp.task.context_length = None
    rows = _run(exp, tmp_path, "overflow")
    bad = rows[1]
    assert bad["error"].startswith("BackendError") and "context" in bad["error"]
    assert bad["valid"] is False and bad["smape"] is not None and bad["mase"] is not None
    # scored as an invalid forecast: the last history value repeated
    assert bad["forecast"] == [pytest.approx(long_x[-1])] * s.horizon
    _assert_others_untouched(rows, ref, 1)


def test_parse_failure_is_recorded(tmp_path, monkeypatch):
    exp, ref = _reference(tmp_path)
    bad_id = ref[2]["series_id"]
    real_parse = exp.task.parse

    def parse(text, s, *args):
        if s.id == bad_id and text:
            raise ValueError("garbled beyond repair")
        return real_parse(text, s, *args)

    monkeypatch.setattr(exp.task, "parse", parse)
    rows = _run(exp, tmp_path, "parse")
    assert rows[2]["error"] == "ValueError: garbled beyond repair"
    assert rows[2]["valid"] is False
    _assert_others_untouched(rows, ref, 2)


def test_reward_failure_is_counted_on_its_sample_only(tmp_path, monkeypatch):
    """A reward that raises is absorbed (failure_reward, counted, reason recorded); the run and
    the other samples go on untouched."""
    exp, ref = _reference(tmp_path)
    bad_id = ref[0]["series_id"]
    inner = exp.reward.fn

    def flaky(forecasts, texts, valid, context):
        if context.sample.id == bad_id:
            raise ZeroDivisionError("reward blew up")
        return inner(forecasts, texts, valid, context)

    monkeypatch.setattr(exp.reward, "fn", flaky)
    rows = _run(exp, tmp_path, "reward")
    bad = rows[0]
    assert bad["reward_failures"] >= 1 and bad["reward_error"] == "ZeroDivisionError: reward blew up"
    assert bad["reward"] == exp.reward.failure_reward and bad["error"] is None
    for r, q in zip(rows[1:], ref[1:]):
        assert r["reward_failures"] == 0 and r["reward_error"] is None
        assert r["reward"] == q["reward"] and r["text"] == q["text"]


def test_user_config_error_stops_the_run_with_its_message(tmp_path):
    """An oracle reward on a task without truth is a config error: one message, not 3 error rows."""
    from specdifftree.errors import SpecDiffTreeError

    exp = prepare(compose(["model=tiny_random", "method=greedy", "num_samples=3",
                           "reward=oracle_smape", "output.progress=false"]))
    real_ctx = exp.task.reward_context

    def no_truth(s):
        ctx = real_ctx(s)
        ctx.truth = None
        return ctx

    exp.task.reward_context = no_truth
    with pytest.raises(SpecDiffTreeError):
        execute(exp, tmp_path / "cfgerr")
