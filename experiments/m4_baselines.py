"""The classical baselines on the official M4 Hourly and Weekly files, next to M4's own figures.

    python experiments/m4_baselines.py --root /path/to/m4 --workers 2
    python experiments/m4_baselines.py --methods ses,theta --frequencies Weekly

Every method is the project's own (``method=<name>`` of the CLI: the same classes, the same M4
metric functions; ``python -m specdifftree method=ses dataset=m4_weekly num_samples=null`` gives
the same means); this script only runs the series in parallel worker processes and writes
``<out>/m4_baselines.json`` and ``<out>/m4_baselines.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

METHODS = ("naive2", "ses", "holt", "damped", "theta", "comb", "auto_ets", "auto_arima")

#: M4's published sMAPE of the statistical benchmarks per frequency: Makridakis, Spiliotis &
#: Assimakopoulos (2020), "The M4 Competition: 100,000 time series and 61 forecasting methods",
#: International Journal of Forecasting 36(1), 54-74 (accuracy of the benchmarks by frequency).
#: Naive2's figures are also recomputed from the official submission file by the tests.
OFFICIAL_SMAPE: dict[str, dict[str, float]] = {
    "Hourly": {"naive2": 18.383, "ses": 18.094, "holt": 29.249, "damped": 19.279,
               "theta": 18.138, "comb": 22.053, "auto_ets": 17.307, "auto_arima": 13.980},
    "Weekly": {"naive2": 9.161, "ses": 9.012, "holt": 9.708, "damped": 8.866,
               "theta": 9.093, "comb": 8.944, "auto_ets": 8.727, "auto_arima": 8.653},
}
# auto_ets / auto_arima are compared with M4's "ETS" and "ARIMA" standards for comparison
# (R's forecast::ets and auto.arima); only whole-frequency figures are comparable


def _method(name: str):
    from specdifftree.baselines import AutoARIMA, AutoETS, Comb, Damped, Holt, SES, Theta
    from specdifftree.search.classical import Naive2

    return {"naive2": Naive2, "ses": SES, "holt": Holt, "damped": Damped, "theta": Theta,
            "comb": Comb, "auto_ets": AutoETS, "auto_arima": AutoARIMA}[name]()


def _score(args):
    name, x, y, h, m = args
    from specdifftree.metrics.m4 import mase, smape

    method = _method(name)
    t0 = time.perf_counter()
    f = method.forecast(np.asarray(x), h, m)
    dt = time.perf_counter() - t0
    return float(smape(y, f)), float(mase(x, y, f, m)), dt, getattr(method, "fallbacks", 0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=os.environ.get("SPECDIFFTREE_M4_ROOT", "data/m4"),
                    help="folder of the M4 csv files (default: $SPECDIFFTREE_M4_ROOT or data/m4)")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--frequencies", default="Hourly,Weekly")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--limit", type=int, default=None, help="first N series only (smoke runs)")
    ap.add_argument("--out", default=str(REPO / "outputs" / "m4_baselines"))
    a = ap.parse_args(argv)

    from specdifftree.tasks.sources import M4CsvSource

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {}
    with ProcessPoolExecutor(a.workers) as pool:
        for freq in a.frequencies.split(","):
            series = M4CsvSource(freq, a.root).load()[: a.limit]
            n2 = [_score(("naive2", s.x, s.y, s.horizon, s.period)) for s in series]
            s2, m2 = np.mean([r[0] for r in n2]), np.mean([r[1] for r in n2])
            for name in a.methods.split(","):
                t0 = time.perf_counter()
                rows = list(pool.map(_score, [(name, np.asarray(s.x), np.asarray(s.y), s.horizon,
                                               s.period) for s in series], chunksize=4))
                sm, ms = float(np.mean([r[0] for r in rows])), float(np.mean([r[1] for r in rows]))
                results.setdefault(freq, {})[name] = {
                    "n": len(rows), "smape": sm, "mase": ms, "owa": 0.5 * (sm / s2 + ms / m2),
                    "fit_s_per_series": float(np.mean([r[2] for r in rows])),
                    "wall_s": time.perf_counter() - t0,
                    "fallbacks": int(sum(r[3] for r in rows))}
                print(f"{freq:7s} {name:11s} n={len(rows)} sMAPE={sm:.3f} MASE={ms:.3f} "
                      f"OWA={results[freq][name]['owa']:.3f} ({results[freq][name]['wall_s']:.0f} s)",
                      flush=True)
    (out / "m4_baselines.json").write_text(json.dumps(results, indent=2))
    args_full = a.limit is None  # M4's figures are means over every series of a frequency
    lines = ["| dataset | method | sMAPE | MASE | OWA | M4 sMAPE | Δ sMAPE | fit s/series | "
             "fallbacks |", "|---|---|---|---|---|---|---|---|---|"]
    for freq, rs in results.items():
        for name, r in rs.items():
            off = OFFICIAL_SMAPE.get(freq, {}).get(name) if args_full else None
            o_s = f"{off:.3f}" if off else "–"
            delta = f"{100 * (r['smape'] / off - 1):+.2f}%" if off else "–"
            lines.append(f"| M4 {freq} ({r['n']}) | `{name}` | {r['smape']:.3f} | {r['mase']:.3f} | "
                         f"{r['owa']:.3f} | {o_s} | {delta} | {r['fit_s_per_series']:.3f} | "
                         f"{r['fallbacks']} |")
    (out / "m4_baselines.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
