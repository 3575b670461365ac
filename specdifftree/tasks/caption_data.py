"""The M4 caption data: series joined to reference captions (OpenTSLM's layout).

Data layout (OpenTSLM's ``M4TimeSeriesCaptionDataset``), in ``root``, per frequency:

- ``m4_series_<Frequency>.csv`` with columns ``id, series`` (``series`` a JSON list of numbers);
- ``m4_captions_<Frequency>.csv`` with columns ``id, caption``.

Column names are matched case-insensitively; series are joined to captions on ``id`` (series-file
order; series without a caption are skipped). :class:`CaptionSource` is the data source of
``dataset=m4_captions``; the task is :class:`specdifftree.tasks.captions.CaptionTask`.
"""

from __future__ import annotations

import csv
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataError

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


class CaptionSource:
    """Series with a reference caption from ``root``: the files of ``frequency`` (or the explicit
    ``series_file`` and ``captions_file``, relative to root); ``limit``: the first N only."""

    def __init__(self, root: str, frequency: str | None = None, series_file: str | None = None,
                 captions_file: str | None = None, limit: int | None = None):
        if not root:
            raise ConfigError("dataset.root is not set: give the folder holding "
                              "m4_series_<Frequency>.csv and m4_captions_<Frequency>.csv")
        self.root = Path(str(root)).expanduser()
        self.frequency = canonical_frequency(frequency) if frequency else ""
        self.files = {}
        for key, stem, name in (("series_file", "m4_series", series_file),
                                ("captions_file", "m4_captions", captions_file)):
            if not name and not self.frequency:
                raise ConfigError(f"dataset.frequency or dataset.{key} must be set")
            self.files[key] = (stem, str(name or f"{stem}_{self.frequency}.csv"))
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise ConfigError(f"dataset.limit={limit!r} must be a positive integer or null")
        self.limit = limit

    def _paths(self) -> dict[str, Path]:
        if not self.root.is_dir():
            raise DataError(f"dataset.root={self.root} is not a folder; download the M4 caption "
                            "dataset (m4_series_<Frequency>.csv, m4_captions_<Frequency>.csv) there")
        out = {}
        for key, (stem, name) in self.files.items():
            path = self.root / name
            if not path.is_file():
                raise DataError(f"{path} not found: put the caption dataset's {stem}_<Frequency>.csv "
                                f"files in dataset.root or set dataset.{key}")
            out[key] = path
        return out

    def load(self) -> list[CaptionSample]:
        names = self._paths()
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
                samples.append(CaptionSample(id=sid, series=x, caption=captions[sid],
                                             frequency=self.frequency))
                if self.limit is not None and len(samples) >= self.limit:
                    break
        if not samples:
            raise DataError(f"no series in {path} has a caption in {names['captions_file']} "
                            "(ids do not match)")
        return samples
