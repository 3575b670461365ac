"""The backend seam: what search methods and the runner may use of a model and its Session.

A backend provides two objects:

- a **model handle** (:class:`ModelHandle`), built once per model from ``conf/model/<name>.yaml``;
  it tokenizes and opens one :class:`Session` per prompt (``handle.session(prompt_ids,
  max_new_tokens=..., **cfg.backend)``);
- a **Session** (:class:`Session`): the prompt is prefilled once, then search code asks batched
  questions (next-token log-probs, top-k, rollouts) and reads the counters in ``stats``.

Search code and the runner see only these protocols; nothing above this layer imports a
backend's modules. The MLX backend (:mod:`specdifftree.backend.mlx`) is the one shipped.

**Optional capabilities.** A Session may offer more than the required protocol; search code
probes for these with ``getattr(session, name, False)`` and falls back to the required methods
(results are the same law either way):

- ``beam_lookahead = True``: ``topk(prefixes, k, scores=...)`` accepts the beam's cumulative
  scores and may compute the beam's next step ahead;
- ``ragged_rollouts = True``: ``rollout`` takes one ``max_new_tokens`` per row;
- :class:`ExcludingDraws` (``draw_excluding`` and ``log_mass_excluding``): exact draws and masses
  over the next tokens not yet expanded, computed where the log-probs live (a device).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence, runtime_checkable

import numpy as np


@dataclass
class Rollout:
    """One generated continuation.

    ``tokens`` are the new tokens after the starting prefix; ``logprobs[i]`` is
    log p_θ(tokens[i] | prompt, prefix, tokens[:i]) at temperature 1 (the base model), whatever
    temperature was used to sample. ``finished`` is True when the rollout ended with EOS.
    """

    prefix: tuple[int, ...]
    tokens: list[int]
    logprobs: list[float]
    finished: bool

    @property
    def full(self) -> tuple[int, ...]:
        return self.prefix + tuple(self.tokens)


@dataclass
class SessionStats:
    """The counters of one Session (the runner copies them into the results row).

    ``tokens_processed``: tokens pushed through the model (prompt once, cached tokens never);
    ``model_calls``: forward passes; ``eval_tokens``: tokens fed only to score sequences after the
    search (not in ``tokens_processed``); ``model_time_s``: time spent in the model;
    ``plain_logprob_sum``/``plain_tokens``: over tokens of rollouts sampled from p_θ at
    temperature 1; ``speculative_tokens``: tokens fed ahead whose result was discarded;
    ``cache_mode``: how the Session reuses work (``prefix_kv``, ``snapshot``, ...);
    ``recomputed_tokens``: tokens fed a second time (None where the backend never refeeds).
    """

    model_calls: int = 0
    tokens_processed: int = 0
    prompt_tokens: int = 0
    eval_tokens: int = 0
    model_time_s: float = 0.0
    plain_logprob_sum: float = 0.0
    plain_tokens: int = 0
    speculative_tokens: int = 0
    cache_mode: str = "prefix_kv"
    recomputed_tokens: int | None = None


class StatsCounters:
    """``model_calls``, ``tokens_processed`` and ``prompt_tokens`` of a Session, read from its
    ``stats`` (:class:`SessionStats`): a Session class inherits them."""

    stats: SessionStats

    @property
    def model_calls(self) -> int:
        return self.stats.model_calls

    @property
    def tokens_processed(self) -> int:
        return self.stats.tokens_processed

    @property
    def prompt_tokens(self) -> int:
        return self.stats.prompt_tokens


@runtime_checkable
class Session(Protocol):
    """Model access for one prompt: everything a search method or the runner reads."""

    eos_ids: frozenset[int]
    vocab_size: int
    stats: SessionStats

    @property
    def tokens_processed(self) -> int: ...

    @property
    def model_calls(self) -> int: ...

    @property
    def prompt_tokens(self) -> int: ...

    def decode(self, tokens: Sequence[int]) -> str: ...

    def logprobs(self, prefixes: Sequence[Sequence[int]]) -> np.ndarray:
        """Next-token log-probs (temperature 1) after prompt + each prefix: (B, V) float."""

    def topk(self, prefixes: Sequence[Sequence[int]], k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k most likely next tokens after each prefix: ``(ids, logprobs)``, each (B, k),
        largest first, ties broken by the lower id (-inf entries where fewer are possible)."""

    def rollout(self, prefixes: Sequence[Sequence[int]], max_new_tokens: int, *,
                temperature: float = 1.0, rng: np.random.Generator | None = None,
                top_k: int = 0, top_p: float = 1.0) -> list[Rollout]:
        """Generate from each prefix (greedy at temperature 0), stopping at EOS or
        ``max_new_tokens``."""

    def sequence_logprob(self, tokens: Sequence[int]) -> tuple[float, int]:
        """log p_θ(tokens) after the prompt and the tokens fed for it (``stats.eval_tokens``)."""


