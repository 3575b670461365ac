"""Models whose caches are not plain KVCache: a tiny Gemma-3-style model (sliding-window
RotatingKVCache, window smaller than the prompt) and a tiny Mamba (ArraysCache), built through
mlx-lm's model classes on the real Llama 3 tokenizer and saved as real folders."""

import json

import mlx.core as mx
import numpy as np
import pytest
from omegaconf import OmegaConf

from conftest import run_cli
from specdifftree.search import search_methods

ARCHS = ["gemma3_text", "mamba"]
#: every shipped method that searches with the model (a new method config is covered too)
METHODS = ",".join(search_methods())


@pytest.fixture(scope="module")
def lms(llama3_model_dirs):
    from specdifftree.backend.mlx.loader import load

    return {a: load(OmegaConf.create({"path": str(llama3_model_dirs[a]), "dtype": "float32"}))
            for a in ARCHS}


def _prompt(lm, n=40):
    return lm.encode_prompt(", ".join(f"{x:.2f}" for x in np.linspace(1, 30, n)) + ", ")


def _full_logprobs(lm, tokens, start=0):
    """Log-probs after each position from ``start`` on, from one pass over ``tokens``."""
    from mlx_lm.models.cache import make_prompt_cache

    out = lm.model(mx.array([tokens]), cache=make_prompt_cache(lm.model))[0, start:].astype(mx.float32)
    return np.array(out - mx.logsumexp(out, axis=-1, keepdims=True), dtype=np.float64)


@pytest.mark.parametrize("arch", ARCHS)
def test_cache_types_and_session_choice(lms, arch):
    from specdifftree.backend.mlx.snapshot import SnapshotSession, cache_types, open_session

    kinds = set(cache_types(lms[arch]))
    assert kinds == ({"RotatingKVCache", "KVCache"} if arch == "gemma3_text" else {"ArraysCache"})
    s = open_session(lms[arch], _prompt(lms[arch]), max_new_tokens=8)
    assert isinstance(s, SnapshotSession) and s.stats.cache_mode == "snapshot"


@pytest.mark.parametrize("arch", ARCHS)
def test_snapshot_session_is_exact(lms, arch):
    """Batched rollouts from several prefixes and log-prob queries equal one full forward pass
    over prompt + continuation (the prompt is longer than Gemma's 64-token window, so the
    rotating cache has wrapped)."""
    from specdifftree.backend.mlx.snapshot import SnapshotSession

    lm = lms[arch]
    prompt = _prompt(lm)
    assert len(prompt) > 64
    s = SnapshotSession(lm, prompt)
    rs = s.rollout([(), (16,), (16, 13, 20)], 8, temperature=1.0, rng=np.random.default_rng(0))
    for r in rs:
        P = len(prompt) + len(r.prefix)
        ref = _full_logprobs(lm, list(prompt) + list(r.prefix) + r.tokens, P - 1)
        assert np.allclose([ref[j, t] for j, t in enumerate(r.tokens)], r.logprobs, atol=1e-4)
    lp = s.logprobs([(16, 13, 20, 5), (17,)])
    n = len(prompt)
    assert np.allclose(lp[0], _full_logprobs(lm, list(prompt) + [16, 13, 20, 5], n + 3)[0], atol=1e-4)
    assert np.allclose(lp[1], _full_logprobs(lm, list(prompt) + [17], n)[0], atol=1e-4)


def test_snapshots_are_reused_and_recomputation_is_counted(lms):
    """A continuation of a queried prefix feeds only its new tokens; without snapshots
    (kv_cache_mb=0) the same requests recompute from the prompt, give the same numbers and say so."""
    from specdifftree.backend.mlx.snapshot import SnapshotSession

    lm = lms["mamba"]
    prompt = _prompt(lm)
    out = {}
    for mb in (64, 0):
        s = SnapshotSession(lm, prompt, kv_cache_mb=mb)
        s.logprobs([(16, 13)])
        t0 = s.tokens_processed
        lp = s.logprobs([(16, 13, 20)])
        r = s.rollout([(16, 13, 20, 5)], 4, temperature=0.0)[0]
        out[mb] = (s.tokens_processed - t0, s.stats.recomputed_tokens, lp, r.tokens, r.logprobs)
    fed, recomputed, lp, toks, lps = out[64]
    assert fed == 1 + 1 + 3 and recomputed == 0  # one token, one token, then 3 decode steps
    fed0, recomputed0, lp0, toks0, lps0 = out[0]
    assert fed0 == 3 + 4 + 3 and recomputed0 == 2 + 3
    assert np.allclose(lp, lp0) and toks == toks0 and np.allclose(lps, lps0)


