"""A character-level tokenizer for serialized numbers (and plain ASCII text).

It is written as a Hugging Face ``tokenizer.json`` (a BPE model with no merges, so every
character is one token, and a ``Fuse`` decoder), which ``transformers`` and therefore
``mlx_lm.load`` read like any other tokenizer folder.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
SPECIALS = (PAD, BOS, EOS, UNK)
# Digits and number punctuation first so their ids are small and stable.
CHARS = tuple(dict.fromkeys("0123456789.,- \n" + string.printable.replace("\x0b", "").replace("\x0c", "").replace("\r", "")))

CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)


def vocab(min_size: int = 0) -> dict[str, int]:
    """Token -> id. ``min_size`` pads the vocabulary with unused tokens (for benchmarks)."""
    tokens = list(SPECIALS) + list(CHARS)
    tokens += [f"<unused{i}>" for i in range(max(0, min_size - len(tokens)))]
    return {tok: i for i, tok in enumerate(tokens)}


def write_tokenizer(folder: Path, min_vocab: int = 0) -> int:
    """Write tokenizer.json, tokenizer_config.json and special_tokens_map.json; return vocab size."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    v = vocab(min_vocab)
    added = [
        {"id": v[t], "content": t, "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": True}
        for t in SPECIALS
    ]
    tokenizer = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": None,
        "post_processor": None,
        "decoder": {"type": "Fuse"},
        "model": {
            "type": "BPE", "dropout": None, "unk_token": UNK, "continuing_subword_prefix": None,
            "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
            "ignore_merges": False, "vocab": v, "merges": [],
        },
    }
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer, ensure_ascii=False))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS, "eos_token": EOS, "pad_token": PAD, "unk_token": UNK,
        "add_bos_token": False, "add_eos_token": False,
        "model_max_length": 1_000_000,
        "clean_up_tokenization_spaces": False,
        "chat_template": CHAT_TEMPLATE,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=1))
    (folder / "special_tokens_map.json").write_text(
        json.dumps({"bos_token": BOS, "eos_token": EOS, "pad_token": PAD, "unk_token": UNK}, indent=1)
    )
    return len(v)
