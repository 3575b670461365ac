"""experiments/notebooks/quickstart.ipynb runs top to bottom on the embedded model (tiny_tslm) and
shows valid forecasts: what its cells print and draw is checked."""

import json
import os

import pytest

from conftest import REPO

NOTEBOOK = REPO / "experiments" / "notebooks" / "quickstart.ipynb"


def test_quickstart_notebook_executes(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    # the kernel inherits the environment: this checkout first on the path, results in tmp
    monkeypatch.setenv("PYTHONPATH", str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    monkeypatch.setenv("SDT_QUICKSTART_DIR", str(tmp_path / "run"))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    html = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    assert any("smape" in h and "greedy" in h for h in html)  # the DataFrame is shown
    assert any("naive2" in h and "best_of_n" in h and "owa" in h for h in html)  # all three runs
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 2  # the figures
    # the embedded model's forecasts parse (the random-weight test model's never do)
    rates = dict(ln[len("valid rate "):].rsplit(": ", 1) for ln in text.splitlines()
                 if ln.startswith("valid rate "))
    assert set(rates) == {"greedy", "best-of-4 (median)", "naive2"}, text
    assert all(float(v) == 1.0 for v in rates.values()), rates
    assert "specdifftree: BLAS: " in text and "device: " in text  # said once by the API
    assert text.count("specdifftree: BLAS: ") == 1
    # the forecast figure: history, truth and one line per method, each complete and finite
    fig = json.loads(next(ln for ln in text.splitlines() if ln.startswith("FIGURE "))[7:])
    assert list(fig) == ["history", "truth", "greedy", "best-of-4 (median)", "naive2"], fig
    horizon = fig["truth"][0]
    assert horizon == 18 and fig["history"][0] > horizon  # m3_monthly: 18 steps ahead
    assert all(n == horizon and finite for k, (n, finite) in fig.items() if k != "history"), fig
    assert all(finite for _, finite in fig.values())
    for method in ("greedy", "best_of_n", "naive2"):  # one run dir per config
        assert (tmp_path / "run" / method / "results.jsonl").exists()
    assert (tmp_path / "run" / "figures" / "accuracy.png").exists()
    # the notebook is stored without outputs
    stored = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not c.get("outputs") for c in stored.cells if c.cell_type == "code")
