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

    def parse(text, s):
        if s.id == bad_id and text:
            raise ValueError("garbled beyond repair")
        return real_parse(text, s)

    monkeypatch.setattr(exp.task, "parse", parse)
    rows = _run(exp, tmp_path, "parse")
    assert rows[2]["error"] == "ValueError: garbled beyond repair"
    assert rows[2]["valid"] is False
    _assert_others_untouched(rows, ref, 2)
