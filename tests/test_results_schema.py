"""The results row schema (results.ROW_FIELDS) and the row key: README's table documents exactly
the schema, and the rows the runner writes hold only schema fields, keyed by row_key()."""

import re
from pathlib import Path

import pytest

from specdifftree import compose
from specdifftree.results import ROW_FIELDS, ROW_KEY, read_results, row_key
from specdifftree.runner import execute, prepare

README = Path(__file__).resolve().parent.parent / "README.md"
QUIET = ["num_samples=2", "max_new_tokens=8", "max_new_tokens_check=false", "output.progress=false"]


def readme_fields() -> list[str]:
    text = README.read_text()
    start = text.index("### `results.jsonl` fields")
    table = text[start:text.index("`summary.csv`:", start)]
    return [f for line in table.splitlines() if line.startswith("| `")
            for f in re.findall(r"`([A-Za-z0-9_]+)`", line.split("|")[1])]


def test_readme_documents_exactly_the_row_schema():
    fields = readme_fields()
    assert len(fields) == len(set(fields)) and len(ROW_FIELDS) == len(set(ROW_FIELDS))
    assert set(fields) == set(ROW_FIELDS)
    assert ROW_FIELDS[:len(ROW_KEY)] == ROW_KEY


@pytest.mark.parametrize("overrides", [
    ["method=naive2"],
    ["model=tiny_random", "method=best_of_n", "budget.rollouts=3", "method.answer=median"],
], ids=["naive2", "best_of_n-median"])
def test_rows_hold_schema_fields_and_reward_diagnostics(tmp_path, overrides):
    df = execute(prepare(compose([*overrides, *QUIET])), tmp_path / "run")
    assert set(df.columns) <= set(ROW_FIELDS), set(df.columns) - set(ROW_FIELDS)
    rows = read_results(tmp_path / "run")
    assert [row_key(r) for r in rows] == [tuple(r[k] for k in ROW_KEY) for r in df.to_dict("records")]
    for r in rows:
        assert r["reward_failures"] == 0 == r["reward_nonfinite_values"] and r["reward_error"] is None
        if r["method"] == "naive2":  # one reward call: the classical forecast's
            assert r["reward_calls"] == r["reward_evaluations"] == 1
        else:  # one call per new continuation of the search (one rollout per step), plus the
            # median answer's call
            assert r["reward_evaluations"] == r["reward_calls"] == r["distinct_samples"] + 1
