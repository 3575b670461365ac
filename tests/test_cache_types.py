"""Models whose caches are not plain KVCache: a tiny Gemma-3-style model (sliding-window
RotatingKVCache, window smaller than the prompt) and a tiny Mamba (ArraysCache), built through
mlx-lm's model classes on the real Llama 3 tokenizer and saved as real folders."""

import json

import mlx.core as mx
import numpy as np
import pytest
from omegaconf import OmegaConf

from conftest import run_cli

ARCHS = ["gemma3_text", "mamba"]
METHODS = "greedy,best_of_n,beam,mcts,dts,dts_star,maxent_ts"


@pytest.fixture(scope="module")
def lms(llama3_model_dirs):
    from specdifftree.backend.loader import load

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
    from specdifftree.backend.snapshot import SnapshotSession, cache_types, open_session

    kinds = set(cache_types(lms[arch]))
    assert kinds == ({"RotatingKVCache", "KVCache"} if arch == "gemma3_text" else {"ArraysCache"})
    s = open_session(lms[arch], _prompt(lms[arch]), max_new_tokens=8)
    assert isinstance(s, SnapshotSession) and s.stats.cache_mode == "snapshot"


@pytest.mark.parametrize("arch", ARCHS)
def test_snapshot_session_is_exact(lms, arch):
    """Batched rollouts from several prefixes and log-prob queries equal one full forward pass
    over prompt + continuation (the prompt is longer than Gemma's 64-token window, so the
    rotating cache has wrapped)."""
    from specdifftree.backend.snapshot import SnapshotSession

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
    from specdifftree.backend.snapshot import SnapshotSession

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
    for job in range(7):
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
    from specdifftree.backend.snapshot import SnapshotSession

    s = SnapshotSession(lms["mamba"], _prompt(lms["mamba"]))
    ids, vals = s.topk([(), (16,)], 5)
    lp = s.logprobs([(), (16,)])
    for row, i, v in zip(lp, ids, vals):
        assert list(i) == list(np.argsort(-row, kind="stable")[:5]) and np.allclose(v, row[i])
