"""The cyclic garbage collector is paused while a sample is searched, and only then."""

import gc

import pytest

from specdifftree import compose
from specdifftree.gcpause import paused_gc
from specdifftree.runner import execute, prepare


@pytest.fixture
def gc_on():
    was = gc.isenabled()
    gc.enable()
    yield
    (gc.enable if was else gc.disable)()


def test_paused_inside_and_restored_after_also_on_errors(gc_on):
    with paused_gc():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError):
        with paused_gc():
            raise RuntimeError("boom")
    assert gc.isenabled()
    with paused_gc():
        with paused_gc():
            assert not gc.isenabled()
        assert not gc.isenabled()  # an inner pause does not turn it back on early
    assert gc.isenabled()


def test_a_process_that_turned_collection_off_keeps_it_off(gc_on):
    gc.disable()
    with paused_gc():
        pass
    assert not gc.isenabled()


def test_the_runner_searches_with_collection_paused_and_restores_it(tmp_path, gc_on, monkeypatch):
    """A real run on the shipped tiny model: the method's search sees the collector off, and the
    process has it back on between samples and after the run."""
    exp = prepare(compose(["model=tiny_random", "method=dts", "num_samples=2",
                           "budget.rollouts=2", "output.progress=false"]))
    seen, real = [], exp.method.search

    def search(*a, **k):
        seen.append(gc.isenabled())
        return real(*a, **k)

    monkeypatch.setattr(exp.method, "search", search)
    execute(exp, tmp_path / "run")
    assert seen == [False, False]
    assert gc.isenabled()
