"""What the command line shows: the results table (fixed formats, units, legend, the same numbers
as report.md), the help page, shell completion, the job name."""

import os
import subprocess
import sys

import pandas as pd
import pytest

from conftest import REPO

from specdifftree.report_table import FORMATS, fmt, render, summary_table, sweep_table

CLI = [sys.executable, "-m", "specdifftree"]


def _summary(**over) -> dict:
    row = {"method": "greedy", "dataset": "m3_monthly", "seed": 0, "n": 5, "errors": 0,
           "valid_rate": 0.8, "smape": 12.3456, "mase": 0.98765, "owa": 1.0,
           "reward": -0.612345, "perplexity": 2.0345, "tokens_processed": 452.4,
           "model_calls": 141.0, "time_s": 3.75, "reward_name": "spectral", "model": "tiny_tslm"}
    row.update(over)
    return row


def test_table_columns_keep_their_format_whatever_the_values():
    a = render(pd.DataFrame([_summary()]))
    b = render(pd.DataFrame([_summary(smape=7.0, mase=12.5, reward=-1234.5, perplexity=1.0)]))
    head_a, row_a, legend_a = a.splitlines()
    head_b, row_b, _ = b.splitlines()
    assert head_a.split() == head_b.split() == [
        "method", "dataset", "seed", "n", "errors", "valid", "sMAPE%", "MASE", "OWA",
        "reward(spectral)", "ppl", "tok/smp", "calls/smp", "s/smp"]
    assert row_a.split() == ["greedy", "m3_monthly", "0", "5", "0", "80%", "12.35", "0.988",
                             "1.000", "-0.612", "2.03", "452", "141", "3.750"]
    assert row_b.split()[6:10] == ["7.00", "12.500", "1.000", "-1234.500"]
    assert row_b.split()[10] == "1.00"  # same number of decimals, not {:.4g}
    assert legend_a.startswith("valid: ") and "mean spectral reward" in legend_a
    assert "sMAPE in %" in legend_a and "OWA 1 = Naive2" in legend_a


def test_undefined_values_show_a_dash():
    assert fmt("perplexity", float("nan")) == "-" and fmt("mase", None) == "-"
    t = render(pd.DataFrame([_summary(perplexity=float("nan"), method="naive2")]))
    assert t.splitlines()[1].split()[10] == "-"


