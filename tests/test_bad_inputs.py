"""A corpus of bad inputs and faults: each ends in one clear line + a non-zero exit, or in a
counted error row, with no row lost and no stale row reused.

In-process where the code path is the same (the CLI's own pre-check, prepare/execute), real CLI
subprocesses only for exit codes, signals, locks held by another process and kill -9.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, run_cli
from specdifftree import compose
from specdifftree.errors import SpecDiffTreeError
from specdifftree.results import REJECTED_FILE, scan_results
from specdifftree.runner import execute, prepare

TIME_FIELDS = {"time_s", "reward_time_s", "model_time_s"}
QUIET = ["output.progress=false"]


def one_line_error(capsys, fn, code: int = 2) -> str:
    """Run ``fn``; it must exit with ``code`` after printing exactly one line to stderr."""
    with pytest.raises(SystemExit) as ei:
        fn()
    assert ei.value.code == code
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1, err
    assert err[0].startswith("specdifftree: error: ") and "Traceback" not in err[0]
    return err[0]


def rows_of(path: Path) -> list[dict]:
    return [json.loads(x) for x in (path / "results.jsonl").read_text().splitlines() if x.strip()]


def strip_time(rows):
    return [{k: v for k, v in r.items() if k not in TIME_FIELDS} for r in rows]


# ------------------------------------------------------------------ 1. config values (CLI pre-check)

BAD_VALUES = [
    ("num_samples=-1", "num_samples"), ("num_samples=0", "num_samples"),
    ("num_samples=abc", "num_samples"), ("num_samples=1.5", "num_samples"),
    ("num_samples=true", "num_samples"), ("seed=-1", "seed"), ("seed=abc", "seed"),
    ("seed=1.5", "seed"), ("dataset.subset_seed=-1", "dataset.subset_seed"),
    ("dataset.subset_seed=x", "dataset.subset_seed"), ("max_new_tokens=0", "max_new_tokens"),
    ("max_new_tokens=-5", "max_new_tokens"), ("max_new_tokens=abc", "max_new_tokens"),
    ("budget.rollouts=0", "budget.rollouts"), ("budget.rollouts=-3", "budget.rollouts"),
    ("budget.tokens=0", "budget.tokens"), ("budget.tokens=abc", "budget.tokens"),
    ("prompt.scale_target=inf", "prompt.scale_target"),
    ("prompt.scale_target=nan", "prompt.scale_target"),
    ("prompt.scale_target=0", "prompt.scale_target"),
    ("prompt.scale_target=-1", "prompt.scale_target"),
    ("prompt.scale_quantile=0", "prompt.scale_quantile"),
    ("prompt.scale_quantile=1.5", "prompt.scale_quantile"),
    ("prompt.decimals=-1", "prompt.decimals"), ("prompt.decimals=9", "prompt.decimals"),
    ("prompt.separator=1", "prompt.separator"), ("prompt.separator=-", "prompt.separator"),
    ("backend.kv_cache_mb=-1", "backend.kv_cache_mb"),
    ("backend.kv_cache_mb=inf", "backend.kv_cache_mb"),
    ("backend.logprob_cache_mb=0", "backend.logprob_cache_mb"),
    ("dataset.context_length=1", "dataset.context_length"),
    ("dataset.context_length=0", "dataset.context_length"),
    ("resume=maybe", "resume"),
    ("model=hf", "model.path"),
]
METHOD_VALUES = [
    ("mcts", "method.expansion_k=-1", "method.expansion_k"),
    ("sir", "method.num_draws=0", "method.num_draws"),
    ("dts", "method.lam=0", "method.lam"),
    ("dts", "method.lam=-1", "method.lam"),
    ("dts", "method.lam=inf", "method.lam"),
    ("dts", "method.lam=nan", "method.lam"),
    ("dts", "method.rollout_temperature=-1", "method.rollout_temperature"),
    ("maxent_ts", "method.parallel_rollouts=0", "method.parallel_rollouts"),
]
COMPOSE_ERRORS = [
    ("num_sample=5", "num_samples"),           # the closest known key ...
    ("numsamples=3", "+numsamples"),           # ... and how to add a new one
    ("sed=1", "seed"),
    ("budget.rollout=3", "budget.rollouts"),
    ("method.expansoin_k=8", "+method.expansoin_k"),
    ("method=nope", "greedy"),
    ("dataset=m5_daily", "m3_monthly"),
    ("model=gpt", "tiny_tslm"),
    ("reward=bleu", "spectral"),
    ("num_samples=[", "num_samples"),
]


@pytest.mark.parametrize("override,needle", BAD_VALUES, ids=[o for o, _ in BAD_VALUES])
def test_bad_value_is_one_line(capsys, tmp_path, override, needle):
    from specdifftree.__main__ import _precheck

    line = one_line_error(capsys, lambda: _precheck([override, f"hydra.run.dir={tmp_path}"]))
    assert needle in line


@pytest.mark.parametrize("method,override,needle", METHOD_VALUES,
                         ids=[f"{m}-{o}" for m, o, _ in METHOD_VALUES])
def test_bad_method_value_is_one_line(capsys, tmp_path, method, override, needle):
    """Method values are checked by the method itself when the run builds it."""
    cfg = compose([f"method={method}", override, "model=tiny_random"])
    with pytest.raises(SpecDiffTreeError) as ei:
        prepare(cfg)
    assert needle in str(ei.value) and "\n" not in str(ei.value)


@pytest.mark.parametrize("override,needle", COMPOSE_ERRORS, ids=[o for o, _ in COMPOSE_ERRORS])
def test_config_that_does_not_compose_is_one_line(capsys, tmp_path, override, needle):
    from specdifftree.__main__ import _precheck

    line = one_line_error(capsys, lambda: _precheck([override, f"hydra.run.dir={tmp_path}"]))
    assert needle in line and "HYDRA_FULL_ERROR" not in line


#: the seed project's colliding method keys (issue 11) and what each now says
OLD_KEYS = [
    (["method.temperature=2"], "method.temperature is now method.lam (λ of π ∝ p_θ·exp(λ·r)); "
     "rollout sampling temperature is method.rollout_temperature"),
    (["method=dts", "method.temperature=2"], "method.temperature is now method.lam"),
    (["method=mcts", "method.temperature=2"], "method.temperature is now method.lam"),
    (["method=dts", "+method.temperature=2"], "method.temperature is now method.lam"),
    (["method=sir", "method.num_samples=3"], "method.num_samples is now method.num_draws"),
    (["method.num_samples=3"], "the number of series to forecast is the top-level num_samples"),
    (["method=smc", "++method.num_samples=3"], "method.num_samples is now method.num_draws"),
    (["method=best_of_n", "method.num_rollouts=5"], "method.num_rollouts is gone: the rollout "
     "budget is budget.rollouts"),
    (["method.num_rollouts=5"], "budget.rollouts"),
    (["method=best_of_n,dts", "method.num_rollouts=5"], "method.num_rollouts is gone"),
]


@pytest.mark.parametrize("overrides,needle", OLD_KEYS, ids=[" ".join(o) for o, _ in OLD_KEYS])
def test_old_method_key_is_one_line_naming_the_new_key(capsys, tmp_path, overrides, needle):
    from specdifftree.__main__ import _precheck, _precheck_multirun

    check = _precheck_multirun if any("," in o for o in overrides) else _precheck
    line = one_line_error(capsys, lambda: check([*overrides, f"hydra.run.dir={tmp_path}",
                                                 f"hydra.sweep.dir={tmp_path}"]))
    assert needle in line, line
    assert "sweep methods" not in line and "+method." not in line  # not an unknown-key hint


def test_old_method_key_through_the_real_cli_and_a_user_yaml(tmp_path):
    """On the command line and in a user's method yaml (hydra.searchpath): one line, exit 2, no
    run dir."""
    r = run_cli("method=dts", "method.temperature=0.5", "model=tiny_random", "num_samples=1",
                f"hydra.run.dir={tmp_path / 'run'}")
    err = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(err) == 1, r.stderr
    assert err[0] == ("specdifftree: error: method.temperature is now method.lam (λ of π ∝ "
                      "p_θ·exp(λ·r)); rollout sampling temperature is method.rollout_temperature")
    conf = tmp_path / "conf" / "method"
    conf.mkdir(parents=True)
    (conf / "old_dts.yaml").write_text("# @package method\nname: old_dts\n"
                                       "_target_: specdifftree.search.dts.DTS\n"
                                       "num_rollouts: 20\nnum_samples: 4\n")
    r = run_cli(f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "method=old_dts",
                "model=tiny_random", "num_samples=1", f"hydra.run.dir={tmp_path / 'run'}")
    err = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(err) == 1, r.stderr
    assert err[0].startswith("specdifftree: error: method.num_rollouts is gone: the rollout "
                             "budget is budget.rollouts"), err[0]
    assert not (tmp_path / "run").exists()


def test_a_run_dir_from_before_the_rename_is_refused(tmp_path):
    """A run dir written before issue 11 records method.temperature/num_samples/num_rollouts and
    budget.rollouts null in its fingerprint: resuming it stops with the fingerprint's one line."""
    args = ["model=tiny_random", "method=dts", "num_samples=1", "max_new_tokens=4",
            "max_new_tokens_check=false", *QUIET]
    execute(prepare(compose(args)), tmp_path / "run")
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    cfg = info["fingerprint"]["config"]
    assert cfg["method.lam"] == 1.0 and cfg["method.num_draws"] == 8 and cfg["budget.rollouts"] == 20
    cfg["method.temperature"] = cfg.pop("method.lam")  # what the seed's names wrote
    cfg["method.num_samples"] = cfg.pop("method.num_draws")
    cfg["method.num_rollouts"], cfg["budget.rollouts"] = 20, None
    (tmp_path / "run" / "run.json").write_text(json.dumps(info))
    with pytest.raises(SpecDiffTreeError) as ei:
        execute(prepare(compose(args)), tmp_path / "run")
    msg = str(ei.value)
    assert "\n" not in msg and "another configuration" in msg
    for key in ("budget.rollouts (null → 20)", "method.lam", "method.temperature",
                "method.num_draws", "method.num_rollouts"):
        assert key in msg, (key, msg)