@pytest.mark.parametrize("arch", ARCHS)
def test_every_method_through_the_cli(llama3_model_dirs, tmp_path, arch):
    """Every search method runs on the model through the CLI (one multirun), with the same
    accounting rules: tokens_processed counts every fed token, re-fed ones included."""
    out = tmp_path / "sweep"
    r = run_cli("--multirun", f"method={METHODS}", "model=hf",
                f"model.path={llama3_model_dirs[arch]}", "num_samples=1",
                "dataset.context_length=24", "max_new_tokens=6", "max_new_tokens_check=false",
                "budget.rollouts=3",
                f"hydra.sweep.dir={out}")
    assert r.returncode == 0, r.stderr[-3000:]
    seen = set()
    for job in range(len(METHODS.split(","))):
        rows = [json.loads(x) for x in (out / str(job) / "results.jsonl").read_text().splitlines()]
        assert len(rows) == 1
        row = rows[0]
        seen.add(row["method"])
        assert row["error"] is None, row["error"]
        assert row["cache_mode"] == "snapshot" and row["recomputed_tokens"] >= 0
        assert 0 < row["generated_tokens"] <= 6
        assert row["tokens_processed"] >= row["prompt_tokens"] + row["generated_tokens"] - 1
        if row["method"] == "greedy":
            assert row["tokens_processed"] == row["prompt_tokens"] + row["generated_tokens"] - 1
            assert row["recomputed_tokens"] == 0
    assert seen == set(METHODS.split(","))


def test_topk_matches_the_logprobs(lms):
    from specdifftree.backend.mlx.snapshot import SnapshotSession

    s = SnapshotSession(lms["mamba"], _prompt(lms["mamba"]))
    ids, vals = s.topk([(), (16,)], 5)
    lp = s.logprobs([(), (16,)])
    for row, i, v in zip(lp, ids, vals):
        assert list(i) == list(np.argsort(-row, kind="stable")[:5]) and np.allclose(v, row[i])


# ------------------------------------------------------------------ quantized KV cache
def _generate_step(lm, prompt, T, **quant):
    """mlx-lm's own greedy decoding: (tokens, full log-prob vector at each step)."""
    from mlx_lm.generate import generate_step

    out = []
    for (tok, lp), _ in zip(generate_step(mx.array(prompt), lm.model, max_tokens=T, **quant), range(T)):
        out.append((int(tok), np.array(lp.astype(mx.float32), dtype=np.float64)))
    return [t for t, _ in out], [lp for _, lp in out]


