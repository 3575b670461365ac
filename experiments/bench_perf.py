"""Performance benchmark: how close do the search methods sit to the physical floor and to mlx-lm?

    make bench                                  # defaults below, writes outputs/bench/bench.json
    python -m specdifftree.backend.mlx.blas exec -- .venv/bin/python experiments/bench_perf.py --shape medium
    python experiments/bench_perf.py --shape vocab-proxy --prompt 500 --parallel 20 --methods best_of_n
    python experiments/bench_perf.py --shape llama-1b --quantize 4 --prompt 500 --warmup --repeat 3 --parallel 1,20  # a GPU

Workload (defaults = the seed project's settings): 20 rollouts, expansion_k 4, λ 1.0, 50 new
tokens per continuation, a 1024-token prompt, a random-weight Llama of ~25M parameters (fp32,
vocabulary 2048). For every method it records

- ``wall_s``, ``model_calls``, ``tokens_processed`` (Session counters);
- ``unique_tokens``: prompt + distinct tokens of the tree and rollouts (distinct non-empty
  prefixes of every continuation the method asked about), and
  ``redundancy = tokens_processed / unique_tokens`` (1.0 = every token computed once; the final
  token of a rollout is sampled but never fed, so values slightly below 1 are possible);
- ``vs_mlx_lm = wall_s / baseline_s``: the baseline is mlx-lm's own generation
  (``generate_step`` for batch 1, ``BatchGenerator`` for larger batches) of exactly the method's
  rollouts (same count, same lengths, same batch size), prompt prefilled once, same model —
  measured in the same process right after the method;
- ``peak_memory_mb`` (``mx.get_peak_memory``);
- ``host_overhead = (wall_s - model_time_s) / wall_s``: the share of wall time the host spends
  outside the model (graph building, waiting for the device and reading device values on the
  host count as model time);
- ``ms_per_step``: wall milliseconds per forward pass of the search (prefill included), and
  ``baseline_ms_per_step`` the same for mlx-lm's run (its generation steps + one prefill);

Shapes: ``small`` (~25M parameters, vocabulary 2048, fp32: the CPU default), ``medium`` (~78M),
``vocab-proxy`` (hidden 64, 1 layer, vocabulary 128256: the host-overhead check any CPU can run)
and ``llama-1b`` (Llama-3.2-1B's shape: hidden 2048, 16 layers, 32/8 heads, vocabulary 128256,
bf16; with ``--quantize 4`` quantized like mlx-community's 4-bit models, group 64). Weights are
seeded random: use it for timing and accounting, not for forecast quality.

and the scaling of wall time with rollouts (10 → 80) and prompt length (256 → 4096).
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
sys.path.insert(0, str(REPO))

SHAPES = {
    "small": {"hidden_size": 512, "num_hidden_layers": 8, "intermediate_size": 1408,
              "num_attention_heads": 8, "num_key_value_heads": 4},  # ~25M parameters
    "medium": {"hidden_size": 768, "num_hidden_layers": 12, "intermediate_size": 2048,
               "num_attention_heads": 12, "num_key_value_heads": 4},  # ~78M parameters
    "vocab-proxy": {"hidden_size": 64, "num_hidden_layers": 1, "intermediate_size": 256,
                    "num_attention_heads": 4, "num_key_value_heads": 2},  # 8.3M parameters, all but 0.05M in the (tied) embedding
    "llama-1b": {"hidden_size": 2048, "num_hidden_layers": 16, "intermediate_size": 8192,
                 "num_attention_heads": 32, "num_key_value_heads": 8, "rope_theta": 500000.0},
}
# shape defaults: vocabulary, dtype
SHAPE_DEFAULTS = {"small": (2048, "float32"), "medium": (2048, "float32"),
                  "vocab-proxy": (128256, "float32"), "llama-1b": (128256, "bfloat16")}
METHODS = ["greedy", "best_of_n", "beam", "mcts", "dts", "dts_star", "maxent_ts"]


def load_model(shape: str, vocab: int, dtype: str = "float32", quantize: int = 0):
    """The seeded random model of ``shape`` through the project's loader; ``quantize`` bits
    (group 64, as ``mlx_lm.convert -q`` and mlx-community's quantized models do it)."""
    from omegaconf import OmegaConf

    from specdifftree.backend.mlx.loader import load

    lm = load(OmegaConf.create({"builtin": "tiny_random", "dtype": dtype, "init_seed": 0,
                                "shape": SHAPES[shape], "min_vocab": vocab}))
    from mlx.utils import tree_flatten

    n_params = sum(v.size for _, v in tree_flatten(lm.model.parameters()))
    if quantize:
        import mlx.core as mx
        from mlx_lm.utils import quantize_model

        lm.model, _ = quantize_model(lm.model, dict(lm.config), group_size=64, bits=int(quantize))
        mx.eval(lm.model.parameters())
    return lm, int(n_params)


def make_prompt(lm, n_tokens: int) -> list[int]:
    """A forecasting prompt (a serialized seasonal series) cut to exactly n_tokens tokens."""
    from specdifftree.tasks.serialize import Serializer

    t = np.arange(4 * n_tokens)
    x = 100 + 10 * np.sin(2 * np.pi * t / 12) + 0.1 * t
    ser = Serializer()
    text = ser.encode(x, ser.scale_for(x))
    toks = lm.encode(text)[-(n_tokens - 2):]
    return toks + lm.encode(", ")


class Recorder:
    """Wraps a Session to collect every continuation asked about (for unique_tokens)."""

    def __init__(self, session):
        self._s = session
        self.sequences: list[tuple[int, ...]] = []
        self.rollouts: list[tuple[int, int]] = []  # (prefix length, generated length)

    def __getattr__(self, name):
        return getattr(self._s, name)

    def logprobs(self, prefixes):
        self.sequences += [tuple(p) for p in prefixes]
        before = self._s.tokens_processed
        out = self._s.logprobs(prefixes)
        if self._s.tokens_processed > before:  # a decode step of the batch (e.g. beam search)
            self.steps = getattr(self, "steps", []) + [len(prefixes)]
        return out

    def topk(self, prefixes, k, **kw):
        self.sequences += [tuple(p) for p in prefixes]
        before = self._s.tokens_processed
        out = self._s.topk(prefixes, k, **kw)
        if self._s.tokens_processed > before:
            self.steps = getattr(self, "steps", []) + [len(prefixes)]
        return out

    def rollout(self, prefixes, max_new_tokens, **kw):
        out = self._s.rollout(prefixes, max_new_tokens, **kw)
        self.sequences += [r.full for r in out]
        self.rollouts += [(len(r.prefix), len(r.tokens)) for r in out]
        self.batches = getattr(self, "batches", []) + [len(out)]
        return out

    def unique_tokens(self) -> int:
        nodes = set()
        for seq in self.sequences:
            for i in range(1, len(seq) + 1):
                nodes.add(seq[:i])
        return self._s.prompt_tokens + len(nodes)


def run_method(lm, prompt, name: str, args) -> dict:
    import mlx.core as mx

    from specdifftree.config import compose
    from specdifftree.gcpause import paused_gc
    from specdifftree.rewards.build import build_reward
    from specdifftree.runner import build_method
    from specdifftree.backend.mlx.session import Session
    from specdifftree.search.base import Budget, RewardOracle
    from specdifftree.tasks.forecasting import ForecastTask
    from specdifftree.tasks.serialize import Serializer
    from specdifftree.tasks.series import Series

    # the seed settings, each given only to the methods that have that setting
    wanted = {"expansion_k": args.k, "lam": args.lam}  # rollouts: the budget below
    if args.parallel:
        wanted["parallel_rollouts"] = args.parallel
    own = compose([f"method={name}"]).method
    cfg = compose([f"method={name}"] + ([] if name == "greedy" else
                  [f"method.{k}={v}" for k, v in wanted.items() if k in own]))
    method = build_method(cfg.method)
    reward = build_reward(compose(["reward=spectral"]).reward)
    task = ForecastTask(Serializer())
    x = 100 + 10 * np.sin(2 * np.pi * np.arange(240) / 12)
    series = Series("bench", x, x[:18], 18, 12)
    ctx = task.reward_context(series)

    def reward_fn(seqs):
        texts = [lm.decode(q) for q in seqs]
        f, v = task.reward_inputs(texts, series)
        return reward(f, texts, v, ctx)

    mx.reset_peak_memory()
    t0 = time.perf_counter()
    with paused_gc():  # as the runner searches a sample (specdifftree/solvers.py)
        session = Recorder(Session(lm, prompt, max_new_tokens=args.new_tokens,
                                   kv_cache_mb=args.kv_cache_mb))
        oracle = RewardOracle(reward_fn)
        budget = Budget(rollouts=args.rollouts if name != "greedy" else 1, tokens=None,
                        max_new_tokens=args.new_tokens)
        method.search(session, oracle, budget, np.random.default_rng(args.seed))
    wall = time.perf_counter() - t0
    peak = mx.get_peak_memory() / 2**20
    base, base_steps = mlx_lm_baseline(lm, prompt, session.rollouts,
                                       getattr(session, "batches", [1]), getattr(session, "steps", []))
    uniq = session.unique_tokens()
    model_time = session.stats.model_time_s
    return {"method": name, "parallel_rollouts": int(getattr(method, "parallel_rollouts", 1)),
            "wall_s": wall, "model_calls": session.model_calls,
            "tokens_processed": session.tokens_processed, "unique_tokens": uniq,
            "redundancy": session.tokens_processed / uniq, "baseline_s": base,
            "vs_mlx_lm": wall / base if base > 0 else float("nan"), "peak_memory_mb": peak,
            "rollouts": len(session.rollouts), "reward_time_s": oracle.diagnostics.time_s,
            "model_time_s": model_time, "host_overhead": (wall - model_time) / wall,
            "ms_per_step": 1000 * wall / max(1, session.model_calls),
            "baseline_ms_per_step": 1000 * base / max(1, base_steps),
            "speculative_tokens": getattr(session.stats, "speculative_tokens", 0)}


def timed(lm, prompt, name: str, args, repeat: int) -> dict:
    """``run_method`` ``repeat`` times: the medians of the times (``wall_s``, ``model_time_s``,
    ``baseline_s``) and the ratios recomputed from them; every run is kept in ``repeats``."""
    runs = [run_method(lm, prompt, name, args) for _ in range(max(1, repeat))]
    if len(runs) == 1:
        return runs[0]
    row = dict(runs[0])
    for k in ("wall_s", "model_time_s", "baseline_s", "reward_time_s", "peak_memory_mb"):
        row[k] = float(np.median([r[k] for r in runs]))
    row["vs_mlx_lm"] = row["wall_s"] / row["baseline_s"]
    row["host_overhead"] = (row["wall_s"] - row["model_time_s"]) / row["wall_s"]
    row["ms_per_step"] = 1000 * row["wall_s"] / max(1, row["model_calls"])
    row["baseline_ms_per_step"] = float(np.median([r["baseline_ms_per_step"] for r in runs]))
    row["repeats"] = [{k: r[k] for k in ("wall_s", "model_time_s", "baseline_s", "vs_mlx_lm",
                                          "host_overhead")} for r in runs]
    return row


def mlx_lm_baseline(lm, prompt, rollouts, batches, steps=()) -> tuple[float, int]:
    """Seconds mlx-lm takes to generate the same rollouts (same lengths, same batch sizes), and
    its forward passes (one prefill + one per generation step of each group).

    ``steps``: batch sizes of log-prob queries that computed something (beam search's decode
    steps); they count as generating ``len(steps)`` tokens at batch ``max(steps)``.
    """
    import mlx.core as mx
    from mlx_lm.generate import BatchGenerator, generate_step
    from mlx_lm.models.cache import KVCache, make_prompt_cache

    model = lm.model
    lengths = [g for _, g in rollouts if g > 0]
    t0 = time.perf_counter()
    base = make_prompt_cache(model)
    model(mx.array([prompt[:-1]]), cache=base)
    mx.eval([c.state for c in base])

    def copy():
        out = []
        for c in base:
            n = KVCache()
            n.keys, n.values, n.offset = c.keys[..., : c.offset, :], c.values[..., : c.offset, :], c.offset
            out.append(n)
        return out

    sampler = lambda lp: mx.random.categorical(lp)  # noqa: E731
    groups, i = [], 0
    for b in batches:
        groups.append(lengths[i:i + b])
        i += b
    if steps:
        groups.append([len(steps)] * max(steps))
    n_steps = 1
    for group in groups:
        if not group:
            continue
        n_steps += max(group)
        if len(group) == 1:
            for _ in generate_step(mx.array(prompt[-1:]), model, max_tokens=group[0],
                                   sampler=sampler, prompt_cache=copy()):
                pass
        else:
            gen = BatchGenerator(model, max_tokens=max(group), sampler=sampler,
                                 completion_batch_size=len(group), prefill_batch_size=len(group))
            gen.insert([prompt[-1:]] * len(group), max_tokens=group, caches=[copy() for _ in group])
            while True:
                responses = gen.next_generated() if hasattr(gen, "next_generated") else gen.next()
                if not responses and not gen._generation_batch and not gen._unprocessed_sequences:
                    break
            gen.close()
    return time.perf_counter() - t0, n_steps


def build_parser() -> argparse.ArgumentParser:
    """The command line (its flags are checked against the docs' commands)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", choices=list(SHAPES), default="small")
    p.add_argument("--vocab", type=int, default=None, help="vocabulary size (default: the shape's)")
    p.add_argument("--dtype", default=None, choices=["float32", "float16", "bfloat16"],
                   help="weights dtype (default: the shape's)")
    p.add_argument("--quantize", type=int, default=0, choices=[0, 2, 3, 4, 6, 8],
                   help="quantize the weights to this many bits (group 64); 0 = no")
    p.add_argument("--repeat", type=int, default=1,
                   help="time every method this many times and report the medians")
    p.add_argument("--warmup", action="store_true",
                   help="run every method once untimed first (GPU backends compile each new shape)")
    p.add_argument("--prompt", type=int, default=1024)
    p.add_argument("--rollouts", type=int, default=20)
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--lam", type=float, default=1.0)
    p.add_argument("--new-tokens", type=int, default=50)
    p.add_argument("--parallel", default="0",
                   help="method.parallel_rollouts (0 = each method's default); a comma list runs "
                        "the methods at each value (greedy and beam, which have no such knob, once)")
    p.add_argument("--kv-cache-mb", type=float, default=1024)
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--scaling", action="store_true", help="also time rollouts 10→80 and prompts 256→4096")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(REPO / "outputs" / "bench" / "bench.json"))
    return p


def main(argv=None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    vocab, dtype = SHAPE_DEFAULTS[args.shape]
    args.vocab = args.vocab or vocab
    args.dtype = args.dtype or dtype

    from specdifftree.backend.mlx.device import describe, device_info
    from specdifftree.backend.mlx.blas import blas_in_use

    print(describe(), flush=True)
    lm, n_params = load_model(args.shape, args.vocab, args.dtype, args.quantize)
    prompt = make_prompt(lm, args.prompt)
    run_method(lm, prompt[:64], "greedy", argparse.Namespace(**{**vars(args), "new_tokens": 4}))  # warm-up
    plan = []  # (method, parallel_rollouts)
    pars = [int(x) for x in str(args.parallel).split(",")]
    args.parallel = pars[0]
    for i, par in enumerate(pars):
        plan += [(m, par) for m in args.methods.split(",") if i == 0 or m not in ("greedy", "beam")]
    if args.warmup:
        for m, par in plan:
            run_method(lm, prompt, m, argparse.Namespace(**{**vars(args), "parallel": par}))
    rows = [timed(lm, prompt, m, argparse.Namespace(**{**vars(args), "parallel": par}), args.repeat)
            for m, par in plan]
    scaling = []
    if args.scaling:
        for r in (10, 20, 40, 80):
            a = argparse.Namespace(**{**vars(args), "rollouts": r})
            scaling.append({"kind": "rollouts", "value": r, **run_method(lm, prompt, "dts", a)})
        for n in (256, 1024, 4096):
            pr = make_prompt(lm, n)
            scaling.append({"kind": "prompt", "value": n, **run_method(lm, pr, "dts", args)})
    args.parallel = ",".join(str(x) for x in pars)
    result = {"machine": {"platform": platform.platform(), "processor": platform.machine(),
                          "blas": blas_in_use(), **device_info()},
              "model": {"shape": args.shape, "params": int(n_params), "vocab": lm.vocab_size,
                        "dtype": args.dtype, "quantize_bits": args.quantize},
              "workload": {k: v for k, v in vars(args).items() if k not in ("out",)},
              "methods": rows, "scaling": scaling}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    cols = ["method", "parallel_rollouts", "wall_s", "model_time_s", "baseline_s", "vs_mlx_lm",
            "host_overhead", "ms_per_step", "baseline_ms_per_step", "model_calls",
            "tokens_processed", "unique_tokens", "redundancy", "peak_memory_mb"]
    print(f"model {args.shape} ({n_params / 1e6:.1f}M params, vocabulary {lm.vocab_size}, "
          f"{args.dtype}{f', {args.quantize}-bit' if args.quantize else ''}), prompt {args.prompt}, "
          f"{args.rollouts} rollouts × {args.new_tokens} tokens; {describe()}; BLAS {blas_in_use()}")
    print(" | ".join(cols))
    for r in rows:
        print(" | ".join(f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c]) for c in cols))
    for s in scaling:
        print(f"scaling {s['kind']}={s['value']}: wall {s['wall_s']:.2f}s, tokens {s['tokens_processed']}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
