"""Classical baselines through statsforecast, following M4's benchmark definitions."""

import numpy as np
import pytest

from conftest import m4_files
from specdifftree.baselines import SES, Comb, Damped, Holt, Theta, deseasonalise
from specdifftree.metrics.m4 import smape
from specdifftree.metrics.naive2 import naive2


def test_deseasonalising_is_naive2s_decomposition():
    rng = np.random.default_rng(0)
    m, n, h = 12, 96, 18
    season = 1 + 0.4 * np.sin(2 * np.pi * np.arange(n + h) / m)
    x = (100 + rng.normal(0, 1, n)) * season[:n]
    des, si = deseasonalise(x, m, h)
    assert not np.allclose(si, 1.0)
    # a naive forecast of the adjusted series, reseasonalised, is exactly Naive2
    np.testing.assert_allclose(des[-1] * si, naive2(x, h, m), rtol=1e-12)
    flat, ones = deseasonalise(x, 1, h)
    assert flat is x or np.array_equal(flat, x)
    assert np.array_equal(ones, np.ones(h))


def test_theta_on_a_straight_line_continues_it():
    x = 5.0 + 2.0 * np.arange(40)
    f = Theta().forecast(x, 6, 1)
    # theta = 0 line is the series itself; SES on 2x − line = x forecasts the last value, so the
    # forecast is the mean of the continued line and the last value
    line = 5.0 + 2.0 * np.arange(40, 46)
    np.testing.assert_allclose(f, 0.5 * line + 0.5 * x[-1], rtol=1e-3)


def test_comb_is_the_mean_of_ses_holt_and_damped():
    rng = np.random.default_rng(1)
    x = 50 + np.cumsum(rng.normal(0.3, 1.0, 60))
    parts = [M().forecast(x, 8, 1) for M in (SES, Holt, Damped)]
    np.testing.assert_allclose(Comb().forecast(x, 8, 1), np.mean(parts, axis=0), rtol=1e-9)


def test_a_failing_fit_falls_back_to_naive_and_is_counted(monkeypatch):
    import specdifftree.baselines as b

    def boom(*a, **k):
        raise RuntimeError("optimizer failed")

    monkeypatch.setattr(b, "_ets_forecast", boom)
    m = SES()
    x = np.array([3.0, 4.0, 5.0, 7.0])
    np.testing.assert_array_equal(m.forecast(x, 3, 1), [7.0, 7.0, 7.0])
    assert m.fallbacks == 1


@pytest.mark.parametrize("freq,method,official", [
    ("Weekly", SES, 9.012), ("Weekly", Theta, 9.093),
    ("Hourly", SES, 18.094), ("Hourly", Theta, 18.138),
])
def test_ses_and_theta_reproduce_m4s_published_smape(freq, method, official):
    """Every series of the official file; M4's published sMAPE (Makridakis et al. 2020)."""
    from specdifftree.tasks.sources import load_series

    root = m4_files(f"{freq}-train.csv", f"{freq}-test.csv")
    series = load_series({"_target_": "specdifftree.tasks.sources.M4CsvSource", "frequency": freq, "root": str(root),
                          "name": f"m4_{freq.lower()}"})
    m = method()
    got = np.mean([smape(s.y, m.forecast(np.asarray(s.x), s.horizon, s.period)) for s in series])
    assert m.fallbacks == 0
    assert got == pytest.approx(official, rel=1e-3), got


def test_the_table_script_writes_json_and_markdown(tmp_path):
    import json
    import subprocess
    import sys

    from conftest import REPO

    root = m4_files("Weekly-train.csv", "Weekly-test.csv")
    out = subprocess.run([sys.executable, str(REPO / "experiments" / "m4_baselines.py"),
                          "--root", str(root), "--methods", "naive2,ses", "--frequencies",
                          "Weekly", "--limit", "5", "--workers", "1", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads((tmp_path / "m4_baselines.json").read_text())["Weekly"]
    assert res["naive2"]["owa"] == pytest.approx(1.0) and res["ses"]["n"] == 5
    md = (tmp_path / "m4_baselines.md").read_text()
    assert "| M4 Weekly (5) | `ses` |" in md
    assert "9.012" not in md  # a subset is never put next to M4's whole-frequency figures


def _write_r_layout(folder, series, h):
    """R-script-layout CSV files: naive forecasts (last value) and hand-set parameters."""
    folder.mkdir(parents=True, exist_ok=True)
    fc = ['"id","method",' + ",".join(f'"F{j}"' for j in range(1, h + 1))]
    par = ['"id","method","seasonal","n","alpha","beta","phi","l0","b0","lN","bN","mse","fit_s"']
    for s in series:
        for name in ("ses", "holt", "damped"):
            fc.append(f'"{s.id}","{name}",' + ",".join([repr(float(s.x[-1]))] * h))
            beta = '"NA"' if name == "ses" else '"0.5"'
            phi = '"0.9"' if name == "damped" else '"NA"'
            par.append(f'"{s.id}","{name}","FALSE","{len(s.x)}","0.99",{beta},{phi},"1","0",'
                       f'"{s.x[-1]}","0","2.5","0.01"')
    (folder / "r_forecasts_weekly.csv").write_text("\n".join(fc) + "\n")
    (folder / "r_params_weekly.csv").write_text("\n".join(par) + "\n")


def test_the_r_comparison_scores_r_forecasts_with_the_project_smape(tmp_path):
    import json
    import subprocess
    import sys

    from conftest import REPO
    from specdifftree.metrics.naive2 import naive
    from specdifftree.tasks.sources import load_series

    root = m4_files("Weekly-train.csv", "Weekly-test.csv")
    series = load_series({"_target_": "specdifftree.tasks.sources.M4CsvSource", "frequency": "Weekly", "root": str(root),
                          "name": "m4_weekly"})[:3]
    _write_r_layout(tmp_path, series, 13)
    out = subprocess.run([sys.executable, str(REPO / "experiments" / "compare_r_baselines.py"),
                          "--root", str(root), "--r-dir", str(tmp_path), "--frequencies",
                          "Weekly", "--top", "1"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads((tmp_path / "comparison.json").read_text())["Weekly"]
    want = np.mean([smape(s.y, naive(s.x, 13)) for s in series])
    for name in ("ses", "holt", "damped", "comb"):
        assert res[name]["summary"]["smape_r"] == pytest.approx(want), name
        assert res[name]["summary"]["smape_m4"] is None  # a subset is not M4's figure
    ours = np.mean([smape(s.y, Holt().forecast(np.asarray(s.x), 13, 1)) for s in series])
    assert res["holt"]["summary"]["smape_ours"] == pytest.approx(ours)
    assert res["holt"]["series"][0]["r"]["beta"] == 0.5
    assert np.isnan(res["ses"]["series"][0]["r"]["beta"])


def test_the_r_comparison_names_the_missing_r_output(tmp_path):
    import subprocess
    import sys

    from conftest import REPO

    out = subprocess.run([sys.executable, str(REPO / "experiments" / "compare_r_baselines.py"),
                          "--root", "/data/m4", "--r-dir", str(tmp_path), "--frequencies", "Weekly"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert out.stderr.strip().splitlines()[-1] == (
        f"error: {tmp_path / 'r_forecasts_weekly.csv'} not found; run `Rscript "
        f"experiments/m4_benchmarks_r.R /data/m4 {tmp_path} Weekly` first")
