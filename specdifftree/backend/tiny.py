"""The ``tiny_random`` test model: a Llama-architecture model with seeded random weights.

It is written on first use as a real mlx-lm folder (config.json, model.safetensors, tokenizer
files) into the cache directory and then loaded through ``mlx_lm.load`` like any other model, so
everything downstream exercises the real loading path.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_flatten

from .chartok import write_tokenizer, vocab

DEFAULT_SHAPE = {
    "hidden_size": 192,
    "num_hidden_layers": 6,
    "intermediate_size": 512,
    "num_attention_heads": 6,
    "num_key_value_heads": 2,
}


def cache_dir() -> Path:
    """Where generated models are written (``SPECDIFFTREE_CACHE`` or ``~/.cache/specdifftree``)."""
    root = os.environ.get("SPECDIFFTREE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "specdifftree"
    )
    return Path(root)


def llama_config(shape: dict, vocab_size: int, max_positions: int = 8192) -> dict:
    cfg = {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "vocab_size": vocab_size,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "tie_word_embeddings": True,
        "max_position_embeddings": max_positions,
        "torch_dtype": "float32",
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 0,
    }
    cfg.update(shape)
    return cfg


def random_model_folder(seed: int = 0, shape: dict | None = None, min_vocab: int = 0,
                        root: Path | None = None) -> Path:
    """Return the folder of a seeded random Llama model, writing it atomically if absent."""
    from mlx_lm.models import llama

    shape = dict(DEFAULT_SHAPE if shape is None else shape)
    vocab_size = len(vocab(min_vocab))
    config = llama_config(shape, vocab_size)
    digest = hashlib.sha256(json.dumps([config, seed], sort_keys=True).encode()).hexdigest()[:12]
    folder = Path(root or cache_dir() / "models") / f"tiny_random-{digest}"
    if (folder / "model.safetensors").exists():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=folder.parent))
    try:
        mx.random.seed(seed)
        model = llama.Model(llama.ModelArgs.from_dict(config))
        weights = dict(tree_flatten(model.parameters()))
        mx.save_safetensors(str(tmp / "model.safetensors"), weights, metadata={"format": "mlx"})
        (tmp / "config.json").write_text(json.dumps(config, indent=1))
        write_tokenizer(tmp, min_vocab=min_vocab)
        try:
            tmp.rename(folder)
        except OSError:  # another process won the race
            if not (folder / "model.safetensors").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder
