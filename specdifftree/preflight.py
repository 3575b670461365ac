"""Checks run once before the first sample: what would make *every* sample fail is a config error.

Each check raises :class:`~specdifftree.errors.ConfigError` with one line naming the setting and
the fix (the CLI prints it and exits 2). Faults of single samples stay error rows.

- ``prompt.chat=true`` with a tokenizer that has no chat template;
- a tokenizer that does not belong to the weights: token ids beyond the embedding (they would
  index past it), or a tokenizer covering under half of the embedding rows (the model then
  mostly samples ids the tokenizer cannot decode: empty texts);
- the prompt (plus ``max_new_tokens``) longer than the model's context for every series;
- ``method.expansion_k`` larger than the vocabulary, or a batch width (beam ``expansion_k``,
  ``parallel_rollouts``) whose key/value memory would exceed ``backend.kv_cache_mb``;
- ``max_new_tokens`` below the tokens that writing the true future of every selected series takes
  in the prompt's number format (every forecast would be cut short: 0% valid; a warning when
  only some series are affected; ``max_new_tokens_check=false`` runs such a budget anyway);
- λ·r overflow: ``method.lam`` (λ) × the largest reward magnitude the search can see
  (``reward.failure_reward``) not representable in float64 arithmetic.
"""

from __future__ import annotations

import logging
import math


from .errors import ConfigError

log = logging.getLogger(__name__)

#: ratio tokenizer size / embedding rows below which a model folder is taken to be inconsistent
MIN_TOKENIZER_COVERAGE = 0.5
#: |λ·r| at or above this overflows exp/log-sum-exp sums in float64 (exp(709.8) = 1.8e308 is the
#: largest float64; the search works in log space, so the bound is on λ·r itself, with room for sums)
MAX_LAMBDA_R = 1e300
#: memory bound for batch key/value tensors when backend.kv_cache_mb is 0 (no prefix store)
DEFAULT_WORKING_MB = 1024


def tokenizer_size(tokenizer) -> int | None:
    """Number of token ids the tokenizer can produce (max id + 1)."""
    try:
        vocab = tokenizer.get_vocab() if hasattr(tokenizer, "get_vocab") else tokenizer.vocab
        ids = list(vocab.values())
        return max(ids) + 1 if ids else 0
    except Exception:  # noqa: BLE001 - an exotic tokenizer: skip the check
        return None


