"""The real Hydra CLI in a subprocess."""

import json

import pandas as pd
import pytest

from conftest import run_cli

REQUIRED = {"method", "dataset", "series_id", "seed", "horizon", "smape", "mase", "valid", "reward",
            "model_calls", "tokens_processed", "prompt_tokens", "generated_tokens", "time_s",
            "forecast", "text"}
SUMMARY = {"method", "dataset", "seed", "n", "smape", "mase", "owa", "valid_rate", "reward",
           "model_calls", "tokens_processed", "time_s"}


def test_cli_greedy_tiny_random_writes_results_contract(tmp_path):
    out = run_cli("model=tiny_random", "method=greedy", "num_samples=3", f"hydra.run.dir={tmp_path}")
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 3
    for r in rows:
        assert REQUIRED <= set(r), REQUIRED - set(r)
        assert len(r["forecast"]) == r["horizon"]
        assert r["tokens_processed"] == r["prompt_tokens"] + r["generated_tokens"] - 1
        assert r["model"] == "tiny_random" and r["method"] == "greedy"
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert SUMMARY <= set(summary.columns)
    assert len(summary) == 1 and summary.loc[0, "n"] == 3
    assert (tmp_path / ".hydra" / "config.yaml").exists()
    assert f"run dir: {tmp_path}" in out.stdout
    assert "sMAPE" in out.stdout and "greedy" in out.stdout
    assert "BLAS: OpenBLAS" in out.stderr + out.stdout or "Linux" not in __import__("platform").system()


