"""The sweep's task wrapper (launcher/task.py): real jobs run through it return a JobResult and
leave the same job.json the CLI's sweeps write; a failing job is recorded and returned, not
raised; a complete job is skipped without running."""

import json
import sys
from pathlib import Path

import pandas as pd
import pytest

from specdifftree import compose
from specdifftree.launcher.task import JobResult, JobTask
from specdifftree.runner import RunHandle, run

QUIET = ["output.progress=false", "output.print_summary=false"]


def _job(job_dir: Path, calls: list):
    """A job function as the CLI's: run the experiment into the job dir, raise its failures."""
    def job_fn(cfg, handle: RunHandle):
        calls.append(handle)
        return run(cfg, job_dir, handle=handle)
    return job_fn


def _task(job_dir: Path, calls: list, overrides: list[str], num: int = 0) -> JobTask:
    return JobTask(_job(job_dir, calls), num=num, overrides=overrides, job_dir=job_dir, order=0)


def _job_json(job_dir: Path) -> dict:
    return json.loads((job_dir / "job.json").read_text())


def test_a_job_that_succeeds_returns_its_result_and_is_skipped_when_complete(tmp_path):
    overrides = ["method=naive2", "num_samples=2"]
    job_dir, calls = tmp_path / "0", []
    result = _task(job_dir, calls, overrides)(compose(overrides + QUIET))
    assert isinstance(result, JobResult) and result.status == "done" and not result.failed
    assert isinstance(result.value, pd.DataFrame) and len(result.value) == 2
    assert result.exception is None and result.error is None
    record = _job_json(job_dir)
    assert record == json.loads(json.dumps(result.record))
    assert record["overrides"] == overrides and record["job_num"] == 0 and record["order"] == 0
    assert record["n_expected"] == 2 and record["n_results"] == 2 and record["wall_time_s"] > 0
    assert record["model_cache_hit"] is None  # a classical method uses no model
    assert record["traceback"] is None and record["launcher"] == "sequential"
    assert len(calls) == 1 and calls[0].run_dir == job_dir

    rows = (job_dir / "results.jsonl").read_bytes()
    again = _task(job_dir, calls, overrides)(compose(overrides + QUIET))
    assert again.status == "skipped" and again.value is None
    assert len(calls) == 1  # the job function did not run
    assert _job_json(job_dir)["previous"]["status"] == "done"
    assert (job_dir / "results.jsonl").read_bytes() == rows


def test_a_job_that_fails_is_recorded_and_returned_with_its_model_cache_hit(tmp_path):
    from specdifftree import modelcache

    modelcache.release_unused()  # this process's cache starts empty
    common = ["model=tiny_random", "method=greedy", "max_new_tokens=4",
              "max_new_tokens_check=false", "num_samples=1"]
    ok_dir, bad_dir, calls = tmp_path / "0", tmp_path / "1", []
    first = _task(ok_dir, calls, common + ["seed=0"])(compose(common + ["seed=0"] + QUIET))
    assert first.status == "done" and first.record["model_cache_hit"] is False  # loaded it
    (bad_dir / "results.jsonl").mkdir(parents=True)  # the run cannot write its results
    result = _task(bad_dir, calls, common + ["seed=1"], num=1)(compose(common + ["seed=1"] + QUIET))
    assert result.failed and result.value is None
    assert "is a folder" in result.error and "\n" not in result.error
    assert result.record["model_cache_hit"] is True  # the model came from the cache, then it failed
    assert result.record["traceback"] is None  # a user error
    assert type(result.exception).__name__ == "RunDirError"
    assert _job_json(bad_dir) == json.loads(json.dumps(result.record))
    assert _job_json(bad_dir)["overrides"] == common + ["seed=1"]
    # a check after the model is got (here its KV cache cannot be quantized) keeps the hit too
    kv = common + ["backend.kv_bits=3"]
    result = _task(tmp_path / "2", calls, kv, num=2)(compose(kv + QUIET))
    assert result.failed and "cannot be quantized" in result.error
    assert result.record["model_cache_hit"] is True


@pytest.mark.parametrize("body,error", [
    (lambda: int("x"), "ValueError: invalid literal for int() with base 10: 'x'"),
    (lambda: sys.exit(3), "RuntimeError: job exited with code 3"),
])
def test_an_unexpected_failure_keeps_its_traceback(tmp_path, body, error):
    def job_fn(cfg, handle):
        return body()

    result = JobTask(job_fn, num=4, overrides=["seed=4"], job_dir=tmp_path)(
        compose(["method=naive2", "num_samples=1"] + QUIET))
    assert result.failed and result.error == error
    assert "Traceback" in _job_json(tmp_path)["traceback"]


def test_ctrl_c_is_recorded_then_goes_on(tmp_path):
    def job_fn(cfg, handle):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        JobTask(job_fn, num=0, overrides=["seed=0"], job_dir=tmp_path)(
            compose(["method=naive2", "num_samples=1"] + QUIET))
    assert _job_json(tmp_path)["status"] == "failed"


def test_a_dir_of_another_job_is_refused_without_running(tmp_path):
    calls = []
    cfg = compose(["method=naive2", "num_samples=1"] + QUIET)
    assert _task(tmp_path, calls, ["method=naive2", "seed=0"])(cfg).status == "done"
    rows = (tmp_path / "results.jsonl").read_bytes()
    result = _task(tmp_path, calls, ["method=naive2", "seed=1"])(cfg)
    assert result.failed and "holds results of another job" in result.error
    assert "new hydra.sweep.dir" in result.error and result.record["traceback"] is None
    assert len(calls) == 1 and (tmp_path / "results.jsonl").read_bytes() == rows


def test_a_job_whose_config_does_not_compose_reaches_the_failure_list(tmp_path, capsys):
    """The launcher records a job that never ran (its config did not compose) with the same
    wrapper, and hands it to the callbacks as Hydra does for the jobs it runs."""
    from hydra._internal.callbacks import Callbacks
    from hydra.types import HydraContext

    from specdifftree.config import compose as compose_with_hydra
    from specdifftree.errors import ConfigError
    from specdifftree.launcher.callback import SweepExitCode
    from specdifftree.launcher.sequential import PlannedJob, SequentialSweep

    config = compose_with_hydra([f"hydra.sweep.dir={tmp_path}"], return_hydra_config=True)
    callbacks = Callbacks(config)
    (exit_code,) = [c for c in callbacks.callbacks if isinstance(c, SweepExitCode)]
    sweep = SequentialSweep(hydra_context=HydraContext(config_loader=None, callbacks=callbacks),
                            task_function=None, config=config)
    result, ret = sweep.run_one(PlannedJob(num=7, overrides=["seed=x"],
                                           error=ConfigError("seed=x: not an integer")), 0)
    assert result.failed and result.error == "seed=x: not an integer"
    assert ret.return_value is result
    assert [f["job_num"] for f in exit_code.failures] == [7]
    with pytest.raises(SystemExit) as stop:
        callbacks.on_multirun_end(config=config)
    assert stop.value.code == 1
    assert "#7 [seed=x]: seed=x: not an integer" in capsys.readouterr().err
