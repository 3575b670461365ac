"""experiments/notebooks/quickstart.ipynb runs top to bottom on the tiny model."""

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
    html = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    assert any("smape" in h and "greedy" in h for h in html)  # the DataFrame is shown
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 2  # and figures
    assert any("naive2" in h and "owa" in h for h in html)  # both runs in the summary table
    for method in ("greedy", "naive2"):  # one run dir per config
        assert (tmp_path / "run" / method / "results.jsonl").exists()
    assert (tmp_path / "run" / "figures" / "accuracy.png").exists()
    # the notebook is stored without outputs
    stored = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not c.get("outputs") for c in stored.cells if c.cell_type == "code")
