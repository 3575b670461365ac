"""Session accounting and consistency on the real tiny model loaded through mlx_lm.load."""

import json

import numpy as np
import pytest
from omegaconf import OmegaConf

from specdifftree.backend.mlx.loader import load, resolve_path
from specdifftree.backend.mlx.session import Session
from specdifftree.errors import BackendError, ModelError


@pytest.fixture(scope="module")
def prompt(tiny_lm):
    return tiny_lm.encode("12.50, 13.75, 11.00, " * 12)


def test_tiny_model_is_a_real_mlx_lm_folder(tiny_lm):
    from pathlib import Path

    folder = Path(tiny_lm.path)
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        assert (folder / name).is_file()
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["model_type"] == "llama"
    from mlx.utils import tree_flatten

    n_params = sum(v.size for _, v in tree_flatten(tiny_lm.model.parameters()))
    assert 1_000_000 <= n_params <= 5_000_000
    assert tiny_lm.decode(tiny_lm.encode("3.14, -2.50")) == "3.14, -2.50"


def test_greedy_costs_prompt_plus_generated(tiny_lm, prompt):
    s = Session(tiny_lm, prompt)
    assert s.tokens_processed == len(prompt) == s.prompt_tokens
    (ro,) = s.rollout([()], 40, temperature=0.0)
    G = len(ro.tokens)
    assert G >= 1
    # every generated token but the last is fed once; nothing is recomputed
    assert s.tokens_processed == s.prompt_tokens + G - 1
    assert s.model_calls == 1 + (G - 1)  # one prefill call (a prompt under 2048 tokens)


def test_greedy_matches_full_recomputation(tiny_lm, prompt):
    """The KV-cached greedy path equals argmax of a full forward pass at every step."""
    import mlx.core as mx

    s = Session(tiny_lm, prompt)
    (ro,) = s.rollout([()], 12, temperature=0.0)
    seq = list(prompt)
    for t, lp in zip(ro.tokens, ro.logprobs):
        logits = tiny_lm.model(mx.array([seq]))[0, -1].astype(mx.float32)
        ref = np.array(logits - mx.logsumexp(logits), dtype=np.float64)
        assert int(np.argmax(ref)) == t
        assert abs(ref[t] - lp) < 1e-4
        seq.append(t)


def test_cached_logprobs_cost_nothing(tiny_lm, prompt):
    s = Session(tiny_lm, prompt)
    (ro,) = s.rollout([()], 10, temperature=1.0, rng=np.random.default_rng(1))
    before = (s.tokens_processed, s.model_calls)
    lps = s.logprobs([tuple(ro.tokens[:k]) for k in range(len(ro.tokens))])
    assert (s.tokens_processed, s.model_calls) == before
    for k, t in enumerate(ro.tokens):
        assert abs(lps[k, t] - ro.logprobs[k]) < 1e-9
    np.testing.assert_allclose(np.exp(lps).sum(axis=1), 1.0, rtol=1e-5)


def test_batched_rollout_matches_single(tiny_lm, prompt):
    prefixes = [(), (5, 6), (7,), (5, 6, 8, 9)]
    a = Session(tiny_lm, prompt).rollout(prefixes, 8, temperature=0.0)
    for p, ro in zip(prefixes, a):
        (single,) = Session(tiny_lm, prompt).rollout([p], 8, temperature=0.0)
        assert ro.tokens == single.tokens
        np.testing.assert_allclose(ro.logprobs, single.logprobs, atol=1e-4)


def test_seeded_sampling_is_reproducible(tiny_lm, prompt):
    r1 = Session(tiny_lm, prompt).rollout([(), ()], 15, temperature=1.0, rng=np.random.default_rng(3))
    r2 = Session(tiny_lm, prompt).rollout([(), ()], 15, temperature=1.0, rng=np.random.default_rng(3))
    r3 = Session(tiny_lm, prompt).rollout([(), ()], 15, temperature=1.0, rng=np.random.default_rng(4))
    assert [r.tokens for r in r1] == [r.tokens for r in r2]
    assert [r.tokens for r in r1] != [r.tokens for r in r3]


def test_sequence_logprob_extra_pass_is_counted_separately(tiny_lm, prompt):
    s = Session(tiny_lm, prompt)
    (ro,) = Session(tiny_lm, prompt).rollout([()], 10, temperature=1.0, rng=np.random.default_rng(0))
    before = s.tokens_processed
    lp, fed = s.sequence_logprob(ro.tokens)
    assert s.tokens_processed == before and s.stats.eval_tokens == fed == len(ro.tokens) - 1
    assert abs(lp - sum(ro.logprobs)) < 1e-3


def test_context_overflow_is_a_backend_error(tiny_lm):
    with pytest.raises(BackendError, match="exceeds the model's context"):
        Session(tiny_lm, [5] * (tiny_lm.max_context + 1))