@pytest.mark.parametrize("override,needle", [
    ("+method.expansoin_k=8", "did you mean method.expansion_k"),
    ("+method.foo=1", "method.foo"),
])
def test_unknown_method_key_is_rejected(override, needle):
    with pytest.raises(SpecDiffTreeError) as ei:
        prepare(compose(["method=mcts", override]))
    assert needle in str(ei.value)


@pytest.mark.parametrize("target", ["dir_is_file", "under_file", "proc"])
def test_unusable_run_dir_is_one_line(capsys, tmp_path, target):
    from specdifftree.__main__ import _precheck

    f = tmp_path / "afile"
    f.write_text("x")
    d = {"dir_is_file": f, "under_file": f / "run", "proc": Path("/proc/self/sdt-run")}[target]
    line = one_line_error(capsys, lambda: _precheck(["method=naive2", f"hydra.run.dir={d}"]))
    assert str(d) in line and "hydra.run.dir" in line


def test_unusable_sweep_dir_is_one_line(capsys, tmp_path):
    from specdifftree.__main__ import _precheck_multirun

    f = tmp_path / "afile"
    f.write_text("x")
    line = one_line_error(capsys, lambda: _precheck_multirun(
        ["--multirun", "method=naive2,seasonal_naive", f"hydra.sweep.dir={f}"]))
    assert str(f) in line


@pytest.mark.parametrize("sweep_arg,needle", [
    ("method=greedy,nope", "nope"),
    ("dataset=m3_yearly,m9", "m9"),
    ("num_sample=1,2", "num_samples"),
])
def test_multirun_composition_errors_are_one_line(capsys, tmp_path, sweep_arg, needle):
    from specdifftree.__main__ import _precheck_multirun

    line = one_line_error(capsys, lambda: _precheck_multirun(
        ["--multirun", sweep_arg, f"hydra.sweep.dir={tmp_path}"]))
    assert needle in line


# ------------------------------------------------------------- 2. systematic faults: pre-flight