@runtime_checkable
class ExcludingDraws(Protocol):
    """Optional: next-token draws and masses over the tokens not in ``exclude``."""

    def draw_excluding(self, prefix: Sequence[int], exclude, rng: np.random.Generator):
        """``(token, log p_θ(token), log unexcluded mass before, after)`` or None."""

    def log_mass_excluding(self, prefix: Sequence[int], exclude) -> float: ...


@runtime_checkable
class ModelHandle(Protocol):
    """A loaded model: what tasks, preflight checks and the runner use.

    ``path``: the weights' folder or id (identifies the weights in run fingerprints; None when
    the backend has none); ``tokenizer``: an object with ``apply_chat_template`` where the
    model has a chat template (None otherwise); ``max_context``: None when unbounded.
    Optional: a static ``free_memory()`` that the model cache calls after dropping models of
    this kind (e.g. MLX's buffer cache).
    """

    name: str
    path: str | None
    vocab_size: int
    eos_token_ids: frozenset[int]
    max_context: int | None
    instruct: bool
    tokenizer: object

    @property
    def has_chat_template(self) -> bool: ...

    def encode(self, text: str) -> list[int]: ...

    def encode_prompt(self, text: str) -> list[int]: ...

    def decode(self, tokens: list[int]) -> str: ...

    def check_backend(self, **backend_cfg) -> None:
        """Raise ConfigError (one line) when ``cfg.backend`` cannot work with this model."""

    def session(self, prompt_ids: Sequence[int], max_new_tokens: int = 0,
                **backend_cfg) -> Session:
        """A Session for ``prompt_ids`` (``backend_cfg``: the keys of ``cfg.backend``)."""


def _target(model_cfg):
    """The ``_target_`` factory of a model config and its other keys (resolved), located as
    Hydra's ``instantiate`` locates it (``module.attribute``)."""
    from omegaconf import OmegaConf

    from ..errors import ConfigError

    keys = (OmegaConf.to_container(model_cfg, resolve=True) if OmegaConf.is_config(model_cfg)
            else dict(model_cfg))
    target = keys.pop("_target_", None)
    if not target:
        raise ConfigError("model._target_ is missing: a model config names its backend's model "
                          "factory, e.g. _target_: specdifftree.backend.mlx.handle.from_config")
    import importlib

    module, _, attr = str(target).rpartition(".")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(f"model._target_={target}: cannot be imported ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    return fn, keys


def build_model(model_cfg) -> ModelHandle:
    """The model handle of ``cfg.model``: its ``_target_`` called with its other keys (an
    unknown key is one ConfigError line naming the factory's arguments)."""
    import inspect

    from ..errors import ConfigError

    fn, keys = _target(model_cfg)
    try:
        inspect.signature(fn).bind(**keys)
    except TypeError as exc:
        try:
            names = [p for p in inspect.signature(fn).parameters if not p.startswith("_")]
        except (TypeError, ValueError):
            names = []
        raise ConfigError(f"model: {exc} (the keys of model={keys.get('name', '?')} are the "
                          f"arguments of {fn.__module__}.{fn.__qualname__}: "
                          f"{', '.join(names)})") from None
    return fn(**keys)


def planned_model_files(model_cfg) -> tuple[str | None, str | None]:
    """The weights (folder or id) and adapter folder ``cfg.model`` would load, without loading:
    ``model_files(**keys)`` of the factory's module when it defines one, else ``(None, None)``."""
    import importlib

    fn, keys = _target(model_cfg)
    files = getattr(importlib.import_module(fn.__module__), "model_files", None)
    return files(**keys) if files is not None else (None, None)