def test_missing_and_broken_model_folders(tmp_path):
    with pytest.raises(ModelError, match="no such folder"):
        resolve_path(OmegaConf.create({"path": str(tmp_path / "nope")}))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="no config.json"):
        resolve_path(OmegaConf.create({"path": str(tmp_path / "empty")}))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "llama"}')
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelError, match="cannot load model"):
        load(OmegaConf.create({"path": str(broken)}))


def test_quantized_model_folder_loads_and_generates(tiny_lm, tmp_path):
    import shutil

    from mlx_lm.utils import load_model, quantize_model, save_config, save_model

    from pathlib import Path

    src = Path(tiny_lm.path)
    model, config = load_model(src)
    model, config = quantize_model(model, config, group_size=64, bits=4)
    out = tmp_path / "tiny-4bit"
    save_model(out, model)
    save_config(config, out / "config.json")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(src / name, out / name)
    lm = load(OmegaConf.create({"path": str(out)}))
    assert json.loads((out / "config.json").read_text())["quantization"]["bits"] == 4
    s = Session(lm, lm.encode("1.00, 2.00, 3.00, "))
    (ro,) = s.rollout([()], 5, temperature=0.0)
    assert len(ro.tokens) >= 1 and s.tokens_processed == s.prompt_tokens + len(ro.tokens) - 1


def _tree_workload(s):
    """Rollouts that branch off earlier rollouts, as a tree search does."""
    def cut(seq, n):  # the first n tokens, stopping before EOS (nothing can follow it)
        seq = tuple(seq[:n])
        return seq[: next((i for i, t in enumerate(seq) if t in s.eos_ids), len(seq))]

    rng = np.random.default_rng(7)
    outs = []
    (a,) = s.rollout([()], 20, temperature=1.0, rng=rng)
    outs.append(a.tokens)
    b = s.rollout([cut(a.tokens, 5), cut(a.tokens, 12), cut(a.tokens, 19)], 10,
                  temperature=1.0, rng=rng)
    outs += [r.tokens for r in b]
    c = s.rollout([cut(b[0].full, 99), cut(b[1].full, 15)], 8, temperature=1.0, rng=rng)
    outs += [r.tokens for r in c]
    return outs, s.logprobs([cut(b[2].full, len(b[2].full) - 1), cut(a.full, 3)])


@pytest.mark.parametrize("cap_mb", [0.05, 0.0])
def test_prefix_kv_store_changes_cost_not_results(tiny_lm, prompt, cap_mb):
    full = Session(tiny_lm, prompt, kv_cache_mb=1024)
    ref, ref_lp = _tree_workload(full)
    other = Session(tiny_lm, prompt, kv_cache_mb=cap_mb)
    toks, lp = _tree_workload(other)
    assert toks == ref  # same samples: only float rounding of recomputed KV may differ
    np.testing.assert_allclose(lp, ref_lp, atol=1e-4)
    assert other.tokens_processed > full.tokens_processed
    if cap_mb:
        assert other._kv.evictions > 0


def test_prefix_kv_store_feeds_each_tree_token_once(tiny_lm, prompt):
    s = Session(tiny_lm, prompt)
    (a,) = s.rollout([()], 20, temperature=0.0)
    before = s.tokens_processed
    # branching off the middle of a rollout costs only the new tokens
    (b,) = s.rollout([tuple(a.tokens[:10])], 6, temperature=0.0)
    assert s.tokens_processed - before == len(b.tokens) - 1
    # continuing from the very end needs the one unfed last token
    before = s.tokens_processed
    (c,) = s.rollout([a.full], 4, temperature=0.0)
    assert s.tokens_processed - before == 1 + len(c.tokens) - 1


def test_a_query_extending_the_last_one_gathers_its_rows(tiny_lm, prompt):
    """Beam steps: prefixes one token beyond the last computed query reuse its batch cache
    (tokens fed once) and give the same log-probs as a fresh computation; a later rollout from
    them finds their KV."""
    s = Session(tiny_lm, prompt)
    s.logprobs([(5,), (6,)])
    before = (s.tokens_processed, s.model_calls)
    steps = [[(5, 7), (5, 8), (6, 9)], [(5, 7, 10)], [(5, 7, 10, 11), (5, 7, 10, 12)]]
    fresh = Session(tiny_lm, prompt, kv_cache_mb=0)
    for q in steps:
        np.testing.assert_allclose(s.logprobs(q), fresh.logprobs(q), atol=1e-4)
    assert (s.tokens_processed - before[0], s.model_calls - before[1]) == (6, 3)
    before = s.tokens_processed
    (ro,) = s.rollout([(5, 7, 10, 12)], 4, temperature=0.0)  # its log-probs are cached too
    assert s.tokens_processed - before == len(ro.tokens) - 1
    (ref,) = fresh.rollout([(5, 7, 10, 12)], 4, temperature=0.0)
    assert ro.tokens == ref.tokens