@pytest.mark.parametrize("overrides,needle", [
    (["method=beam", "method.expansion_k=100000"], "method.expansion_k=100000"),
    (["method=mcts", "method.expansion_k=5000"], "exceeds the vocabulary"),
    (["max_new_tokens=9000"], "context"),
    # 18 monthly values take >= 106 tokens of this tokenizer: 50 would give 0% valid
    (["max_new_tokens=50"], "max_new_tokens=50 cannot hold a forecast"),
    (["max_new_tokens=50", "method=best_of_n"], "raise max_new_tokens to at least"),
    (["method=dts", "method.lam=1e300"], "method.lam"),
    (["method=maxent_ts", "method.lam=1e299", "reward.failure_reward=-1e10"],
     "reward.failure_reward"),
], ids=["beam-k-huge", "mcts-k-vocab", "context", "budget", "budget-bon", "lambda",
        "lambda-failure"])
def test_systematic_faults_stop_before_the_first_sample(tmp_path, overrides, needle):
    exp = prepare(compose(["model=tiny_random", "num_samples=2", *QUIET, *overrides]))
    with pytest.raises(SpecDiffTreeError) as ei:
        execute(exp, tmp_path / "run")
    assert needle in str(ei.value) and "\n" not in str(ei.value)
    assert not (tmp_path / "run" / "results.jsonl").exists()  # no sample ran


def test_a_budget_that_fits_or_max_new_tokens_check_false_runs(tmp_path):
    """The budget check's boundary: the tokens of the true future of each series (what a perfect
    forecast costs) — one token less for every series stops, and the check can be turned off."""
    from specdifftree.preflight import forecast_tokens

    base = ["model=tiny_random", "num_samples=2", "dataset=m3_yearly", *QUIET]
    exp = prepare(compose(base))
    needs = [forecast_tokens(exp, s) for s in exp.samples]
    assert all(n > exp.samples[i].horizon for i, n in enumerate(needs))
    with pytest.raises(SpecDiffTreeError, match=f"at least {max(needs)}"):
        execute(prepare(compose([*base, f"max_new_tokens={min(needs) - 1}"])), tmp_path / "a")
    assert not (tmp_path / "a" / "results.jsonl").exists()
    df = execute(prepare(compose([*base, f"max_new_tokens={min(needs)}"])), tmp_path / "b")
    assert len(df) == 2  # fits the shortest series: runs (any other is warned about)
    df = execute(prepare(compose([*base, "max_new_tokens=3", "max_new_tokens_check=false"])),
                 tmp_path / "c")
    assert len(df) == 2 and not df["valid"].any()
    with pytest.raises(SpecDiffTreeError, match="max_new_tokens_check"):
        prepare(compose([*base, "max_new_tokens_check=maybe"]))


def test_beam_batch_memory_bound_follows_kv_cache_mb(tmp_path):
    """The beam's batch K/V estimate is checked against backend.kv_cache_mb (tiny_tslm: ~20 KB
    per token, so 2048 hypotheses of ~300 tokens need ~12 GB)."""
    exp = prepare(compose(["method=beam", "method.expansion_k=60", "num_samples=1",
                           "backend.kv_cache_mb=1", *QUIET]))
    with pytest.raises(SpecDiffTreeError, match="backend.kv_cache_mb"):
        execute(exp, tmp_path / "run")


def _small_model(tmp_path: Path, rows_vocab: int, tok_vocab: int) -> Path:
    """A random Llama folder whose embedding has ``rows_vocab`` rows and whose tokenizer comes
    from a model with ``tok_vocab`` tokens."""
    from specdifftree.backend.mlx.tiny import random_model_folder

    shape = {"hidden_size": 32, "num_hidden_layers": 1, "intermediate_size": 64,
             "num_attention_heads": 2, "num_key_value_heads": 1}
    weights = random_model_folder(shape=shape, min_vocab=rows_vocab, root=tmp_path / "w")
    tok = random_model_folder(shape=shape, min_vocab=tok_vocab, root=tmp_path / "t")
    out = tmp_path / f"model-{rows_vocab}-{tok_vocab}"
    shutil.copytree(weights, out)
    for f in tok.iterdir():
        if f.name.startswith(("tokenizer", "special")):
            shutil.copy(f, out / f.name)
    return out


@pytest.mark.parametrize("rows,tok,needle", [(50000, 0, "does not belong"),
                                             (0, 600, "ids up to")],
                         ids=["50k-embedding-101-tokenizer", "tokenizer-beyond-embedding"])
def test_tokenizer_embedding_mismatch_is_a_config_error(tmp_path, rows, tok, needle):
    folder = _small_model(tmp_path, rows, tok)
    exp = prepare(compose(["model=hf", f"model.path={folder}", "num_samples=1", *QUIET]))
    with pytest.raises(SpecDiffTreeError, match=needle):
        execute(exp, tmp_path / "run")


def test_chat_without_a_chat_template_is_a_config_error(tmp_path):
    folder = _small_model(tmp_path, 0, 0)
    tc = json.loads((folder / "tokenizer_config.json").read_text())
    tc.pop("chat_template", None)
    (folder / "tokenizer_config.json").write_text(json.dumps(tc))
    exp = prepare(compose(["model=hf", f"model.path={folder}", "num_samples=2", "prompt.chat=true",
                           *QUIET]))
    with pytest.raises(SpecDiffTreeError, match="chat template"):
        execute(exp, tmp_path / "run")
    assert not (tmp_path / "run" / "results.jsonl").exists()


@pytest.mark.parametrize("case", ["missing", "no_config", "no_weights", "bad_json",
                                  "garbage_weights", "bad_dtype"])
def test_bad_model_folder_is_one_line(tmp_path, case):
    src = _small_model(tmp_path, 0, 0)
    d = tmp_path / "m"
    if case != "missing":
        shutil.copytree(src, d)
    if case == "no_config":
        (d / "config.json").unlink()
    elif case == "no_weights":
        (d / "model.safetensors").unlink()
    elif case == "bad_json":
        (d / "config.json").write_text("{not json")
    elif case == "garbage_weights":
        (d / "model.safetensors").write_bytes(b"\x00garbage" * 100)
    extra = ["model.dtype=int3"] if case == "bad_dtype" else []
    with pytest.raises(SpecDiffTreeError) as ei:
        prepare(compose(["model=hf", f"model.path={d}", "num_samples=1", *extra]))
    assert str(d) in str(ei.value) or "model.dtype" in str(ei.value)
    assert "\n" not in str(ei.value)


