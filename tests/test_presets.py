"""Every shipped method config and sweep preset composes and runs with the default model
(tiny_tslm) at a valid rate of at least 90%: one sample each, small budgets."""

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from specdifftree.config import compose
from specdifftree.flags import MIN_VALID_RATE
from specdifftree.runner import execute, prepare

CONF = Path(__file__).resolve().parent.parent / "specdifftree" / "conf"
METHODS = sorted(p.stem for p in (CONF / "method").glob("*.yaml"))
SWEEPS = sorted(p.stem for p in (CONF / "sweep").glob("*.yaml"))
CHEAP = ["num_samples=1", "budget.rollouts=2", "budget.tokens=null", "output.progress=false"]


def _valid_rate(overrides, run_dir) -> float:
    df = execute(prepare(compose(overrides)), run_dir)
    assert len(df) == 1 and df["error"].isna().all(), df["error"].tolist()
    return float(df["valid"].mean())


@pytest.mark.parametrize("method", METHODS)
def test_method_config_runs_valid_with_the_default_model(tmp_path, method):
    # m3_yearly (h = 6) keeps it cheap; the sweep presets below run the default m3_monthly
    rate = _valid_rate([f"method={method}", "dataset=m3_yearly", *CHEAP], tmp_path / method)
    assert rate >= MIN_VALID_RATE


@pytest.mark.parametrize("sweep", SWEEPS)
def test_sweep_preset_runs_valid_with_the_default_model(tmp_path, sweep):
    cfg = compose([f"+sweep={sweep}"], return_hydra_config=True)
    params = OmegaConf.to_container(cfg.hydra.sweeper.params)
    # the preset must not cut continuations below the horizon: null derives it per dataset
    assert cfg.max_new_tokens is None, f"{sweep} fixes max_new_tokens={cfg.max_new_tokens}"
    first = [f"{k}={str(v).split(',')[0]}" for k, v in params.items()
             if k not in ("budget.tokens",)]
    rate = _valid_rate([f"+sweep={sweep}", *first, *CHEAP], tmp_path / sweep)
    assert rate >= MIN_VALID_RATE