def test_rows_with_their_own_limits_share_a_batch(tiny_lm, prompt):
    """Tree leaves at different depths are rolled out in one batch, each up to its own limit."""
    prefixes, limits = [(), (5, 6), (7,), (8,)], [6, 2, 4, 0]
    s = Session(tiny_lm, prompt)
    ros = s.rollout(prefixes, limits, temperature=0.0)
    for p, n, ro in zip(prefixes, limits, ros):
        (single,) = Session(tiny_lm, prompt).rollout([p], n, temperature=0.0)
        assert ro.tokens == single.tokens and len(ro.tokens) <= n
        np.testing.assert_allclose(ro.logprobs, single.logprobs, atol=1e-4)
    # every prefix token and every generated token but the last is fed once
    fed = 3 + sum(max(0, len(r.tokens) - 1) for r in ros)
    assert s.tokens_processed - s.prompt_tokens == fed
    with pytest.raises(ValueError, match="max_new_tokens"):
        s.rollout([(), ()], [3], temperature=0.0)


class _HostRows:
    """A Session seen without ``topk``: a beam then reads full log-prob rows on the host and
    takes their top-k there (the reference for the beam step computed ahead on the device)."""

    def __init__(self, session):
        self._s = session

    def __getattr__(self, name):
        if name in ("topk", "beam_lookahead"):
            raise AttributeError(name)
        return getattr(self._s, name)


@pytest.mark.parametrize("eos_ranks", [(), (0,), (1, 2)], ids=["no-eos", "top1-eos", "top2,3-eos"])
@pytest.mark.parametrize("k,depth", [(4, 10), (3, 16), (1, 8)])
def test_beam_steps_computed_ahead_give_the_reference_beams(tiny_lm, prompt, k, depth, eos_ranks):
    """Beam search on the Session, whose every step after the first is queued on the device
    before the host has read the step before (``topk(..., scores=...)``), keeps exactly the
    hypotheses of a beam that reads full log-prob rows on the host, feeds the same tokens, and
    every step after the first is served by the step queued ahead. Some of the model's likeliest
    first tokens are made EOS so that finished hypotheses take places in the beam (then rows fed
    ahead go unused: ``speculative_tokens``, not ``tokens_processed``)."""
    from specdifftree.search.base import Budget, RewardOracle
    from specdifftree.search.beam import Beam

    top, _ = Session(tiny_lm, prompt).topk([()], 3)
    eos = frozenset(int(top[0][r]) for r in eos_ranks) or None

    def search(session):
        if eos is not None:
            session.eos_ids = eos
        res = Beam(expansion_k=k).search(
            session, RewardOracle(lambda seqs: np.array([float(sum(q) % 97) for q in seqs])),
            Budget(max_new_tokens=depth), np.random.default_rng(0))
        return res

    s = Session(tiny_lm, prompt)
    served = []  # per topk call: was it served by the step queued ahead?
    take = s._take_ahead

    def take_and_keep(ps):
        out = take(ps)
        served.append(out is not None)
        return out

    s._take_ahead = take_and_keep
    res = search(s)
    ref_session = Session(tiny_lm, prompt)
    ref = search(_HostRows(ref_session))
    assert res.samples == ref.samples
    assert res.tokens == ref.tokens
    assert res.logprob == pytest.approx(ref.logprob, abs=1e-4)
    assert s.tokens_processed == ref_session.tokens_processed
    assert served and not served[0] and all(served[1:])
    if not eos_ranks:  # every row fed ahead was asked for
        assert s.stats.speculative_tokens == 0
        assert s.model_calls == ref_session.model_calls


def test_a_beam_step_queued_ahead_that_is_not_asked_for_changes_nothing(tiny_lm, prompt):
    """A query that is not among the extensions queued ahead is computed as usual (same
    log-probs as a fresh Session); the rows fed ahead count as speculative tokens only."""
    s = Session(tiny_lm, prompt)
    fresh = Session(tiny_lm, prompt, kv_cache_mb=0)
    ids, _ = s.topk([()], 3, scores=[0.0])
    other = int(fresh.topk([()], 10)[0][0][-1])  # not among the 3 extensions queued ahead
    before = s.tokens_processed
    q = [(other,), (int(ids[0][0]),)]
    got = s.topk(q, 5)
    want = fresh.topk(q, 5)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_allclose(got[1], want[1], atol=1e-4)
    assert s.tokens_processed - before == 2
    assert s.stats.speculative_tokens == 3
    with pytest.raises(ValueError, match="1 scores for 2 prefixes"):
        s.topk(q, 5, scores=[0.0])