# --------------------------------------------------------------------- 3. data files

def _write_m4(root: Path, train_rows: list[list], test_rows: list[list], freq="Yearly"):
    root.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train", train_rows), ("test", test_rows)):
        width = max(len(r) for r in rows)
        lines = ['"V1"' + "".join(f',"V{i}"' for i in range(2, width + 1))]
        for r in rows:
            cells = [f'"{c}"' for c in r] + ['""'] * (width - len(r))
            lines.append(",".join(cells))
        (root / f"{freq}-{name}.csv").write_text("\n".join(lines) + "\n")


def _m4_ok(root: Path):
    train = [["Y1", *range(10, 30)], ["Y2", *range(50, 60)], ["Y3", *range(5, 40)]]
    test = [["Y1", *range(30, 36)], ["Y2", *range(60, 66)], ["Y3", *range(40, 46)]]
    _write_m4(root, train, test)


DATA_CASES = ["cut_mid_row", "cut_open_quote", "bad_number", "inf_value", "short_test_row",
              "ids_differ", "duplicate_id", "fewer_test_rows", "empty_train", "binary",
              "train_is_dir", "missing_root", "empty_id", "gap_in_row"]


@pytest.mark.parametrize("case", DATA_CASES)
def test_bad_m4_file_is_one_line(tmp_path, case):
    root = tmp_path / "m4"
    _m4_ok(root)
    train, test = root / "Yearly-train.csv", root / "Yearly-test.csv"
    text = train.read_text()
    if case == "cut_mid_row":
        train.write_text(text.rstrip("\n")[:-9])
    elif case == "cut_open_quote":
        train.write_text(text.rstrip("\n")[:-2])
    elif case == "bad_number":
        train.write_text(text.replace('"15"', '"1x5"'))
    elif case == "inf_value":
        train.write_text(text.replace('"15"', '"inf"'))
    elif case == "short_test_row":
        test.write_text(test.read_text().replace(',"35"', ""))
    elif case == "ids_differ":
        test.write_text(test.read_text().replace('"Y2"', '"Y9"'))
    elif case == "duplicate_id":
        train.write_text(text.replace('"Y3"', '"Y1"'))
        test.write_text(test.read_text().replace('"Y3"', '"Y1"'))
    elif case == "fewer_test_rows":
        test.write_text("\n".join(test.read_text().splitlines()[:-1]) + "\n")
    elif case == "empty_train":
        train.write_text("")
    elif case == "binary":
        train.write_bytes(b"\xff\xfe\x00\x81" * 50)
    elif case == "train_is_dir":
        train.unlink()
        train.mkdir()
    elif case == "missing_root":
        shutil.rmtree(root)
    elif case == "empty_id":
        train.write_text(text.replace('"Y2"', '""'))
    elif case == "gap_in_row":
        train.write_text(text.replace('"12","13"', '"12","","13"'))
    cfg = compose(["method=naive2", "dataset=m4_yearly", f"dataset.root={root}", *QUIET])
    with pytest.raises(SpecDiffTreeError) as ei:
        prepare(cfg)
    msg = str(ei.value)
    assert "\n" not in msg and ("Yearly" in msg or str(root) in msg), msg


def test_m4_file_without_final_newline_but_complete_loads(tmp_path):
    root = tmp_path / "m4"
    _m4_ok(root)
    train = root / "Yearly-train.csv"
    train.write_text(train.read_text().rstrip("\n"))
    exp = prepare(compose(["method=naive2", "dataset=m4_yearly", f"dataset.root={root}",
                           "num_samples=null"]))
    assert [len(s.x) for s in exp.samples] == [20, 10, 35]


# ------------------------------------------------------- 4. per-sample faults become rows

REWARDS = '''
import sys, numpy as np
def raises(forecasts, texts, valid, context):
    raise ValueError("broken reward")
def exits(forecasts, texts, valid, context):
    sys.exit(0)
def mutates(forecasts, texts, valid, context):
    context.full_history[:] = 0.0
    return np.zeros(len(texts))
def mutates_inplace_op(forecasts, texts, valid, context):
    context.history *= 2
    return np.zeros(len(texts))
def nan(forecasts, texts, valid, context):
    return np.full(len(texts), np.nan)
def wrong_shape(forecasts, texts, valid, context):
    return np.zeros(len(texts) + 3)
def not_numbers(forecasts, texts, valid, context):
    return ["a"] * len(texts)
def interrupts(forecasts, texts, valid, context):
    if context.sample.id == INTERRUPT_ID:
        raise KeyboardInterrupt
    return np.zeros(len(texts))
INTERRUPT_ID = None
'''


@pytest.fixture(scope="module")
def reward_module(tmp_path_factory):
    d = tmp_path_factory.mktemp("rewards")
    (d / "sdt_bad_rewards.py").write_text(REWARDS)
    (d / "sdt_syntax_error.py").write_text("def f(:\n    pass\n")
    (d / "sdt_import_raises.py").write_text("raise RuntimeError('no GPU here')\n")
    (d / "sdt_import_exits.py").write_text("import sys\nsys.exit(3)\n")
    sys.path.insert(0, str(d))
    yield "sdt_bad_rewards"
    sys.path.remove(str(d))


@pytest.fixture(scope="module")
def clean_naive2(tmp_path_factory):
    out = tmp_path_factory.mktemp("clean")
    return strip_time(execute(prepare(compose(["method=naive2", "num_samples=3", *QUIET])),
                              out / "run").to_dict("records"))


@pytest.mark.parametrize("fn,counter", [("raises", "reward_failures"), ("exits", "reward_failures"),
                                        ("mutates", "reward_failures"),
                                        ("mutates_inplace_op", "reward_failures"),
                                        ("nan", "reward_nonfinite_values"),
                                        ("wrong_shape", "reward_failures"),
                                        ("not_numbers", "reward_failures")])
