"""CPython's automatic cyclic garbage collection, paused while one sample is searched.

A search allocates many short-lived objects (token tuples, cache entries, small arrays) that
reference counting frees at once, but their allocation count still triggers the cyclic
collector, which stops the interpreter to walk the tracked objects: every collection of the
oldest generation walks all of them, the loaded model's modules and parameters included. Measured
on the 2-core CPU machine with ``experiments/bench_perf.py``'s beam on a 16-layer, 128k-vocabulary
model: 25–27 young collections (3–4 ms) per search, and now and then a full one of 70–85 ms inside
a search whose host work is about 50 ms (docs/performance.md). With the search's few reference
cycles left for the collector's next run after the sample, the pause costs only the memory of
one sample's cyclic garbage.
"""

from __future__ import annotations

import gc
from contextlib import contextmanager


@contextmanager
def paused_gc():
    """Automatic collection off inside the block; back on (if it was on) at exit, where the
    collections it owes run at the next allocations, between samples."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()