def test_cli_rerun_in_same_dir_resumes(tmp_path):
    args = ("method=seasonal_naive", "num_samples=4", f"hydra.run.dir={tmp_path}")
    assert run_cli(*args).returncode == 0
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    # simulate a crash that tore the last line and lost one sample
    (tmp_path / "results.jsonl").write_text("\n".join(lines[:2]) + "\n" + lines[2][:10])
    assert run_cli(*args).returncode == 0
    again = [json.loads(x) for x in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [r["series_id"] for r in again] == [json.loads(x)["series_id"] for x in lines]


@pytest.mark.parametrize("override,needle", [
    ("num_samples=-1", "num_samples"),
    ("num_samples=abc", "num_samples"),
    ("numsamples=3", "numsamples"),
    ("method.expansion_k=-1", "method.expansion_k"),
    ("prompt.separator=1", "prompt.separator"),
    ("max_new_tokens=0", "max_new_tokens"),
])
def test_bad_values_exit_2_with_one_line(tmp_path, override, needle):
    out = run_cli(override, f"hydra.run.dir={tmp_path}")
    assert out.returncode == 2, (out.stdout, out.stderr)
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, out.stderr
    assert needle in lines[0] and lines[0].startswith("specdifftree: error:")
    assert "Traceback" not in out.stderr


MALFORMED = [
    # (extra CLI arguments, what the one line must say)
    (["num_samples"], ["'num_samples'", "missing EQUAL", "write key=value"]),
    (["num_samples=["], ["'num_samples=['", "write key=value"]),
    (["num_samples=5)"], ["'num_samples=5)'", "extraneous input ')'"]),
    (["seed=${oops"], ["'seed=${oops'", "mismatched input"]),
    (["prompt.separator='a"], ["prompt.separator='a", "unclosed quote"]),
    (["=5"], ["'=5'", "no key before '='"]),
    (["+=3"], ["'+=3'", "no key before '='"]),
    (["~"], ["'~'", "~key"]),
    (["method="], ["method= names no option", "greedy"]),
    (["seed=1,2"], ["seed=1,2", "--multirun", "seed=[1,2]"]),
    (["num_samples=choice(1,2)"], ["num_samples=choice(1,2)", "--multirun"]),
    (["--multirun", "seed=[1"], ["'seed=[1'", "write key=value"]),
    (["--multirun", "seed=1,,2"], ["'seed=1,,2'", "extraneous input ','"]),
    (["--multirun", "=3"], ["'=3'", "no key before '='"]),
]


@pytest.mark.parametrize("args,needles", MALFORMED, ids=[" ".join(a) for a, _ in MALFORMED])
def test_malformed_override_is_one_line_through_the_cli(tmp_path, args, needles):
    """The real CLI: a command line Hydra cannot parse ends in one line naming the override and
    the fix, exit 2, no traceback, no Hydra hint, nothing written."""
    out = run_cli("method=naive2", *args, f"hydra.run.dir={tmp_path / 'run'}",
                  f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert out.returncode == 2, (out.stdout, out.stderr)
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("specdifftree: error: "), out.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert "Traceback" not in out.stderr and "HYDRA_FULL_ERROR" not in out.stderr
    assert "hydra.cc" not in lines[0] and not out.stdout.strip()
    assert not (tmp_path / "run").exists() and not (tmp_path / "sweep").exists()


def test_wrong_group_option_lists_valid_ones(tmp_path):
    out = run_cli("method=nope", f"hydra.run.dir={tmp_path}")
    assert out.returncode == 2
    assert "greedy" in out.stderr and "nope" in out.stderr and "Traceback" not in out.stderr


def test_missing_model_folder_is_one_clear_error(tmp_path):
    out = run_cli("model=hf", f"model.path={tmp_path}/no-such-model", "num_samples=1",
                  f"hydra.run.dir={tmp_path}/run")
    assert out.returncode == 2, out.stderr
    assert "no such folder" in out.stderr and "Traceback" not in out.stderr


def test_unreachable_hub_id_is_one_clear_error(tmp_path):
    out = run_cli("model=hf", "model.path=mlx-community/definitely-not-a-model", "num_samples=1",
                  f"hydra.run.dir={tmp_path}", env={"HF_HUB_OFFLINE": "1"})
    assert out.returncode == 2, out.stderr
    assert "cannot load model" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("freq,smape,mase", [("hourly", 18.383, 2.395), ("weekly", 9.161, 2.777)])
def test_naive2_cli_reproduces_official_m4_figures(tmp_path, m4_root, freq, smape, mase):
    out = run_cli("method=naive2", f"dataset=m4_{freq}", f"dataset.root={m4_root}", "num_samples=null",
                  f"hydra.run.dir={tmp_path}")
    assert out.returncode == 0, out.stderr
    s = pd.read_csv(tmp_path / "summary.csv").iloc[0]
    assert abs(s["smape"] - smape) <= 1e-3
    assert abs(s["mase"] - mase) <= 1e-3
    assert abs(s["owa"] - 1.0) <= 1e-3
    assert s["n"] == {"hourly": 414, "weekly": 359}[freq]


def test_cli_caption_task_end_to_end(tmp_path):
    import csv

    root = tmp_path / "captions"
    root.mkdir()
    with open(root / "m4_series_Monthly.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "series"])
        for i in range(3):
            w.writerow([f"M{i}", json.dumps([float(j % 12 + i) for j in range(40)])])
    with open(root / "m4_captions_Monthly.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "caption"])
        for i in range(3):
            w.writerow([f"M{i}", "A seasonal monthly series with a yearly cycle."])
    out = run_cli("dataset=m4_captions", f"dataset.root={root}", "reward=caption_similarity",
                  "num_samples=2", "dataset.max_new_tokens=12", f"hydra.run.dir={tmp_path}/run")
    assert out.returncode == 0, out.stderr
    rows = [json.loads(x) for x in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    for r in rows:
        assert r["reference"] == "A seasonal monthly series with a yearly cycle."
        assert 0.0 <= r["caption_rougeL_f1"] <= 1.0 and r["reward_name"] == "oracle_caption_similarity"
        assert r["generated_tokens"] <= 12
    assert "ROUGE-L" in out.stdout