def test_faulty_reward_is_counted_and_isolated(tmp_path, reward_module, clean_naive2, fn, counter):
    cfg = compose(["method=naive2", "num_samples=3", "reward=format", f"reward._target_={reward_module}.{fn}",
                   f"reward.name=bad_{fn}", *QUIET])
    df = execute(prepare(cfg), tmp_path / "run")
    assert len(df) == 3 and (df[counter] >= 1).all()
    # summary.csv counts them per method x dataset x seed, and the CLI's flags name them
    import pandas as pd

    from specdifftree.flags import summary_flags

    summary = pd.read_csv(tmp_path / "run" / "summary.csv").iloc[0]
    for key in ("reward_failures", "reward_nonfinite_values"):
        assert summary[key] == int(df[key].sum())
    assert summary[counter] >= 3
    assert any("reward raised" in f for f in summary_flags(tmp_path / "run"))
    # the dataset cache is untouched: Naive2 figures and history tails equal a clean run's
    again = strip_time(execute(prepare(compose(["method=naive2", "num_samples=3", *QUIET])),
                               tmp_path / "again").to_dict("records"))
    assert again == clean_naive2
    clean = pd.read_csv(tmp_path / "again" / "summary.csv").iloc[0]
    assert clean["reward_failures"] == 0 == clean["reward_nonfinite_values"]
    assert not any("reward raised" in f for f in summary_flags(tmp_path / "again"))
    for r, q in zip(df.to_dict("records"), clean_naive2):
        assert r["smape_naive2"] == q["smape_naive2"] and r["history_tail"] == q["history_tail"]


def test_series_arrays_are_read_only():
    exp = prepare(compose(["method=naive2", "num_samples=1"]))
    s = exp.samples[0]
    with pytest.raises(ValueError):
        s.x[0] = 1.0
    ctx = exp.task.reward_context(s)
    for a in (ctx.history, ctx.full_history, ctx.truth):
        with pytest.raises(ValueError):
            a[0] = 1.0


def test_reward_keyboard_interrupt_keeps_rows_written(tmp_path, reward_module):
    import importlib

    mod = importlib.import_module(reward_module)
    exp = prepare(compose(["method=naive2", "num_samples=4", "reward=format", f"reward._target_={reward_module}.interrupts",
                           "reward.name=interrupts", *QUIET]))
    mod.INTERRUPT_ID = exp.samples[2].id
    try:
        with pytest.raises(KeyboardInterrupt):
            execute(exp, tmp_path / "run")
    finally:
        mod.INTERRUPT_ID = None
    assert [r["series_id"] for r in rows_of(tmp_path / "run")] == [s.id for s in exp.samples[:2]]
    df = execute(prepare(compose(["method=naive2", "num_samples=4", *QUIET,
                                  "reward=format", f"reward._target_={reward_module}.interrupts",
                                  "reward.name=interrupts"])), tmp_path / "run")
    assert list(df["series_id"]) == [s.id for s in exp.samples]


@pytest.mark.parametrize("module,needle", [("sdt_syntax_error", "syntax error"),
                                           ("sdt_import_raises", "RuntimeError"),
                                           ("sdt_import_exits", "SystemExit"),
                                           ("sdt_no_such_module", "cannot import")])
def test_broken_reward_module_is_one_line(reward_module, module, needle):
    with pytest.raises(SpecDiffTreeError) as ei:
        prepare(compose(["method=naive2", "reward=format", f"reward._target_={module}.f",
                         "reward.name=x"]))
    assert needle in str(ei.value) and "\n" not in str(ei.value)


def _odd_series_root(tmp_path: Path) -> Path:
    root = tmp_path / "m4"
    train = [["Y1", *range(10, 30)], ["C1", *([7.0] * 12)], ["O1", 5.0], ["Y2", *range(3, 20)]]
    test = [["Y1", *range(30, 36)], ["C1", 7, 7, 8, 7, 7, 7], ["O1", *range(6)],
            ["Y2", *range(20, 26)]]
    _write_m4(root, train, test)
    return root


@pytest.mark.parametrize("method", ["naive2", "greedy"])
def test_constant_and_one_value_series_follow_the_mase_rule(tmp_path, method):
    """MASE undefined (constant history with an inexact forecast: zero scale; 1-value history: no
    scale) leaves the series out of both MASE means; sMAPE keeps it; no row is lost."""
    root = _odd_series_root(tmp_path)
    df = execute(prepare(compose([f"method={method}", "model=tiny_random", "dataset=m4_yearly",
                                  f"dataset.root={root}", "num_samples=null", "max_new_tokens=8",
                                  "max_new_tokens_check=false",
                                  *QUIET])), tmp_path / "run")
    assert len(df) == 4
    rows = {r["series_id"]: r for r in df.to_dict("records")}
    assert rows["O1"]["mase"] is None or np.isnan(rows["O1"]["mase"])
    assert rows["O1"]["smape"] is not None
    if method == "naive2":  # a plain forecast of a 1-value history is scored, not an error
        assert all(r["error"] is None for r in rows.values()), [r["error"] for r in rows.values()]
    import pandas as pd

    s = pd.read_csv(tmp_path / "run" / "summary.csv").iloc[0]
    ok = [r for r in rows.values() if r["mase"] is not None and np.isfinite(r["mase"])
          and r["mase_naive2"] is not None and np.isfinite(r["mase_naive2"])]
    assert s["mase_undefined"] == 4 - len(ok) >= 1
    assert s["mase"] == pytest.approx(np.mean([r["mase"] for r in ok]))
    assert s["owa"] == pytest.approx(0.5 * (s["smape"] / np.mean([r["smape_naive2"] for r in rows.values()])
                                            + s["mase"] / np.mean([r["mase_naive2"] for r in ok])))


# ----------------------------------------------------------- 5. results files and run dirs

@pytest.fixture()
def naive2_run(tmp_path):
    cfg = compose(["method=naive2", "num_samples=8", *QUIET])
    ref = execute(prepare(cfg), tmp_path / "ref")
    return cfg, strip_time(ref.to_dict("records")), tmp_path


GARBAGE = {
    "not_json": b"{this is not json\n",
    "array": b"[1, 2, 3]\n",
    "number": b"42\n",
    "string": b"\"row\"\n",
    "null": b"null\n",
    "object_not_row": b"{\"a\": 1}\n",
    "binary": b"\xff\xfe\x00garbage\n",
}


