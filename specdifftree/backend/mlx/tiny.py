"""The ``tiny_random`` test model: a Llama-architecture model with seeded random weights.

It is written on first use as a real mlx-lm folder (config.json, model.safetensors, tokenizer
files) into the cache directory and then loaded through ``mlx_lm.load`` like any other model, so
everything downstream exercises the real loading path.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_flatten

from .cachedir import cache_dir
from .chartok import write_tokenizer, vocab

DEFAULT_SHAPE = {
    "hidden_size": 192,
    "num_hidden_layers": 6,
    "intermediate_size": 512,
    "num_attention_heads": 6,
    "num_key_value_heads": 2,
}


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


def random_folder(config: dict, seed: int, tokenizer_from: Path, tag: str,
                  root: Path | None = None) -> Path:
    """A seeded random model of any mlx-lm architecture (``config["model_type"]`` names the
    ``mlx_lm.models`` module, e.g. ``llama``, ``gemma3_text``, ``mamba``) with the tokenizer files
    of the folder ``tokenizer_from``, written once as a real mlx-lm folder."""
    import importlib

    tokenizer_from = Path(tokenizer_from)
    tok_files = sorted(p for p in tokenizer_from.iterdir()
                       if p.name.startswith(("tokenizer", "special_tokens")) and p.is_file())
    tok_digest = hashlib.sha256(b"".join(p.name.encode() + str(p.stat().st_size).encode()
                                         for p in tok_files)).hexdigest()
    digest = hashlib.sha256(json.dumps([config, seed, tok_digest], sort_keys=True).encode()).hexdigest()[:12]
    folder = Path(root or cache_dir() / "models") / f"{tag}-{digest}"
    if (folder / "model.safetensors").exists():
        return folder
    arch = importlib.import_module(f"mlx_lm.models.{config['model_type']}")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=folder.parent))
    try:
        mx.random.seed(seed)
        model = arch.Model(arch.ModelArgs.from_dict(config))
        weights = dict(tree_flatten(model.parameters()))
        mx.save_safetensors(str(tmp / "model.safetensors"), weights, metadata={"format": "mlx"})
        (tmp / "config.json").write_text(json.dumps(config, indent=1))
        for p in tok_files:
            shutil.copyfile(p, tmp / p.name)
        try:
            tmp.rename(folder)
        except OSError:  # another process won the race
            if not (folder / "model.safetensors").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


# Tiny shapes of three architectures with different caches (hidden 64): Llama (KVCache),
# Gemma 3 text (RotatingKVCache on 5 of 6 layers, sliding window 64 here), Mamba (ArraysCache).
TINY_ARCHS = {
    "llama": {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2,
              "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
              "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "tie_word_embeddings": True,
              "max_position_embeddings": 8192},
    "gemma3_text": {"model_type": "gemma3_text", "hidden_size": 64, "num_hidden_layers": 2,
                    "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 1,
                    "head_dim": 16, "query_pre_attn_scalar": 16, "sliding_window": 64,
                    "sliding_window_pattern": 2, "max_position_embeddings": 8192},
    "mamba": {"model_type": "mamba", "hidden_size": 64, "num_hidden_layers": 2,
              "intermediate_size": 128, "state_size": 8, "conv_kernel": 4, "time_step_rank": 4,
              "use_bias": False, "use_conv_bias": True, "tie_word_embeddings": True},
}


def llama3_random_folder(arch: str = "llama", seed: int = 0, root: Path | None = None) -> Path:
    """A tiny random model (``TINY_ARCHS[arch]``) on the real Llama 3 tokenizer (vocabulary
    128,256; BOS 128000, EOS ``<|end_of_text|>`` 128001 and ``<|eot_id|>`` 128009) in fp32."""
    from .llama3_tokenizer import BOS_ID, END_OF_TEXT_ID, EOT_ID, llama3_tokenizer_folder

    config = dict(TINY_ARCHS[arch], vocab_size=128256, bos_token_id=BOS_ID,
                  eos_token_id=[END_OF_TEXT_ID, EOT_ID], torch_dtype="float32")
    return random_folder(config, seed, llama3_tokenizer_folder(), f"llama3tok-{arch}", root=root)