def kv_bytes_per_token(lm) -> int | None:
    cfg = getattr(lm, "config", {}) or {}
    layers = cfg.get("num_hidden_layers")
    heads = cfg.get("num_key_value_heads") or cfg.get("num_attention_heads")
    hidden, n_heads = cfg.get("hidden_size"), cfg.get("num_attention_heads")
    head_dim = cfg.get("head_dim") or (hidden // n_heads if hidden and n_heads else None)
    if not (layers and heads and head_dim):
        return None
    dtype = str(getattr(lm, "dtype", "") or cfg.get("torch_dtype") or "float32")
    width = 4 if "32" in dtype else 2
    return int(2 * layers * heads * head_dim * width)


def check_model(exp) -> None:
    lm, cfg = exp.lm, exp.cfg
    tok = lm.tokenizer
    chat = bool(getattr(exp.task, "chat", False))
    if chat and not getattr(tok, "chat_template", None):
        raise ConfigError(f"prompt.chat=true but the tokenizer of model {lm.name} has no chat "
                          "template; use prompt.chat=false (plain continuation) or an instruct "
                          "model with a chat template")
    n_tok = tokenizer_size(tok)
    rows = int(lm.vocab_size or 0)
    if n_tok and rows:
        if n_tok > rows:
            raise ConfigError(f"model {lm.name}: the tokenizer has ids up to {n_tok - 1} but the "
                              f"embedding has {rows} rows; the tokenizer does not belong to these "
                              "weights (use the model folder's own tokenizer files)")
        if n_tok < MIN_TOKENIZER_COVERAGE * rows:
            raise ConfigError(f"model {lm.name}: the tokenizer has {n_tok} tokens but the "
                              f"embedding has {rows} rows; most sampled ids would decode to "
                              "nothing: the tokenizer does not belong to these weights")
    m = exp.method
    k = getattr(m, "expansion_k", None) or getattr(m, "k", None)
    if k and rows and int(k) > rows:
        raise ConfigError(f"method.expansion_k={k} exceeds the vocabulary of model {lm.name} "
                          f"({rows} tokens); use a value <= {rows}")
    beam_k = (int(getattr(m, "k", 0) or 0) or rows) if m.name == "beam" else 0  # 0 = no cap
    width = max(beam_k,
                int(getattr(m, "parallel_rollouts", 1) or 1))
    per_tok = kv_bytes_per_token(lm)
    if width > 1 and per_tok:
        budget_mb = float(cfg.backend.get("kv_cache_mb", 1024) or 0) or DEFAULT_WORKING_MB
        max_new = int(cfg.max_new_tokens or 0) or 64
        ctx = min(int(lm.max_context or 10**9), _prompt_tokens_estimate(exp) + max_new)
        need_mb = width * ctx * per_tok / 2**20
        if need_mb > budget_mb:
            what = "method.expansion_k" if m.name == "beam" else "method.parallel_rollouts"
            raise ConfigError(f"{what}={width}: a batch of {width} continuations of ~{ctx} "
                              f"tokens needs ~{need_mb:,.0f} MB of key/value memory, more than "
                              f"backend.kv_cache_mb={budget_mb:g}; lower {what} or raise "
                              "backend.kv_cache_mb")


def _prompt_tokens_estimate(exp) -> int:
    if not exp.samples:
        return 0
    try:
        return len(exp.lm.encode(exp.task.prompt_text(exp.samples[0], exp.lm.tokenizer)))
    except Exception:  # noqa: BLE001 - the sample itself reports its problem
        return 0


def check_context(exp) -> None:
    """Config error when no selected series fits the model's context (stops at the first fit)."""
    lm, cfg = exp.lm, exp.cfg
    if not lm.max_context or not exp.samples:
        return
    shortest = None
    for s in exp.samples:
        try:
            n = len(lm.encode(exp.task.prompt_text(s, lm.tokenizer)))
            max_new = int(cfg.max_new_tokens or exp.task.max_new_tokens(s))
        except Exception:  # noqa: BLE001 - a per-sample fault: that sample's error row says it
            return
        if n + max_new <= lm.max_context:
            return
        shortest = n + max_new if shortest is None else min(shortest, n + max_new)
    raise ConfigError(f"every prompt is longer than the context of model {lm.name} "
                      f"({lm.max_context} tokens; the shortest needs {shortest} with "
                      "max_new_tokens); lower dataset.context_length or max_new_tokens")


def forecast_tokens(exp, s) -> int | None:
    """Tokens the model needs to write series ``s``'s true future in the prompt's number format:
    what even a perfect forecast costs (None when it cannot be computed: the sample reports)."""
    try:
        return exp.task.min_new_tokens(s, exp.lm)
    except Exception:  # noqa: BLE001 - a per-sample fault: that sample's error row says it
        return None


def check_budget(exp) -> None:
    """Config error when ``max_new_tokens`` is below what writing the horizon takes for every
    selected series (every forecast would be cut short: 0% valid); a warning when for some."""
    cfg = exp.cfg
    budget = cfg.get("max_new_tokens")
    if not budget or not exp.samples:
        return
    if not bool(cfg.get("max_new_tokens_check", True)):
        return
    budget = int(budget)
    short, needs = [], []
    for s in exp.samples:
        need = forecast_tokens(exp, s)
        if need is None:
            return
        needs.append(need)
        if need > budget:
            short.append((s, need))
    if not short:
        return
    lm, n = exp.lm, len(exp.samples)
    s0, need0 = min(short, key=lambda x: x[1])
    fix = (f"raise max_new_tokens to at least {max(needs)}, or max_new_tokens=null to derive it "
           "from each horizon (max_new_tokens_check=false runs it anyway, e.g. a smoke test)")
    if len(short) == n:
        raise ConfigError(
            f"max_new_tokens={budget} cannot hold a forecast: writing the {s0.horizon} values "
            f"of a {cfg.dataset.name} series takes at least {need0} tokens of model {lm.name} "
            f"(prompt.decimals={cfg.prompt.decimals}), so every forecast would be cut short and "
            f"invalid; {fix}")
    log.warning("max_new_tokens=%d is below what writing the horizon takes for %d of %d series "
                "(up to %d tokens): those forecasts will be cut short; %s", budget, len(short), n,
                max(needs), fix)


def check_lambda(exp) -> None:
    lam = getattr(exp.method, "lam", None)
    if lam is None:
        return
    worst = abs(float(getattr(exp.reward, "failure_reward", 1000.0) or 0.0))
    prod = float(lam) * max(worst, 1.0)
    if not math.isfinite(prod) or prod >= MAX_LAMBDA_R:
        raise ConfigError(f"method.lam={lam:g}: λ·r reaches {prod:.3g} for rewards of "
                          f"magnitude {max(worst, 1.0):g} (reward.failure_reward), beyond float64 "
                          "range; use a smaller method.lam (or reward.failure_reward)")


def preflight(exp) -> None:
    check_lambda(exp)
    if exp.method.needs_model and exp.lm is not None:
        check_model(exp)
        check_context(exp)
        check_budget(exp)