@pytest.mark.parametrize("kind", sorted(GARBAGE))
def test_garbage_line_mid_file_is_moved_aside_and_nothing_is_lost(naive2_run, kind):
    cfg, ref, tmp = naive2_run
    run = tmp / "run"
    execute(prepare(cfg), run)
    lines = (run / "results.jsonl").read_bytes().splitlines(keepends=True)
    (run / "results.jsonl").write_bytes(b"".join(lines[:4]) + GARBAGE[kind] + b"".join(lines[4:]))
    # the report reads all 8 rows and names the bad line
    from specdifftree.report import build_report

    res = build_report(run, tmp / "rep", figures=False)
    assert len(res["collected"].rows) == 8
    assert "unreadable" in res["report_md"].read_text()
    # resume keeps the 4 rows after it (none recomputed), moves the line to the side file
    df = execute(prepare(cfg), run)
    assert strip_time(df.to_dict("records")) == ref
    assert (run / "results.jsonl").read_bytes() == b"".join(lines)
    side = [json.loads(x) for x in (run / REJECTED_FILE).read_text().splitlines()]
    assert len(side) == 1 and side[0]["line"] == 5


def test_torn_tail_and_duplicates_are_moved_aside(naive2_run):
    cfg, ref, tmp = naive2_run
    run = tmp / "run"
    execute(prepare(cfg), run)
    lines = (run / "results.jsonl").read_bytes().splitlines(keepends=True)
    (run / "results.jsonl").write_bytes(b"".join(lines[:5]) + lines[1] + lines[5][:20])
    df = execute(prepare(cfg), run)
    assert strip_time(df.to_dict("records")) == ref
    reasons = [json.loads(x)["reason"] for x in (run / REJECTED_FILE).read_text().splitlines()]
    assert any("duplicate" in r for r in reasons) and any("torn" in r for r in reasons)
    assert len(scan_results(run).rows) == 8 and not scan_results(run).bad


@pytest.mark.parametrize("change", ["model=tiny_random", "reward=format", "budget.rollouts=8",
                                    "num_samples=5", "dataset.subset_seed=1", "seed=1",
                                    "prompt.decimals=3"])
def test_other_config_in_the_same_dir_is_refused_naming_the_keys(tmp_path, change):
    base = ["method=greedy", "model=tiny_tslm", "num_samples=2", "max_new_tokens=6",
            "max_new_tokens_check=false", *QUIET]
    run = tmp_path / "run"
    execute(prepare(compose(base)), run)
    before = (run / "results.jsonl").read_bytes()
    with pytest.raises(SpecDiffTreeError) as ei:
        execute(prepare(compose([*base, change])), run)
    key = change.split("=")[0].replace("model", "model.name").replace("reward", "reward.name")
    assert key in str(ei.value) and "resume=false" in str(ei.value)
    assert (run / "results.jsonl").read_bytes() == before  # nothing mixed in
    if change != "reward=format":
        return
    # resume=false: a clean new dir; the old one stays as it was
    df = execute(prepare(compose([*base, change, "resume=false"])), run)
    assert df.attrs["run_dir"] != str(run) and Path(df.attrs["run_dir"]).name.startswith("run-")
    assert (run / "results.jsonl").read_bytes() == before


def test_same_config_resumes_without_recomputing(naive2_run):
    cfg, ref, tmp = naive2_run
    run = tmp / "run"
    execute(prepare(cfg), run)
    before = (run / "results.jsonl").read_bytes()
    df = execute(prepare(cfg), run)
    assert (run / "results.jsonl").read_bytes() == before
    assert strip_time(df.to_dict("records")) == ref
    prov = json.loads((run / "run.json").read_text())
    assert len(prov["runs"]) == 2 and prov["runs"][1]["resumed"] is True
    for key in ("package_version", "mlx", "mlx_lm", "device", "series_sha256", "python"):
        assert key in prov["provenance"], key


def test_results_without_fingerprint_are_not_reused(naive2_run):
    cfg, _, tmp = naive2_run
    run = tmp / "legacy"
    execute(prepare(cfg), run)
    (run / "run.json").unlink()
    with pytest.raises(SpecDiffTreeError, match="cannot be checked"):
        execute(prepare(cfg), run)
    (run / "run.json").write_text("{broken")
    with pytest.raises(SpecDiffTreeError, match="cannot be checked"):
        execute(prepare(cfg), run)


@pytest.mark.parametrize("case", ["results_is_dir", "results_is_device", "run_dir_is_file"])
def test_unwritable_results_is_one_line(tmp_path, case):
    cfg = compose(["method=naive2", "num_samples=2", *QUIET])
    run = tmp_path / "run"
    if case == "results_is_dir":
        (run / "results.jsonl").mkdir(parents=True)
    elif case == "results_is_device":
        run.mkdir()
        (run / "results.jsonl").symlink_to("/dev/null")
    else:
        run.write_text("x")
    with pytest.raises(SpecDiffTreeError) as ei:
        execute(prepare(cfg), run)
    assert str(run) in str(ei.value) and "\n" not in str(ei.value)


def _full_disk_child(run_dir: str, out: str, limit: int) -> None:
    import resource

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG
    cfg = compose(["method=naive2", "num_samples=8", *QUIET])
    exp = prepare(cfg)
    hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        execute(exp, run_dir)
        msg = "no error"
    except SpecDiffTreeError as exc:
        msg = str(exc)
    resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
    Path(out).write_text(msg)
    os._exit(0)


def test_full_disk_mid_run_is_one_line_and_keeps_rows(naive2_run):
    """Writes fail once the file reaches 6 kB (RLIMIT_FSIZE: what a full disk looks like to the
    writer); the run stops with one line, the rows written stay, and a re-run completes them."""
    cfg, ref, tmp = naive2_run
    run = tmp / "run"
    ctx = multiprocessing.get_context("fork")
    p = ctx.Process(target=_full_disk_child, args=(str(run), str(tmp / "msg"), 6000))
    p.start()
    p.join(120)
    msg = (tmp / "msg").read_text()
    assert "file size limit" in msg and str(run) in msg and "\n" not in msg
    n = len(scan_results(run).rows)
    assert 0 < n < 8
    df = execute(prepare(cfg), run)
    assert strip_time(df.to_dict("records")) == ref


