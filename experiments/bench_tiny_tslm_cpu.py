"""Greedy seconds per forecast of model folders on this machine, interleaved series by series.

Timing two models alternately on the same series keeps a busy machine's load from favouring one
of them. What one forecast costs, as the runner pays it: the task's prompt, ``Session`` (prefill),
greedy decoding of the task's default ``max_new_tokens``, parsing. The series are the ``--n``
longest M3 monthly series (the longest prompts of M3).

Run::

    python -m specdifftree.backend.mlx.blas exec -- python experiments/bench_tiny_tslm_cpu.py \\
        --models old=path/to/old_folder new=tiny_tslm --n 12 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def build_parser() -> argparse.ArgumentParser:
    """The command line (its flags are checked against the docs' commands)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", required=True, help="name=folder (folder 'tiny_tslm': the shipped one)")
    p.add_argument("--n", type=int, default=12)
    p.add_argument("--repeats", type=int, default=2, help="timed passes (after one warm-up pass)")
    p.add_argument("--out", type=Path, default=None, help="write the numbers as JSON here")
    return p


def main(argv=None) -> None:
    p = build_parser()
    a = p.parse_args(argv)

    import mlx.core as mx

    from specdifftree.backend.mlx.loader import load
    from specdifftree.backend.mlx.session import Session
    from specdifftree.tasks.forecasting import ForecastTask
    from specdifftree.tasks.serialize import Serializer
    from specdifftree.tasks.sources import FcompdataSource

    task = ForecastTask(Serializer(), context_length=200)
    series = sorted(FcompdataSource("M3", "monthly").load(),
                    key=lambda s: -s.x.size)[: a.n]
    models = {}
    for spec in a.models:
        name, folder = spec.split("=", 1)
        cfg = {"builtin": "tiny_tslm"} if folder == "tiny_tslm" else {"path": folder}
        models[name] = load({**cfg, "name": name, "dtype": "float32"})
    times = {name: [] for name in models}
    tokens = {}
    for rep in range(a.repeats + 1):
        for s in series:
            for name, lm in models.items():
                budget = task.max_new_tokens(s)
                t0 = time.perf_counter()
                sess = Session(lm, lm.encode(task.prompt_text(s)), max_new_tokens=budget)
                (ro,) = sess.rollout([()], budget, temperature=0.0)
                task.parse(lm.decode(ro.tokens), s)
                dt = time.perf_counter() - t0
                if rep:  # pass 0 warms up
                    times[name].append(dt)
                tokens[name] = (len(sess.prompt) if hasattr(sess, "prompt") else None, len(ro.tokens))
    res = {"machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
           "mlx_device": str(mx.default_device()), "series": [s.id for s in series],
           "repeats": a.repeats, "models": {}}
    base = None
    for name, ts in times.items():
        med = float(np.median(ts))
        base = base or med
        res["models"][name] = {"median_s": med, "p10_s": float(np.quantile(ts, 0.1)),
                               "p90_s": float(np.quantile(ts, 0.9)), "ratio_to_first": med / base}
        print(f"{name}: greedy median {med:.3f} s/forecast (p10 {res['models'][name]['p10_s']:.3f}, "
              f"p90 {res['models'][name]['p90_s']:.3f}), {med / base:.2f}x the first", flush=True)
    if a.out:
        a.out.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
