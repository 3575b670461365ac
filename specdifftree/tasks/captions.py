"""The M4 caption task: a series -> a detailed text caption, scored against a reference caption.

Data layout (OpenTSLM's ``M4TimeSeriesCaptionDataset``), in ``dataset.root``, per frequency:

- ``m4_series_<Frequency>.csv`` with columns ``id, series`` (``series`` a JSON list of numbers);
- ``m4_captions_<Frequency>.csv`` with columns ``id, caption``.

Column names are matched case-insensitively; series are joined to captions on ``id`` (series-file
order; series without a caption are skipped).

Prompt: the series (its last ``context_length`` values, all by default) normalised as
z = (x − mean)/std (population std; std 0 counts as 1), with the mean and std stated, serialized
with the project's serializer (``decimals`` fixed decimals, ", " between values), then the request
for a detailed caption. Results: ``valid`` (non-empty caption), ``caption_rougeL_f1``,
``caption_token_f1`` (see :mod:`specdifftree.rewards.caption`), ``caption`` and ``reference``.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataError
from ..rewards.base import RewardContext
from ..metrics.text import rouge_l_f1, token_f1
from .serialize import Serializer

FREQUENCIES = ("Yearly", "Quarterly", "Monthly", "Weekly", "Daily", "Hourly")

csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


@dataclass(frozen=True)
class CaptionSample:
    """One series with its reference caption."""

    id: str
    series: np.ndarray
    caption: str
    frequency: str = ""
    meta: dict = field(default_factory=dict, compare=False)


def _plain(cfg) -> dict:
    try:
        from omegaconf import DictConfig, OmegaConf
        if isinstance(cfg, DictConfig):
            cfg = OmegaConf.to_container(cfg, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"dataset config must be a mapping, got {type(cfg).__name__}")
    return dict(cfg)


def canonical_frequency(freq) -> str:
    for f in FREQUENCIES:
        if str(freq).strip().lower() == f.lower():
            return f
    raise ConfigError(f"dataset.frequency={freq!r} must be one of {', '.join(FREQUENCIES)}")


def _reader(path: Path, needed: tuple[str, ...]):
    """(file handle, csv reader, {needed name: actual column name})."""
    fh = open(path, newline="", encoding="utf-8")
    reader = csv.DictReader(fh)
    cols = {c.strip().lower(): c for c in (reader.fieldnames or []) if c is not None}
    missing = [n for n in needed if n not in cols]
    if missing:
        fh.close()
        raise DataError(f"{path}: missing column(s) {', '.join(missing)} (found "
                        f"{', '.join(reader.fieldnames or []) or 'no header'}); expected "
                        f"columns {', '.join(needed)}")
    return fh, reader, {n: cols[n] for n in needed}


def _read_captions(path: Path) -> dict[str, str]:
    fh, reader, col = _reader(path, ("id", "caption"))
    out: dict[str, str] = {}
    with fh:
        for row in reader:
            sid = (row.get(col["id"]) or "").strip()
            cap = (row.get(col["caption"]) or "").strip()
            if not sid:
                raise DataError(f"{path}, line {reader.line_num}: empty id")
            if not cap:
                raise DataError(f"{path}, line {reader.line_num}: empty caption for id {sid}")
            if sid in out:
                raise DataError(f"{path}, line {reader.line_num}: duplicate id {sid}")
            out[sid] = cap
    return out


def _parse_series(text: str, where: str) -> np.ndarray:
    try:
        vals = json.loads(text)
    except (json.JSONDecodeError, TypeError) as e:
        raise DataError(f"{where}: series is not a JSON list of numbers ({e})") from None
    if not isinstance(vals, list) or not vals:
        raise DataError(f"{where}: series must be a non-empty JSON list of numbers")
    try:
        x = np.asarray(vals, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{where}: series must be a flat JSON list of numbers") from None
    if x.ndim != 1 or not np.isfinite(x).all():
        raise DataError(f"{where}: series must be a flat list of finite numbers")
    return x


def load_caption_samples(dataset_cfg) -> list[CaptionSample]:
    """Samples of the caption dataset; config keys ``root``, ``frequency`` (or ``series_file``
    and ``captions_file`` relative to root) and optional ``limit`` (first N)."""
    cfg = _plain(dataset_cfg)
    root = cfg.get("root")
    if not root:
        raise ConfigError("dataset.root is not set: give the folder holding m4_series_<Frequency>.csv "
                          "and m4_captions_<Frequency>.csv")
    root = Path(str(root)).expanduser()
    if not root.is_dir():
        raise DataError(f"dataset.root={root} is not a folder; download the M4 caption dataset "
                        "(m4_series_<Frequency>.csv, m4_captions_<Frequency>.csv) there")
    freq = cfg.get("frequency")
    freq = canonical_frequency(freq) if freq else ""
    names = {}
    for key, stem in (("series_file", "m4_series"), ("captions_file", "m4_captions")):
        name = cfg.get(key)
        if not name:
            if not freq:
                raise ConfigError(f"dataset.frequency or dataset.{key} must be set")
            name = f"{stem}_{freq}.csv"
        path = root / str(name)
        if not path.is_file():
            raise DataError(f"{path} not found: put the caption dataset's {stem}_<Frequency>.csv "
                            f"files in dataset.root or set dataset.{key}")
        names[key] = path
    limit = cfg.get("limit")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"dataset.limit={limit!r} must be a positive integer or null")

    captions = _read_captions(names["captions_file"])
    path = names["series_file"]
    fh, reader, col = _reader(path, ("id", "series"))
    samples: list[CaptionSample] = []
    seen: set[str] = set()
    with fh:
        for row in reader:
            sid = (row.get(col["id"]) or "").strip()
            where = f"{path}, line {reader.line_num}"
            if not sid:
                raise DataError(f"{where}: empty id")
            if sid in seen:
                raise DataError(f"{where}: duplicate id {sid}")
            seen.add(sid)
            if sid not in captions:
                continue
            x = _parse_series(row.get(col["series"]), f"{where} (id {sid})")
            samples.append(CaptionSample(id=sid, series=x, caption=captions[sid], frequency=freq))
            if limit is not None and len(samples) >= limit:
                break
    if not samples:
        raise DataError(f"no series in {path} has a caption in {names['captions_file']} "
                        "(ids do not match)")
    return samples


@dataclass
class CaptionTask:
    """Prompting and scoring for the caption task (see the module docstring)."""

    serializer: Serializer = field(default_factory=lambda: Serializer(separator=", ", decimals=2))
    context_length: int | None = None
    chat: bool = False
    caption_tokens: int = 256
    instruction: str = ("Here is a time series of {n} values{source}. It is shown normalised: its "
                        "mean ({mean}) was subtracted and the result divided by its standard "
                        "deviation ({std}).\nNormalised values: {values}\n"
                        "Generate a detailed caption of this time series, describing its trend, "
                        "seasonality, volatility and notable features.")

    @classmethod
    def from_config(cls, dataset_cfg) -> "CaptionTask":
        cfg = _plain(dataset_cfg)
        cl = cfg.get("context_length")
        if cl is not None and (isinstance(cl, bool) or not isinstance(cl, int) or cl < 1):
            raise ConfigError(f"dataset.context_length={cl!r} must be a positive integer or null")
        mnt = cfg.get("max_new_tokens", 256)
        if isinstance(mnt, bool) or not isinstance(mnt, int) or mnt < 1:
            raise ConfigError(f"dataset.max_new_tokens={mnt!r} must be a positive integer")
        try:
            ser = Serializer(separator=", ", decimals=int(cfg.get("decimals", 2)))
        except ValueError as e:
            raise ConfigError(f"dataset.decimals: {e}") from None
        return cls(serializer=ser, context_length=cl, chat=bool(cfg.get("chat", False)),
                   caption_tokens=mnt)

    def context(self, s: CaptionSample) -> np.ndarray:
        x = np.asarray(s.series, dtype=np.float64)
        return x[-self.context_length:] if self.context_length else x

    @staticmethod
    def normalise(x: np.ndarray) -> tuple[np.ndarray, float, float]:
        """(z, mean, std) with z = (x − mean)/std; std 0 counts as 1."""
        x = np.asarray(x, dtype=np.float64)
        mean = float(x.mean())
        std = float(x.std())
        if not std > 0 or not math.isfinite(std):
            std = 1.0
        return (x - mean) / std, mean, std

    def prompt_body(self, s: CaptionSample) -> str:
        x = self.context(s)
        z, mean, std = self.normalise(x)
        source = f" from the M4 {s.frequency} data" if s.frequency else ""
        return self.instruction.format(n=len(x), source=source, mean=f"{mean:.6g}",
                                       std=f"{std:.6g}", values=self.serializer.encode(z, 1.0))

    def prompt_text(self, s: CaptionSample, tokenizer=None) -> str:
        body = self.prompt_body(s)
        if not self.chat:
            return body + "\nCaption:"
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise ValueError("prompt.chat=true needs a model whose tokenizer has a chat template")
        return tokenizer.apply_chat_template([{"role": "user", "content": body}],
                                             add_generation_prompt=True, tokenize=False)

    def max_new_tokens(self, s: CaptionSample) -> int:
        return self.caption_tokens

    @staticmethod
    def caption_of(text: str) -> str:
        return str(text).strip()

    def evaluate(self, text: str, s: CaptionSample) -> dict:
        cap = self.caption_of(text)
        return {"valid": bool(cap), "caption_rougeL_f1": rouge_l_f1(cap, s.caption),
                "caption_token_f1": token_f1(cap, s.caption), "caption": cap,
                "reference": s.caption}

    def reward_context(self, s: CaptionSample) -> RewardContext:
        x = np.array(s.series, dtype=np.float64)
        x.flags.writeable = False  # a reward cannot change the shared sample
        return RewardContext(history=self.context(s), full_history=x, horizon=0, period=1,
                             truth=None, sample=s,
                             extra={"reference": s.caption, "frequency": s.frequency})

    def reward_inputs(self, texts: list[str], s: CaptionSample) -> tuple[np.ndarray, np.ndarray]:
        """(forecasts, valid) to pass to a reward with these texts: an empty (B, 0) forecast
        array and valid = 1.0 for a non-empty caption, else 0.0."""
        valid = np.array([1.0 if self.caption_of(t) else 0.0 for t in texts])
        return np.zeros((len(texts), 0)), valid
