"""Load an mlx-lm model (Hugging Face id, local folder, or the built-in test model)."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...errors import ModelError

log = logging.getLogger(__name__)

_DTYPES = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16",
           "bfloat16": "bfloat16", "bf16": "bfloat16"}


@dataclass
class LoadedModel:
    """An mlx-lm model with its tokenizer and what the Session needs to know about it."""

    model: Any
    tokenizer: Any  # mlx_lm TokenizerWrapper
    name: str
    path: str
    eos_token_ids: frozenset[int]
    vocab_size: int
    max_context: int | None
    load_time_s: float
    config: dict = field(default_factory=dict)
    instruct: bool = False  # the preset says the model follows chat instructions
    adapter_path: str | None = None

    def encode(self, text: str) -> list[int]:
        """Tokens of a piece of text (a continuation): no special tokens added."""
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    @property
    def bos_token(self) -> str | None:
        return getattr(self.tokenizer, "bos_token", None)

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "has_chat_template", False)
                    or getattr(self.tokenizer, "chat_template", None))

    def encode_prompt(self, text: str) -> list[int]:
        """Tokens of a prompt, as ``mlx_lm.generate`` encodes a text prompt: the tokenizer's
        special tokens (BOS) are added unless the text already starts with the BOS token (a chat
        template that writes it)."""
        bos = self.bos_token
        add = bos is None or not text.startswith(bos)
        return list(self.tokenizer.encode(text, add_special_tokens=add))

    def decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode([int(t) for t in tokens], skip_special_tokens=True)


def resolve_path(model_cfg) -> str:
    """The folder or hub id to hand to ``mlx_lm.load``; builds the built-in model if asked."""
    builtin = model_cfg.get("builtin")
    if builtin:
        if builtin == "tiny_random":
            from .tiny import random_model_folder

            shape = model_cfg.get("shape")
            return str(random_model_folder(seed=int(model_cfg.get("init_seed", 0)),
                                           shape=dict(shape) if shape else None,
                                           min_vocab=int(model_cfg.get("min_vocab", 0))))
        if builtin == "tiny_tslm":
            from .embedded import embedded_model_folder

            return str(embedded_model_folder())
        raise ModelError(f"model.builtin={builtin!r} is unknown: use tiny_random or tiny_tslm")
    path = model_cfg.get("path")
    if not path:
        raise ModelError("model.path is empty: give a local mlx-lm folder or a Hugging Face id")
    path = str(path)
    p = Path(path).expanduser()
    looks_local = path.startswith(("/", ".", "~")) or p.exists() or path.count("/") != 1
    if looks_local:
        if not p.is_dir():
            raise ModelError(f"model.path={path!r}: no such folder; give an mlx-lm model folder "
                             "(config.json, *.safetensors, tokenizer files) or a Hugging Face id")
        if not (p / "config.json").is_file():
            raise ModelError(f"model.path={path!r} has no config.json: it is not an mlx-lm model folder")
        if not list(p.glob("*.safetensors")):
            raise ModelError(f"model.path={path!r} has no *.safetensors weights")
        return str(p)
    return path


def resolve_adapter(model_cfg) -> str | None:
    """``model.adapter_path``: a folder of LoRA adapters as written by ``mlx_lm.lora``
    (``adapter_config.json`` + ``adapters.safetensors``), or None."""
    adapter = model_cfg.get("adapter_path")
    if not adapter:
        return None
    p = Path(str(adapter)).expanduser()
    if not p.is_dir():
        raise ModelError(f"model.adapter_path={str(adapter)!r}: no such folder; give the folder "
                         "mlx_lm.lora wrote (adapter_config.json, adapters.safetensors)")
    for name in ("adapter_config.json", "adapters.safetensors"):
        if not (p / name).is_file():
            raise ModelError(f"model.adapter_path={str(adapter)!r} has no {name}: it is not an "
                             "mlx-lm adapter folder (mlx_lm.lora --adapter-path writes one)")
    return str(p)


def load(model_cfg) -> LoadedModel:
    """Load the model described by ``model_cfg`` (keys: path | builtin, dtype, name,
    adapter_path, instruct)."""
    import mlx.core as mx
    import mlx_lm

    path = resolve_path(model_cfg)
    adapter = resolve_adapter(model_cfg)
    t0 = time.perf_counter()
    try:
        model, tokenizer = mlx_lm.load(path, adapter_path=adapter)
    except ModelError:
        raise
    except Exception as exc:  # noqa: BLE001 - mlx-lm raises many kinds; we name the model
        local = Path(path).exists()
        hint = ("the folder is not a valid mlx-lm model (check config.json and the weights)"
                if local and not adapter else
                f"the model or its adapters in {adapter!r} do not load (does the adapter belong "
                "to this model?)" if local else "it could not be fetched from the Hugging Face Hub (offline?); "
                "download it elsewhere and set model.path to the local folder")
        raise ModelError(f"cannot load model {path!r}: {hint} ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''})") from exc
    dtype = model_cfg.get("dtype")
    if dtype:
        if str(dtype) not in _DTYPES:
            raise ModelError(f"model.dtype={dtype!r} is unknown: use one of float32, float16, bfloat16")
        model.set_dtype(getattr(mx, _DTYPES[str(dtype)]))
    mx.eval(model.parameters())
    load_time = time.perf_counter() - t0
    config = {}
    cfg_file = Path(path) / "config.json"
    if cfg_file.exists():
        config = json.loads(cfg_file.read_text())
    eos = frozenset(int(t) for t in (tokenizer.eos_token_ids or []))
    if tokenizer.eos_token_id is not None:
        eos = eos | {int(tokenizer.eos_token_id)}
    vocab_size = int(config.get("vocab_size") or getattr(model.args, "vocab_size", 0) or len(tokenizer.vocab))
    max_ctx = config.get("max_position_embeddings")
    name = str(model_cfg.get("name") or Path(path).name)
    log.info("loaded model %s from %s in %.2fs", name, path, load_time)
    return LoadedModel(model=model, tokenizer=tokenizer, name=name, path=path, eos_token_ids=eos,
                       vocab_size=vocab_size, max_context=int(max_ctx) if max_ctx else None,
                       load_time_s=load_time, config=config,
                       instruct=bool(model_cfg.get("instruct", False)), adapter_path=adapter)

