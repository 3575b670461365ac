"""The MLX model handle: a loaded mlx-lm model that opens Sessions (the ``_target_`` of
``conf/model/*.yaml`` is :func:`from_config`)."""

from __future__ import annotations

from dataclasses import dataclass, fields

from .loader import LoadedModel, load, resolve_adapter, resolve_path


@dataclass
class MLXModel(LoadedModel):
    """A :class:`LoadedModel` behind the :class:`~specdifftree.backend.base.ModelHandle`
    protocol."""

    def check_backend(self, kv_bits=None, kv_group_size=64, **_other) -> None:
        """ConfigError (one line) when ``backend.kv_bits`` cannot quantize this model's cache."""
        if kv_bits is not None:
            from .snapshot import check_kv_quantization

            check_kv_quantization(self, int(kv_bits), int(kv_group_size))

    def session(self, prompt_ids, max_new_tokens: int = 0, logprob_cache_mb: float = 64.0,
                kv_cache_mb: float = 1024.0, kv_bits=None, kv_group_size: int = 64,
                quantized_kv_start: int = 5000):
        """The Session for ``prompt_ids``; the keyword arguments are the keys of ``cfg.backend``
        (:func:`.snapshot.open_session` picks the prefix-KV or the snapshot Session)."""
        from .snapshot import open_session

        return open_session(self, prompt_ids, max_new_tokens=int(max_new_tokens),
                            logprob_cache_mb=float(logprob_cache_mb), kv_cache_mb=float(kv_cache_mb),
                            kv_bits=None if kv_bits is None else int(kv_bits),
                            kv_group_size=int(kv_group_size),
                            quantized_kv_start=int(quantized_kv_start))

    @staticmethod
    def free_memory() -> None:
        """Return the memory of dropped models to the system (MLX's buffer cache)."""
        import gc

        gc.collect()
        try:
            import mlx.core as mx

            mx.clear_cache()
        except (ImportError, AttributeError):
            pass


def from_config(*, path: str | None = None, builtin: str | None = None, name: str | None = None,
                dtype: str | None = None, instruct: bool = False, adapter_path: str | None = None,
                init_seed: int = 0, shape: dict | None = None, min_vocab: int = 0) -> MLXModel:
    """The ``_target_`` of ``conf/model/*.yaml``: its keys are these arguments (see
    :func:`.loader.load`)."""
    lm = load(dict(path=path, builtin=builtin, name=name, dtype=dtype, instruct=instruct,
                   adapter_path=adapter_path, init_seed=init_seed, shape=shape,
                   min_vocab=min_vocab))
    return MLXModel(**{f.name: getattr(lm, f.name) for f in fields(LoadedModel)})


def model_files(*, path: str | None = None, builtin: str | None = None,
                adapter_path: str | None = None, init_seed: int = 0, shape: dict | None = None,
                min_vocab: int = 0, **_other) -> tuple[str | None, str | None]:
    """The weights folder (or hub id) and adapter folder :func:`from_config` would load with
    these keys, without loading them (run fingerprints of planned jobs)."""
    cfg = dict(path=path, builtin=builtin, adapter_path=adapter_path, init_seed=init_seed,
               shape=shape, min_vocab=min_vocab)
    return resolve_path(cfg), resolve_adapter(cfg)
