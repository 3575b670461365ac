"""M4 caption task: loading the OpenTSLM layout, prompting, scoring, the caption reward."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from specdifftree.errors import ConfigError, DataError
from specdifftree.rewards import build_reward
from specdifftree.metrics.text import lcs_length, rouge_l_f1, token_f1, tokenize
from specdifftree.config import compose
from specdifftree.tasks.build import build_task
from specdifftree.tasks.caption_data import CaptionSource
from specdifftree.tasks.captions import CaptionTask
from specdifftree.tasks.sources import load_series as load_caption_samples

ROOT = Path(__file__).resolve().parents[1]

SERIES = {
    "M1": [10.0, 12.0, 14.0, 13.0, 15.0, 17.0, 16.0, 18.0],
    "M2": [5.0, 3.0, 5.0, 3.0, 5.0, 3.0],
    "M3": [1.0, 1.0, 1.0, 1.0],  # constant: std 0
    "M4": [100.0, 90.0, 80.0],   # has no caption
}
CAPTIONS = {
    "M1": "The series shows an upward trend, with small dips; values rise from 10 to 18.",
    "M2": 'An alternating, "zig-zag" pattern:\nit oscillates between 3 and 5.',
    "M3": "A flat, constant series at 1.",
    "M9": "A caption whose series is missing.",
}


def write_fixture(root: Path, freq: str = "Monthly", series=SERIES, captions=CAPTIONS,
                  series_header=("id", "series"), caption_header=("id", "caption")):
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"m4_series_{freq}.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(series_header)
        for k, v in series.items():
            w.writerow([k, v if isinstance(v, str) else json.dumps(v)])
    with open(root / f"m4_captions_{freq}.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(caption_header)
        for k, v in captions.items():
            w.writerow([k, v])
    return root


@pytest.fixture
def root(tmp_path):
    return write_fixture(tmp_path / "m4_captions")


def dataset_cfg(root, **kw):
    """The composed dataset node of dataset=m4_captions with these keys set."""
    overrides = [f"{k}={'null' if v is None else str(v).lower() if isinstance(v, bool) else v}"
                 for k, v in {"root": root, **kw}.items()]
    return compose(["dataset=m4_captions", *(f"dataset.{o}" for o in overrides)]).dataset


def test_config_file_keys():
    cfg = OmegaConf.load(ROOT / "specdifftree" / "conf" / "dataset" / "m4_captions.yaml")
    assert cfg.name == "m4_captions" and cfg._target_.endswith("CaptionSource") and "root" in cfg
    assert isinstance(build_task(compose(["dataset=m4_captions"]).dataset), CaptionTask)
    assert (ROOT / "specdifftree" / "conf" / "dataset" / "m4_captions.yaml").read_text().startswith("# @package dataset")


def test_load_joins_series_and_captions(root):
    samples = load_caption_samples(dataset_cfg(root))
    assert [s.id for s in samples] == ["M1", "M2", "M3"]
    assert samples[0].series.tolist() == SERIES["M1"]
    assert samples[1].caption == CAPTIONS["M2"]  # commas, quotes and a newline survive
    assert all(s.frequency == "Monthly" for s in samples)
    assert [s.id for s in load_caption_samples(dataset_cfg(root, limit=2))] == ["M1", "M2"]
    assert len(load_caption_samples(dataset_cfg(root, frequency="monthly"))) == 3


def test_load_accepts_capitalised_columns_and_explicit_file_names(tmp_path):
    r = write_fixture(tmp_path / "d", freq="Weekly", series_header=("ID", "Series"),
                      caption_header=("Id", "Caption"))
    (r / "m4_series_Weekly.csv").rename(r / "s.csv")
    samples = CaptionSource(root=str(r), series_file="s.csv",
                            captions_file="m4_captions_Weekly.csv").load()
    assert [s.id for s in samples] == ["M1", "M2", "M3"]


@pytest.mark.parametrize("mutate,err,match", [
    (lambda r: (r / "m4_series_Monthly.csv").unlink(), DataError, "m4_series_Monthly.csv not found"),
    (lambda r: (r / "m4_captions_Monthly.csv").unlink(), DataError, "m4_captions_Monthly.csv not found"),
    (lambda r: write_fixture(r, series={"M1": "[1, 2, oops]"}), DataError, "line 2.*JSON"),
    (lambda r: write_fixture(r, series={"M1": "[]"}), DataError, "non-empty"),
    (lambda r: write_fixture(r, series={"M1": "[1, NaN]"}), DataError, "finite"),
    (lambda r: write_fixture(r, series={"M1": "[[1, 2], [3, 4]]"}), DataError, "flat"),
    (lambda r: write_fixture(r, series={"M1": [1.0], "": [2.0]}), DataError, "empty id"),
    (lambda r: write_fixture(r, captions={"M1": "  "}), DataError, "empty caption"),
    (lambda r: write_fixture(r, series_header=("id", "values")), DataError, "missing column.*series"),
    (lambda r: write_fixture(r, captions={"X1": "nothing matches"}), DataError, "ids do not match"),
])
def test_load_errors(root, mutate, err, match):
    mutate(root)
    with pytest.raises(err, match=match):
        load_caption_samples(dataset_cfg(root))


def test_load_config_errors(root, tmp_path):
    with pytest.raises(ConfigError, match="frequency"):
        load_caption_samples(dataset_cfg(root, frequency="Fortnightly"))
    with pytest.raises(ConfigError, match="limit"):
        load_caption_samples(dataset_cfg(root, limit=0))
    with pytest.raises(ConfigError, match="root"):
        CaptionSource(root="", frequency="Monthly")
    with pytest.raises(DataError, match="not a folder"):
        CaptionSource(root=str(tmp_path / "nope"), frequency="Monthly").load()
    with pytest.raises(ConfigError, match=r"dataset\.limt is not a setting of CaptionSource; did you mean dataset\.limit\?"):
        load_caption_samples({**OmegaConf.to_container(dataset_cfg(root)), "limt": 2})


def test_prompt_states_mean_and_std_and_asks_for_a_caption(root):
    s = load_caption_samples(dataset_cfg(root))[0]
    task = build_task(dataset_cfg(root))
    p = task.prompt_text(s)
    x = np.array(SERIES["M1"])
    assert f"{x.mean():.6g}" in p and f"{x.std():.6g}" in p
    assert "detailed caption" in p and "M4 Monthly" in p and p.endswith("Caption:")
    values = re.search(r"Normalised values: (.*)\n", p).group(1)
    z = np.array([float(v) for v in values.split(", ")])
    assert len(z) == len(x)
    np.testing.assert_allclose(z, (x - x.mean()) / x.std(), atol=0.005)
    # constant series: std 0 counts as 1, no division by zero
    p3 = task.prompt_text(load_caption_samples(dataset_cfg(root))[2])
    assert "0.00, 0.00, 0.00, 0.00" in p3
    # context_length keeps the last values
    short = build_task(dataset_cfg(root, context_length=3))
    assert "of 3 values" in short.prompt_text(s)
    with pytest.raises(ValueError, match="chat template"):
        build_task(dataset_cfg(root, chat=True)).prompt_text(s)


def test_evaluate_and_reward_context(root):
    s = load_caption_samples(dataset_cfg(root))[0]
    task = build_task(dataset_cfg(root))
    row = task.evaluate("  " + s.caption + "\n", s)
    assert row == {"valid": True, "caption_rougeL_f1": 1.0, "caption_token_f1": 1.0,
                   "caption": s.caption, "reference": s.caption}
    empty = task.evaluate("   ", s)
    assert empty["valid"] is False and empty["caption_rougeL_f1"] == 0.0 and empty["caption_token_f1"] == 0.0
    part = task.evaluate("an upward trend with dips", s)
    assert 0 < part["caption_rougeL_f1"] < 1 and 0 < part["caption_token_f1"] < 1
    c = task.reward_context(s)
    assert c.extra["reference"] == s.caption and c.truth is None and c.horizon == 0
    f, v = task.reward_inputs(["a", " ", ""], s)
    assert f.shape == (3, 0) and v.tolist() == [1.0, 0.0, 0.0]


def test_caption_similarity_reward(root):
    s = load_caption_samples(dataset_cfg(root))[0]
    task = build_task(dataset_cfg(root))
    cfg = OmegaConf.load(ROOT / "specdifftree" / "conf" / "reward" / "caption_similarity.yaml")
    rew = build_reward(cfg)
    assert rew.oracle and "oracle" in rew.name
    texts = [s.caption, "The series shows an upward trend.", "Completely unrelated words.", ""]
    f, v = task.reward_inputs(texts, s)
    r = rew(f, texts, v, task.reward_context(s))
    assert r[0] == 1.0 and r[0] > r[1] > r[2] >= r[3] == 0.0
    np.testing.assert_allclose(r, [task.evaluate(t, s)["caption_rougeL_f1"] for t in texts])
    cfg.metric = "token_f1"
    r2 = build_reward(cfg)(f, texts, v, task.reward_context(s))
    np.testing.assert_allclose(r2, [task.evaluate(t, s)["caption_token_f1"] for t in texts])
    cfg.metric = "bleu"
    with pytest.raises(ConfigError, match="metric"):
        build_reward(cfg)
    # a forecasting context has no reference: a clear config error, not a silent fallback
    from specdifftree.rewards import RewardContext
    with pytest.raises(ConfigError, match="reference"):
        build_reward(OmegaConf.load(ROOT / "specdifftree" / "conf" / "reward" / "caption_similarity.yaml"))(
            np.zeros((1, 3)), ["x"], np.ones(1),
            RewardContext(history=np.ones(3), full_history=np.ones(3), horizon=3, period=1))
    # the spectral and format rewards stay defined on captions (no numeric output)
    for name in ("spectral", "format"):
        out = build_reward(OmegaConf.load(ROOT / "specdifftree" / "conf" / "reward" / f"{name}.yaml"))(
            f, texts, v, task.reward_context(s))
        assert np.isfinite(out).all()


# ---------------------------------------------------------------- similarity metrics


def lcs_dp(a, b):
    t = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            t[i][j] = t[i - 1][j - 1] + 1 if a[i - 1] == b[j - 1] else max(t[i - 1][j], t[i][j - 1])
    return t[-1][-1]


@settings(max_examples=200, deadline=None)
@given(a=st.lists(st.sampled_from("abcde"), max_size=40), b=st.lists(st.sampled_from("abcde"), max_size=70))
def test_bit_parallel_lcs_equals_dynamic_programming(a, b):
    assert lcs_length(a, b) == lcs_dp(a, b)


def test_rouge_and_token_f1_known_values():
    assert tokenize("Rises 10%, then FALLS!") == ["rises", "10", "then", "falls"]
    # LCS("the cat sat on the mat", "the cat is on the mat") = 5 -> P = R = 5/6
    assert rouge_l_f1("the cat sat on the mat", "the cat is on the mat") == pytest.approx(5 / 6)
    # order matters for ROUGE-L but not for token F1
    assert rouge_l_f1("mat the on", "on the mat") == pytest.approx(1 / 3)
    assert token_f1("mat the on", "on the mat") == 1.0
    # multiset overlap: "a a b" vs "a b b" -> overlap 2, P = R = 2/3
    assert token_f1("a a b", "a b b") == pytest.approx(2 / 3)
    assert rouge_l_f1("", "x") == 0.0 and token_f1("x", "") == 0.0


@settings(max_examples=100, deadline=None)
@given(a=st.text(alphabet="ab c.", max_size=30), b=st.text(alphabet="ab c.", max_size=30))
def test_similarities_are_symmetric_and_bounded(a, b):
    for fn in (rouge_l_f1, token_f1):
        v = fn(a, b)
        assert 0.0 <= v <= 1.0 and v == pytest.approx(fn(b, a))
        if tokenize(a) and tokenize(a) == tokenize(b):
            assert v == pytest.approx(1.0)


@pytest.mark.parametrize("overrides,match", [
    (["method=naive2"], r"method=naive2 forecasts numbers; the caption task needs a language-model method"),
    (["method=best_of_n", "method.answer=median"], r"method.answer=median: the caption task scores one caption"),
])
def test_the_task_refuses_what_it_cannot_score(root, overrides, match):
    """The task decides which methods and answer rules it scores (one ConfigError line), before
    any model is loaded."""
    from specdifftree.runner import prepare

    cfg = compose(["dataset=m4_captions", f"dataset.root={root}", "reward=caption_similarity",
                   "model=hf", "model.path=/no/such/model", *overrides])
    with pytest.raises(ConfigError, match=match):
        prepare(cfg)