def test_report_uses_the_table_formats(tmp_path):
    from specdifftree.report import METRICS, build_report

    for col, f in FORMATS.items():
        assert METRICS[col][1] == f, col
    run = tmp_path / "run"
    run.mkdir()
    pd.DataFrame([_summary()]).to_csv(run / "summary.csv", index=False)
    rows = [{"method": "greedy", "dataset": "m3_monthly", "seed": 0, "series_id": f"N{i}",
             "horizon": 2, "smape": 12.3456, "mase": 0.98765, "smape_naive2": 12.3456,
             "mase_naive2": 0.98765, "valid": True, "reward": -0.612345, "reward_name": "spectral",
             "tokens_processed": 452, "model_calls": 141, "time_s": 3.75, "mean_logprob": -0.71}
            for i in range(2)]
    import json

    (run / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    md = build_report(run, figures=False)["report_md"].read_text()
    table = summary_table(run).splitlines()[1].split()
    assert "12.35" in table and "12.35" in md
    assert "-0.612" in table and "-0.612" in md
    assert "reward (spectral)" in md


def test_sweep_table_one_row_per_job_with_its_overrides(tmp_path):
    import json

    for num, (method, seed) in enumerate([("greedy", 0), ("naive2", 1)]):
        d = tmp_path / str(num)
        d.mkdir()
        pd.DataFrame([_summary(method=method, seed=seed)]).to_csv(d / "summary.csv", index=False)
        (d / "job.json").write_text(json.dumps({"overrides": [f"method={method}", f"seed={seed}",
                                                              "hydra.verbose=false"],
                                                "status": "done"}))
    (tmp_path / "2").mkdir()  # a job that failed before its first sample
    (tmp_path / "2" / "job.json").write_text(json.dumps({"overrides": ["method=beam"],
                                                         "status": "failed"}))
    lines = sweep_table(tmp_path).splitlines()
    assert lines[0].split()[:5] == ["job", "status", "overrides", "method", "dataset"]
    assert lines[1].split()[:7] == ["0", "done", "method=greedy", "seed=0", "greedy", "m3_monthly",
                                    "0"]
    assert lines[2].split()[:5] == ["1", "done", "method=naive2", "seed=1", "naive2"]
    assert lines[3].split()[:3] == ["2", "failed", "method=beam"] and lines[3].split()[3] == "-"
    assert lines[2].split()[6] == "1"  # the seed stays an integer next to a job without rows
    assert "hydra." not in "\n".join(lines)
    assert lines[4].startswith("valid: ")


def test_help_lists_groups_options_and_main_keys():
    out = subprocess.run(CLI + ["--help"], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert text.startswith("specdifftree: ") and "__main__" not in text and "powered by" not in text
    groups = {ln.split(":")[0]: ln.split(":", 1)[1] for ln in text.splitlines()
              if ln.split(":")[0] in ("method", "dataset", "model", "reward", "logger")}
    assert set(groups) == {"method", "dataset", "model", "reward", "logger"}
    for name in ("greedy", "best_of_n", "beam", "mcts", "dts", "dts_star", "maxent_ts", "sir",
                 "smc", "naive2"):
        assert f" {name}," in groups["method"] + "," or groups["method"].endswith(name)
    assert "tiny_tslm" in groups["model"]
    for key in ("seed=", "num_samples=", "budget.rollouts=", "budget.tokens=", "hydra.run.dir="):
        assert key in text
    assert "--shell-completion install=bash" in text


def test_shell_completion_install_and_query():
    exe = os.path.join(os.path.dirname(sys.executable), "specdifftree")
    assert os.path.exists(exe), "the specdifftree console script is installed by pip install -e ."
    out = subprocess.run([exe, "--shell-completion", "install=bash"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and "complete" in out.stdout and "hydra_bash_completion" in out.stdout
    env = dict(os.environ, COMP_LINE="specdifftree method=best")
    q = subprocess.run([exe, "-sc", "query=bash"], capture_output=True, text=True, env=env,
                       timeout=120)
    assert q.returncode == 0 and q.stdout.split() == ["method=best_of_n"]
    env["COMP_LINE"] = "specdifftree num_sam"
    q = subprocess.run([exe, "-sc", "query=bash"], capture_output=True, text=True, env=env,
                       timeout=120)
    assert q.stdout.split() == ["num_samples="]


@pytest.mark.parametrize("multirun", [False, True])
def test_job_is_named_specdifftree(tmp_path, multirun):
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    args = CLI + (["--multirun"] if multirun else []) + [
        "method=naive2", "num_samples=1", f"{key}={tmp_path / 'out'}"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    job_dir = tmp_path / "out" / ("0" if multirun else "")
    assert (job_dir / "specdifftree.log").is_file() and not (job_dir / "__main__.log").exists()
    assert "name: specdifftree" in (job_dir / ".hydra" / "hydra.yaml").read_text()


_MATMUL = ("import time, mlx.core as mx; a = mx.random.normal((512, 512)); mx.eval(a @ a); "
           "t = time.process_time(); [mx.eval(a @ a) for _ in range(4)]; "
           "print(time.process_time() - t)")


@pytest.mark.skipif(sys.platform != "linux", reason="the preload is Linux-only")
def test_python_api_import_loads_the_fast_blas_for_mlx():
    from specdifftree.backend.mlx import blas

    if not blas.find_openblas():
        pytest.skip("no OpenBLAS on this machine (make setup prints how to install it)")
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", blas.OPT_OUT_ENV)}
    code = ("import specdifftree; from specdifftree.backend.mlx.blas import blas_in_use; " + _MATMUL
            + "; print(blas_in_use())")
    fast = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=120)
    assert fast.returncode == 0, fast.stderr
    slow = subprocess.run([sys.executable, "-c", code], env=dict(env, **{blas.OPT_OUT_ENV: "1"}),
                          capture_output=True, text=True, timeout=120)
    assert fast.stdout.split("\n")[1].startswith("OpenBLAS")
    assert slow.stdout.split("\n")[1].startswith("reference")
    # MLX's matmuls really run in OpenBLAS (CPU seconds, so other load on the machine cancels)
    assert float(fast.stdout.split()[0]) < 0.5 * float(slow.stdout.split()[0]), (fast.stdout,
                                                                                 slow.stdout)
    late = subprocess.run([sys.executable, "-c", "import mlx.core; import specdifftree"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert "import specdifftree first" in late.stderr


def test_python_api_says_blas_and_device_once(tmp_path):
    code = ("import specdifftree as sdt\n"
            "for i in range(2):\n"
            "    cfg = sdt.compose(['method=naive2', 'num_samples=1', 'output.progress=false'])\n"
            f"    sdt.run(cfg, run_dir=r'{tmp_path}/r' + str(i))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = [ln for ln in out.stderr.splitlines() if ln.startswith("specdifftree: BLAS: ")]
    assert len(lines) == 1 and "device: " in lines[0], out.stderr