@pytest.mark.parametrize("bits,start", [(4, 0), (4, "mid"), (8, 3)])
def test_quantized_kv_cache_matches_mlx_lm_generate_step(tiny_lm, bits, start):
    """With kv_bits / kv_group_size / quantized_kv_start the Session's log-probs are those of
    mlx-lm's generate_step with the same settings: greedy rollouts (one row, and several rows
    decoded together), and log-prob queries whose prefix is fed in one request across the point
    where the cache becomes quantized ("mid": 5 tokens after the prompt)."""
    from specdifftree.backend.mlx.snapshot import SnapshotSession, open_session

    lm, T = tiny_lm, 16
    prompt = _prompt(lm, 12)
    start = len(prompt) + 5 if start == "mid" else start
    quant = dict(kv_bits=bits, kv_group_size=32, quantized_kv_start=start)
    toks, ref = _generate_step(lm, prompt, T, **quant)
    s = open_session(lm, prompt, **quant)
    assert isinstance(s, SnapshotSession) and s.stats.cache_mode == f"snapshot+kv{bits}"
    r = s.rollout([()], T, temperature=0.0)[0]
    n = len(r.tokens)
    assert n >= 8 and r.tokens == toks[:n]
    assert np.allclose(r.logprobs, [ref[j][t] for j, t in enumerate(r.tokens)], atol=1e-5)
    fresh = SnapshotSession(lm, prompt, **quant)
    at = [0, 3, 9, n - 1]
    lp = fresh.logprobs([tuple(toks[:j]) for j in at])
    for row, j in zip(lp, at):
        assert np.allclose(row, ref[j], atol=1e-5)
    rows = SnapshotSession(lm, prompt, **quant).rollout([(), tuple(toks[:2]), tuple(toks[:7])], 6,
                                                        temperature=0.0)
    for x in rows:
        k = len(x.prefix)
        assert list(x.prefix) + x.tokens == toks[:k + len(x.tokens)]
        assert np.allclose(x.logprobs, [ref[k + j][t] for j, t in enumerate(x.tokens)], atol=1e-5)
    # the quantization is really on: the unquantized model's distribution differs
    plain = SnapshotSession(lm, prompt).logprobs([tuple(toks[:9])])[0]
    assert np.abs(plain - ref[9]).max() > (1e-3 if bits == 8 else 1e-2)


def test_quantized_kv_cache_through_the_cli(tmp_path):
    """backend.kv_bits runs greedy and DTS through the CLI (the rows say which cache), and a group
    size the model's head dimension does not take stops the run in one line."""
    out = tmp_path / "sweep"
    common = ("model=tiny_random", "num_samples=1", "dataset.context_length=16", "max_new_tokens=6",
              "max_new_tokens_check=false",
              "budget.rollouts=3", "backend.kv_bits=4", "backend.quantized_kv_start=0")
    r = run_cli("--multirun", "method=greedy,dts", *common, "backend.kv_group_size=32",
                f"hydra.sweep.dir={out}")
    assert r.returncode == 0, r.stderr[-3000:]
    for job in (0, 1):
        row = json.loads((out / str(job) / "results.jsonl").read_text().splitlines()[0])
        assert row["error"] is None and row["cache_mode"] == "snapshot+kv4"
        assert 0 < row["generated_tokens"] <= 6
        if row["method"] == "greedy":
            assert row["tokens_processed"] == row["prompt_tokens"] + row["generated_tokens"] - 1
    r = run_cli(*common, "backend.kv_group_size=64", f"hydra.run.dir={tmp_path / 'bad'}")
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("specdifftree: error:")]
    assert r.returncode == 2 and len(lines) == 1, r.stderr[-2000:]
    assert "backend.kv_group_size=64" in lines[0] and "divisible" in lines[0]
    r = run_cli(*common[:-2], "backend.kv_bits=7", f"hydra.run.dir={tmp_path / 'bad2'}")
    assert r.returncode == 2 and "backend.kv_bits=7: must be 2, 3, 4, 5, 6 or 8" in r.stderr


def test_kv_quantization_of_other_cache_types(lms):
    """As in mlx-lm: Mamba's ArraysCache is not quantized (the log-probs stay those of the plain
    session); Gemma 3's RotatingKVCache cannot be, which is one ConfigError line up front."""
    from specdifftree.backend.mlx.snapshot import SnapshotSession, check_kv_quantization
    from specdifftree.errors import ConfigError

    lm = lms["mamba"]
    check_kv_quantization(lm, 4, 32)
    q = SnapshotSession(lm, _prompt(lm), kv_bits=4, kv_group_size=32, quantized_kv_start=0)
    assert q.stats.cache_mode == "snapshot+kv4"
    # (the prompt is prefilled as generate_step does, the last token on its own: rounding only)
    assert np.allclose(q.logprobs([(16, 13)]), SnapshotSession(lm, _prompt(lm)).logprobs([(16, 13)]),
                       atol=1e-5)
    with pytest.raises(ConfigError, match=r"^backend\.kv_bits=4: .* uses RotatingKVCache, which mlx-lm cannot quantize"):
        check_kv_quantization(lms["gemma3_text"], 4, 32)