def test_run_returns_exactly_this_configs_rows(tmp_path):
    """A notebook's greedy and naive2 runs: each DataFrame holds its own rows only."""
    import specdifftree as sdt

    g = sdt.run(sdt.compose(["method=greedy", "num_samples=2", "max_new_tokens=6",
                             "max_new_tokens_check=false", *QUIET]),
                tmp_path / "g")
    n = sdt.run(sdt.compose(["method=naive2", "num_samples=2", *QUIET]), tmp_path / "n")
    assert list(g["method"]) == ["greedy"] * 2 and list(n["method"]) == ["naive2"] * 2
    assert list(g["series_id"]) == list(n["series_id"])


def test_stale_lock_of_a_dead_process_does_not_block(naive2_run):
    cfg, ref, tmp = naive2_run
    run = tmp / "run"
    run.mkdir()
    (run / ".lock").write_text(json.dumps({"pid": 999999, "host": "gone"}) + "\n")
    df = execute(prepare(cfg), run)
    assert strip_time(df.to_dict("records")) == ref


def test_seeds_evaluate_the_same_series():
    ids = {seed: [s.id for s in prepare(compose(["method=naive2", "num_samples=5",
                                                 f"seed={seed}"])).samples] for seed in (0, 1, 2)}
    assert ids[0] == ids[1] == ids[2]
    other = [s.id for s in prepare(compose(["method=naive2", "num_samples=5",
                                            "dataset.subset_seed=1"])).samples]
    assert other != ids[0]


# --------------------------------------------------- 6. processes: locks, signals, kill -9

def test_second_run_into_a_locked_dir_is_one_line(tmp_path):
    from specdifftree.rundir import RunLock

    run = tmp_path / "run"
    run.mkdir()
    with RunLock(run):  # held by this (live) process
        out = run_cli("method=naive2", "num_samples=2", f"hydra.run.dir={run}")
    assert out.returncode == 2, out.stderr
    err = [ln for ln in out.stderr.splitlines() if ln.startswith("specdifftree:")]
    assert len(err) == 1 and "in use by another run" in err[0] and f"pid {os.getpid()}" in err[0]
    assert "Traceback" not in out.stderr and not (run / "results.jsonl").exists()


