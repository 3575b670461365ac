"""Multirun sweeps through the real CLI: the sequential launcher, resume, failures, submitit."""

import json
import re
from pathlib import Path

import pytest

from conftest import REPO, run_cli


def _jobs(sweep: Path) -> dict[int, dict]:
    return {int(p.parent.name): json.loads(p.read_text()) for p in sweep.glob("*/job.json")}


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_sweep_shares_model_isolates_failure_and_resumes(tmp_path):
    sweep = tmp_path / "sweep"
    # 2 methods × 2 seeds, all on the tiny model
    args = ("--multirun", "model=tiny_random", "method=greedy,best_of_n", "max_new_tokens=4",
            "max_new_tokens_check=false", "seed=0,1", "num_samples=2", f"hydra.sweep.dir={sweep}")
    # force a failure in job 3: its results file is a folder
    (sweep / "3" / "results.jsonl").mkdir(parents=True)
    out = run_cli(*args)
    assert out.returncode == 1, out.stderr[-3000:]
    jobs = _jobs(sweep)
    assert sorted(jobs) == [0, 1, 2, 3]
    assert [jobs[i]["status"] for i in range(4)] == ["done", "done", "done", "failed"]
    # loaded once by the first job; the other three (the failing one included) hit the cache
    assert [jobs[i]["model_cache_hit"] for i in range(4)] == [False, True, True, True]
    assert out.stderr.count("loaded model tiny_random") + out.stdout.count("loaded model tiny_random") == 1
    assert "is a folder" in jobs[3]["error"] and jobs[3]["traceback"] is None  # a user error
    assert jobs[3]["overrides"] == ["model=tiny_random", "method=best_of_n", "max_new_tokens=4",
                                    "max_new_tokens_check=False", "seed=1", "num_samples=2"]
    for i in range(3):
        assert len(_lines(sweep / str(i) / "results.jsonl")) == 2
        assert jobs[i]["error"] is None and jobs[i]["wall_time_s"] > 0
        assert jobs[i]["n_expected"] == 2 and jobs[i]["n_results"] == 2
    # the failure is listed at the end with its overrides and error
    tail = out.stderr[out.stderr.rindex("sweep job(s) failed"):]
    assert re.search(r"#3 \[.*method=best_of_n.*seed=1.*\]: .*results.jsonl is a folder", tail), tail
    sweep_json = json.loads((sweep / "sweep.json").read_text())
    assert [j["status"] for j in sweep_json["jobs"]] == ["done", "done", "done", "failed"]

    # fix job 3, and cut job 1 off after its first sample: both run again, the rest is skipped
    (sweep / "3" / "results.jsonl").rmdir()
    first = _lines(sweep / "1" / "results.jsonl")
    (sweep / "1" / "results.jsonl").write_text(first[0] + "\n" + first[1][:15])
    out = run_cli(*args)
    assert out.returncode == 0, out.stderr[-3000:]
    jobs = _jobs(sweep)
    assert [jobs[i]["status"] for i in range(4)] == ["skipped", "done", "skipped", "done"]
    again = _lines(sweep / "1" / "results.jsonl")
    assert len(again) == 2 and again[0] == first[0]
    assert json.loads(again[1])["series_id"] == json.loads(first[1])["series_id"]
    assert jobs[0]["previous"]["status"] == "done"

    # the same sweep once more: every job is complete, nothing is loaded
    before = {i: (sweep / str(i) / "results.jsonl").read_bytes() for i in range(4)}
    out = run_cli(*args)
    assert out.returncode == 0, out.stderr[-3000:]
    jobs = _jobs(sweep)
    assert [jobs[i]["status"] for i in range(4)] == ["skipped"] * 4
    assert all(jobs[i]["model_cache_hit"] is None for i in range(4))
    assert "loaded model" not in out.stderr + out.stdout
    assert before == {i: (sweep / str(i) / "results.jsonl").read_bytes() for i in range(4)}


def test_user_error_in_one_job_does_not_stop_the_sweep(tmp_path):
    out = run_cli("--multirun", "method=naive2", "num_samples=-1,2", f"hydra.sweep.dir={tmp_path}")
    assert out.returncode == 1
    jobs = _jobs(tmp_path)
    assert jobs[0]["status"] == "failed" and jobs[1]["status"] == "done"
    assert jobs[0]["error"].startswith("num_samples=-1") and jobs[0]["traceback"] is None
    assert "#0 [method=naive2 num_samples=-1]: num_samples=-1" in out.stderr
    assert len(_lines(tmp_path / "1" / "results.jsonl")) == 2