def test_ctrl_c_keeps_rows_and_says_how_to_resume(tmp_path):
    run = tmp_path / "run"
    e = dict(os.environ, PYTHONPATH=str(REPO))
    p = subprocess.Popen([sys.executable, "-m", "specdifftree", "method=naive2",
                          "num_samples=null", "output.progress=false", f"hydra.run.dir={run}"],
                         cwd=REPO, env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not ((run / "results.jsonl").exists()
                                          and (run / "results.jsonl").stat().st_size > 0):
        time.sleep(0.05)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err[-2000:]
    lines = [ln for ln in err.splitlines() if ln.startswith("specdifftree:")]
    assert len(lines) == 1 and f"hydra.run.dir={run}" in lines[0] and "Traceback" not in err
    scan = scan_results(run)
    assert 0 < len(scan.rows) < 1428 and not scan.bad
    last = json.loads((run / "run.json").read_text())["runs"][-1]
    assert last["status"] == "interrupted" and last["rows_written"] == len(scan.rows)


def test_ctrl_c_in_a_sweep_is_one_line(tmp_path):
    e = dict(os.environ, PYTHONPATH=str(REPO))
    p = subprocess.Popen([sys.executable, "-m", "specdifftree", "--multirun",
                          "method=naive2,seasonal_naive", "num_samples=null",
                          "output.progress=false", f"hydra.sweep.dir={tmp_path}"],
                         cwd=REPO, env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    first = tmp_path / "0" / "results.jsonl"
    while time.time() < deadline and not (first.exists() and first.stat().st_size > 0):
        time.sleep(0.05)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err[-2000:]
    lines = [ln for ln in err.splitlines() if ln.startswith("specdifftree:")]
    assert len(lines) == 1 and "hydra.sweep.dir=" in lines[0] and "Traceback" not in err
    assert f"hydra.sweep.dir={tmp_path} to resume" in lines[0], lines[0]  # the interrupted sweep's


def _child(run_dir: str, crash_at: str, overrides: list[str]) -> None:
    os.environ["SPECDIFFTREE_CRASH_AT"] = crash_at
    execute(prepare(compose(overrides)), run_dir)
    os._exit(0)


CRASH_POINTS = ["row:1", "row:5", "torn:3", "torn:8"]


@pytest.mark.parametrize("crash_at", CRASH_POINTS)
def test_kill_9_then_rerun_equals_an_uninterrupted_run(naive2_run, crash_at):
    cfg, ref, tmp = naive2_run
    overrides = ["method=naive2", "num_samples=8", *QUIET]
    ctx = multiprocessing.get_context("fork")
    p = ctx.Process(target=_child, args=(str(tmp / "run"), crash_at, overrides))
    p.start()
    p.join(120)
    assert p.exitcode == -signal.SIGKILL
    df = execute(prepare(cfg), tmp / "run")
    assert strip_time(df.to_dict("records")) == ref
    assert strip_time(rows_of(tmp / "run")) == ref


@pytest.mark.parametrize("crash_at", ["rewrite-mid@results.jsonl:1", "rewrite@results.jsonl:1",
                                      "rewrite-mid@run.json:1", "rewrite@run.json:2"])
def test_kill_9_during_the_resume_rewrite_loses_nothing(naive2_run, crash_at):
    """A resume that must rewrite results.jsonl (a garbage line) is killed mid-rewrite (of the
    results or of run.json): the old file is intact, the killed rewrite's temporary file is
    never read as results and is removed at the next start, and the next run gives the
    uninterrupted result."""
    from specdifftree.report import build_report

    cfg, ref, tmp = naive2_run
    run = tmp / "run"
    execute(prepare(cfg), run)
    lines = (run / "results.jsonl").read_bytes().splitlines(keepends=True)
    damaged = b"".join(lines[:3]) + b"garbage\n" + b"".join(lines[3:6])
    (run / "results.jsonl").write_bytes(damaged)
    ctx = multiprocessing.get_context("fork")
    p = ctx.Process(target=_child, args=(str(run), crash_at,
                                         ["method=naive2", "num_samples=8", *QUIET]))
    p.start()
    p.join(120)
    assert p.exitcode == -signal.SIGKILL
    # the old file or the new one, whole: the results rewrite is untouched by a killed rewrite
    # of itself, and done before run.json's second rewrite (the start record's rows_reused)
    whole = b"".join(lines[:6]) if crash_at == "rewrite@run.json:2" else damaged
    assert (run / "results.jsonl").read_bytes() == whole
    name = crash_at.split("@")[1].split(":")[0]
    left = sorted(x.name for x in run.iterdir() if ".tmp-" in x.name)
    assert left == [f".{name}.tmp-{p.pid}"]
    rep = build_report(run, tmp / "rep", figures=False)  # reads the 6 rows, not the temporary
    assert len(rep["collected"].rows) == 6
    df = execute(prepare(cfg), run)
    assert strip_time(df.to_dict("records")) == ref
    assert strip_time(rows_of(run)) == ref
    assert not [x for x in run.iterdir() if ".tmp-" in x.name]
    runs = json.loads((run / "run.json").read_text())["runs"]
    assert runs[-1]["stale_temporaries_removed"] == left


@pytest.mark.parametrize("crash_at", ["row:1", "torn:2"])
def test_kill_9_of_the_cli_with_a_model_then_rerun_is_equal(tmp_path, crash_at):
    args = ["method=best_of_n", "budget.rollouts=2", "model=tiny_random", "num_samples=3",
            "max_new_tokens=6", "max_new_tokens_check=false", "output.progress=false"]
    killed = run_cli(*args, f"hydra.run.dir={tmp_path / 'run'}",
                     env={"SPECDIFFTREE_CRASH_AT": crash_at})
    assert killed.returncode == -signal.SIGKILL
    again = execute(prepare(compose(args)), tmp_path / "run")  # the re-run (in-process)
    ref = execute(prepare(compose(args)), tmp_path / "ref")    # an uninterrupted run
    assert strip_time(again.to_dict("records")) == strip_time(ref.to_dict("records"))
    assert strip_time(rows_of(tmp_path / "run")) == strip_time(rows_of(tmp_path / "ref"))


def test_sweep_skips_a_complete_job_only_when_its_config_is_the_same(naive2_run):
    """The launcher's skip test: same rows expected but another config (e.g. an edited yaml
    default) is not 'complete' — the job runs and the runner refuses the mixed dir."""
    from specdifftree.launcher.jobinfo import recorded_config_matches

    cfg, _, tmp = naive2_run
    run = tmp / "run"
    execute(prepare(cfg), run)
    assert recorded_config_matches(run, cfg)
    assert not recorded_config_matches(run, compose(["method=naive2", "num_samples=8",
                                                     "prompt.decimals=3"]))
    assert recorded_config_matches(run, compose(["method=naive2", "num_samples=8",
                                                 "output.progress=true"]))  # display only
    (run / "run.json").unlink()
    assert not recorded_config_matches(run, cfg)


# ------------------------------------------------------ 7. what a run dir records of each start

def test_a_refused_rerun_leaves_the_dirs_config_copy_alone(tmp_path):
    """Through the CLI: a re-run of another config into a run dir is refused with one line, and
    the dir's `.hydra` copy (written only after the fingerprint check) still names its own
    config."""
    run = tmp_path / "run"
    first = run_cli("method=naive2", "num_samples=2", *QUIET, f"hydra.run.dir={run}")
    assert first.returncode == 0, first.stderr[-2000:]
    copy = {p.name: p.read_bytes() for p in (run / ".hydra").iterdir()}
    assert set(copy) == {"config.yaml", "hydra.yaml", "overrides.yaml"}
    assert b"num_samples=2" in copy["overrides.yaml"]
    results = (run / "results.jsonl").read_bytes()
    other = run_cli("method=naive2", "num_samples=2", "seed=1", *QUIET, f"hydra.run.dir={run}")
    assert other.returncode == 2
    err = [ln for ln in other.stderr.splitlines() if ln.startswith("specdifftree:")]
    assert len(err) == 1 and "seed (0 → 1)" in err[0] and "Traceback" not in other.stderr
    assert {p.name: p.read_bytes() for p in (run / ".hydra").iterdir()} == copy
    assert (run / "results.jsonl").read_bytes() == results
    # the same config resumes, and its copy is written again
    again = run_cli("method=naive2", "num_samples=2", *QUIET, f"hydra.run.dir={run}")
    assert again.returncode == 0, again.stderr[-2000:]
    assert (run / ".hydra" / "overrides.yaml").read_bytes() == copy["overrides.yaml"]


def test_each_start_of_a_run_records_its_provenance(tmp_path):
    """kill -9 after 2 rows, then a re-run: run.json has one entry per start with its time, host,
    pid, git commit, argv and the rows it reused, wrote and how it ended."""
    run = tmp_path / "run"
    args = ["method=naive2", "num_samples=6", *QUIET, f"hydra.run.dir={run}"]
    killed = run_cli(*args, env={"SPECDIFFTREE_CRASH_AT": "row:2"})
    assert killed.returncode == -signal.SIGKILL
    again = run_cli(*args, "output.print_summary=false")
    assert again.returncode == 0, again.stderr[-2000:]
    data = json.loads((run / "run.json").read_text())
    first, second = data["runs"]
    for r in (first, second):
        for key in ("started_at", "host", "pid", "git_commit", "package_version", "argv"):
            assert key in r, key
        assert r["git_commit"] == data["provenance"]["git_commit"]
        assert "num_samples=6" in r["argv"]
    assert first["resumed"] is False and first["rows_reused"] == 0
    assert "finished_at" not in first and "status" not in first  # killed: it never ended
    assert second["resumed"] is True and second["rows_reused"] == 2
    assert second["rows_written"] == 4 and second["status"] == "completed"
    assert "output.print_summary=false" in second["argv"] and second["pid"] != first["pid"]
    if (REPO / ".git").exists():
        assert first["git_commit"] and len(first["git_commit"].split("+")[0]) == 40