def test_jobs_sharing_a_model_run_together_and_models_are_released(tmp_path):
    # Hydra's order alternates the two models; the launcher runs each model's jobs together
    out = run_cli("--multirun", "method=greedy", "seed=0,1", "model=tiny_random", "model.init_seed=0,1",
                  "num_samples=1", "max_new_tokens=3", "max_new_tokens_check=false",
                  "output.progress=false",
                  f"hydra.sweep.dir={tmp_path}")
    assert out.returncode == 0, out.stderr[-3000:]
    jobs = _jobs(tmp_path)
    by_order = [jobs[n] for n in sorted(jobs, key=lambda n: jobs[n]["order"])]
    assert [j["job_num"] for j in by_order] == [0, 2, 1, 3]
    assert [j["model_cache_hit"] for j in by_order] == [False, True, False, True]
    log = out.stdout + out.stderr
    assert log.count("released model(s) no later job needs") == 2
    # the first model is released before the second is loaded
    assert log.index("released model(s)") < log.rindex("loaded model tiny_random")


def test_submitit_local_launcher_runs_the_same_sweep(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    out = run_cli("--multirun", "hydra/launcher=submitit_local", "model=tiny_random",
                  "method=greedy,naive2", "num_samples=1", "max_new_tokens=3",
                  "max_new_tokens_check=false",
                  f"hydra.sweep.dir={tmp_path}", timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    for job in ("0", "1"):
        rows = [json.loads(x) for x in _lines(tmp_path / job / "results.jsonl")]
        assert len(rows) == 1
    assert (tmp_path / ".submitit").is_dir()
    # jobs without a terminal draw no bars: their logs hold no escape codes or bar lines
    logs = list((tmp_path / ".submitit").rglob("*_log.err")) + list(
        (tmp_path / ".submitit").rglob("*_log.out"))
    assert logs
    for log in logs:
        text = log.read_text(errors="replace")
        assert "\x1b[" not in text and "%|" not in text, (log, text[-1000:])
    # the submitting process prints the sweep's table and the report command
    assert "make report DIR=" + str(tmp_path) in out.stdout
    assert [ln.split()[0] for ln in out.stdout.splitlines() if "method=" in ln
            and "m3_monthly" in ln] == ["0", "1"]


def test_slurm_launcher_defaults_make_a_valid_sbatch_script(tmp_path, monkeypatch, recwarn):
    submitit = pytest.importorskip("submitit")
    # no SLURM here: let submitit build the sbatch script without looking for srun
    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", classmethod(lambda cls: 2))
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from omegaconf import OmegaConf

    from specdifftree.config import compose

    cfg = compose(["hydra/launcher=slurm", "hydra.launcher.partition=gpu",
                   "hydra.launcher.gpus_per_node=1", f"hydra.sweep.dir={tmp_path}"],
                  return_hydra_config=True)
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=False)
    assert launcher["_target_"].endswith("SlurmLauncher")
    assert OmegaConf.select(cfg, "hydra.launcher.name") == "specdifftree"  # the SLURM job name
    assert launcher["nodes"] == 1 and launcher["tasks_per_node"] == 1
    assert launcher["timeout_min"] > 0 and launcher["max_num_timeout"] >= 1
    # the parameters go to submitit's SLURM executor as the plugin passes them
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    params = {k if k in base else f"slurm_{k}": v for k, v in launcher.items()
              if k not in ("_target_", "submitit_folder", "max_num_timeout")}
    params["name"] = "specdifftree"
    executor = submitit.AutoExecutor(folder=str(tmp_path / "submitit"), cluster="slurm",
                                     slurm_max_num_timeout=launcher["max_num_timeout"])
    executor.update_parameters(**params)
    script = executor._executor._make_submission_file_text("python -m x", "uid")
    assert not [str(w.message) for w in recwarn if "schema" in str(w.message)]
    for line in ("#SBATCH --nodes=1", "#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=1",
                 f"#SBATCH --time={launcher['timeout_min']}", "#SBATCH --mem=32GB",
                 "#SBATCH --cpus-per-task=8"):
        assert line in script, script


def test_methods_x_seeds_preset_is_runnable(tmp_path):
    from specdifftree.config import compose

    cfg = compose(["+sweep=methods_x_seeds"], return_hydra_config=True)
    assert cfg.num_samples == 250 and cfg.max_new_tokens is None and cfg.budget.rollouts == 20
    params = cfg.hydra.sweeper.params
    assert params.method == "greedy,mcts,dts,maxent_ts" and params.seed == "0,1,2"
    for method in params.method.split(","):
        if not (REPO / "specdifftree" / "conf" / "method" / f"{method}.yaml").exists():
            continue  # composed by the CLI run below for the methods present
        mcfg = compose(["+sweep=methods_x_seeds", f"method={method}"]).method
        if "expansion_k" in mcfg:  # the seed's k = 4; dts has no cap (exact, docs/search.md)
            assert mcfg.expansion_k == (0 if method == "dts" else 4), method
    # run it, narrowed on the command line (command-line values win over the preset's)
    out = run_cli("--multirun", "+sweep=methods_x_seeds", "method=greedy", "seed=0",
                  "num_samples=1", "max_new_tokens=3", "max_new_tokens_check=false",
                  f"hydra.sweep.dir={tmp_path}")
    assert out.returncode == 0, out.stderr[-3000:]
    assert _jobs(tmp_path)[0]["status"] == "done"
    job_cfg = (tmp_path / "0" / ".hydra" / "config.yaml").read_text()
    assert "rollouts: 20" in job_cfg


def test_budget_scaling_preset_sweeps_token_budgets():
    from specdifftree.config import compose

    cfg = compose(["+sweep=budget_scaling"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    budgets = [int(b) for b in params["budget.tokens"].split(",")]
    assert len(budgets) >= 3 and budgets == sorted(budgets)
    assert {"greedy", "mcts", "dts", "maxent_ts", "best_of_n", "beam", "dts_star", "sir", "smc"} \
        == set(params.method.split(","))
    # every rollout processes at least one token: the token budget, not rollouts, stops a method
    assert cfg.budget.rollouts > max(budgets)


def test_anytime_preset_holds_only_methods_a_single_run_answers():
    """smc fixes its particle count from the token budget up front, so a run at a smaller budget
    is not the beginning of a larger one: it is in budget_scaling (one job per budget), not in
    the anytime preset; sir samples like best_of_n and is in both."""
    from specdifftree.config import compose

    methods = compose(["+sweep=anytime"], return_hydra_config=True).hydra.sweeper.params.method
    assert set(methods.split(",")) == {"best_of_n", "mcts", "dts", "dts_star", "maxent_ts", "sir"}


@pytest.mark.parametrize("args,method,key", [
    (("method=dts,greedy", "method.expansion_k=2"), "greedy", "expansion_k"),
    (("method=greedy,dts", "+method.expansion_k=2"), "greedy", "expansion_k"),
    (("method=best_of_n,beam", "method.answer=median"), "beam", "answer"),
])
def test_a_sweep_over_methods_with_a_key_one_lacks_fails_in_one_line(tmp_path, args, method, key):
    """A setting that one swept method does not have stops the sweep before any job, with one line
    naming the method and the key (exit 2, no sweep dir)."""
    sweep = tmp_path / "sweep"
    r = run_cli("--multirun", *args, "num_samples=1", f"hydra.sweep.dir={sweep}")
    assert r.returncode == 2, r.stderr[-2000:]
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("specdifftree: error: ")
    assert f"method.{key} is not a setting of method={method}" in lines[0], lines[0]
    assert not sweep.exists()


def test_a_setting_of_every_swept_method_but_not_the_default_one_runs(tmp_path):
    """method.answer exists for best_of_n and sir but not for the default method (greedy): the
    sweep runs every job with it (Hydra composes the launch config with the default method)."""
    sweep = tmp_path / "sweep"
    r = run_cli("--multirun", "model=tiny_random", "method=best_of_n,sir", "method.answer=median",
                "budget.rollouts=3", "max_new_tokens=4", "max_new_tokens_check=false", "num_samples=1",
                f"hydra.sweep.dir={sweep}")
    assert r.returncode == 0, r.stderr[-3000:]
    for job, method in ((0, "best_of_n"), (1, "sir")):
        row = json.loads(_lines(sweep / str(job) / "results.jsonl")[0])
        assert row["method"] == method and row["error"] is None
        assert row["answer"] == "median" and row["rollouts"] == 3
    r = run_cli("--multirun", "model=tiny_random", "method=best_of_n,sir", "method.answer=median",
                "budget.rollouts=3", "max_new_tokens=4", "max_new_tokens_check=false", "num_samples=1",
                f"hydra.sweep.dir={sweep}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert [_jobs(sweep)[i]["status"] for i in (0, 1)] == ["skipped", "skipped"]  # resumed


def test_forced_and_plain_overrides_identify_the_same_job():
    """A sweep folder written with method.<key>=v (job.json) is found again when the CLI records
    the same setting as ++method.<key>=v."""
    from specdifftree.launcher.jobinfo import job_identity

    assert job_identity(["method=dts", "++method.lam=4", "seed=1"]) == \
        job_identity(["seed=1", "method.lam=4", "method=dts"])
    assert job_identity(["method=dts", "+method.extra=1"]) != job_identity(["method=dts"])


def test_a_grown_sweep_resumes_in_the_dirs_of_its_jobs(tmp_path):
    common = ("num_samples=2", "output.print_summary=false", f"hydra.sweep.dir={tmp_path}")
    assert run_cli("--multirun", "method=naive2", "seed=0,1", *common).returncode == 0
    first = {d: (tmp_path / d / "results.jsonl").read_bytes() for d in ("0", "1")}
    # one more method and seed, another order, a display override: Hydra numbers jobs anew
    out = run_cli("--multirun", "seed=1,0,2", "method=seasonal_naive,naive2",
                  "output.progress=false", *common)
    assert out.returncode == 0, out.stderr[-3000:]
    jobs = {d.name: json.loads((d / "job.json").read_text()) for d in tmp_path.iterdir()
            if (d / "job.json").exists()}
    assert len(jobs) == 6
    by_args = {(next(o for o in j["overrides"] if o.startswith("method=")),
                next(o for o in j["overrides"] if o.startswith("seed="))): (d, j["status"])
               for d, j in jobs.items()}
    assert by_args[("method=naive2", "seed=0")] == ("0", "skipped")
    assert by_args[("method=naive2", "seed=1")] == ("1", "skipped")
    assert sorted(s for _, s in by_args.values()) == ["done"] * 4 + ["skipped"] * 2
    assert first == {d: (tmp_path / d / "results.jsonl").read_bytes() for d in ("0", "1")}
    for d, _ in by_args.values():
        rows = [json.loads(x) for x in _lines(tmp_path / d / "results.jsonl")]
        assert len(rows) == 2 and len({r["method"] for r in rows}) == 1


def _bump_last_values(csv: Path) -> None:
    """Add 1 to the last value of every series of an M4 file (same ids and lengths)."""
    lines = csv.read_text().splitlines()
    out = [lines[0]]
    for ln in lines[1:]:
        fields = ln.split(",")
        fields[-1] = f'"{float(fields[-1].strip(chr(34))) + 1:g}"'
        out.append(",".join(fields))
    csv.write_text("\n".join(out) + "\n")


def test_a_complete_job_is_reused_only_with_the_same_fingerprint(tmp_path, m4_root):
    """The same overrides over changed data (dataset.root is a location, not part of the config
    fingerprint; the series' identity is): the complete jobs are not skipped as done, and not run
    into either — each fails with one line naming what differs; resume=false starts clean."""
    import shutil

    data = tmp_path / "m4"
    data.mkdir()
    for name in ("Hourly-train.csv", "Hourly-test.csv"):
        shutil.copy(m4_root / name, data / name)
    sweep = tmp_path / "sweep"
    args = ("--multirun", "dataset=m4_hourly", f"dataset.root={data}", "method=naive2,seasonal_naive",
            "num_samples=2", "output.print_summary=false", "output.progress=false",
            f"hydra.sweep.dir={sweep}")
    assert run_cli(*args).returncode == 0
    before = {d: {p.name: p.read_bytes() for p in (sweep / d).rglob("*") if p.is_file()
                  and p.name != "job.json" and not p.name.endswith(".log")} for d in ("0", "1")}
    again = run_cli(*args)
    assert again.returncode == 0 and [j["status"] for _, j in sorted(_jobs(sweep).items())] \
        == ["skipped", "skipped"]
    _bump_last_values(data / "Hourly-test.csv")
    changed = run_cli(*args)
    assert changed.returncode == 1
    jobs = _jobs(sweep)
    for n in (0, 1):
        assert jobs[n]["status"] == "failed"
        assert "series data" in jobs[n]["error"] and "new hydra.sweep.dir" in jobs[n]["error"]
        assert "\n" not in jobs[n]["error"] and jobs[n]["traceback"] is None
    assert "Traceback" not in changed.stderr
    after = {d: {p.name: p.read_bytes() for p in (sweep / d).rglob("*") if p.is_file()
                 and p.name != "job.json" and not p.name.endswith(".log")} for d in ("0", "1")}
    assert after == before  # results, samples, run.json and the .hydra copy untouched
    fresh = run_cli(*args, "resume=false")
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    jobs = _jobs(sweep)
    clean = {n: j for n, j in jobs.items() if "resume=false" in map(str.lower, j["overrides"])}
    assert sorted(j["status"] for j in clean.values()) == ["done", "done"]
    assert not set(clean) & {0, 1}  # new job dirs; the old ones stay as they were
    for n, j in clean.items():
        new = [json.loads(x) for x in _lines(sweep / str(n) / "results.jsonl")]
        method = next(o for o in j["overrides"] if o.startswith("method="))
        was = next(d for d in ("0", "1") if method in jobs[int(d)]["overrides"])
        old = [json.loads(x) for x in _lines(sweep / was / "results.jsonl")]
        assert [r["truth"][-1] for r in new] == [r["truth"][-1] + 1 for r in old]
