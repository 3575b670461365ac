"""The official M4 CSV files: their frequencies, file names and layout, and a strict reader.

M4 CSV layout: a header line whose first cell is ``V1`` (optional), then one series per line:
the id, then its values; cells may be double-quoted; rows are padded to a common width with empty
cells at the end. Cells never contain commas. Train and test files must list the same ids in the
same order; every test row must have exactly ``horizon`` values; every value must be a finite
number and a row may not have empty cells between values.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ..errors import ConfigError, DataError
from .series import Series

# frequency -> (horizon, seasonal period), M4 rules
M4_RULES: dict[str, tuple[int, int]] = {
    "yearly": (6, 1), "quarterly": (8, 4), "monthly": (18, 12),
    "weekly": (13, 1), "daily": (14, 1), "hourly": (48, 24),
}
# number of series per M4 frequency
M4_COUNTS: dict[str, int] = {
    "yearly": 23000, "quarterly": 24000, "monthly": 48000,
    "weekly": 359, "daily": 4227, "hourly": 414,
}


def m4_frequency(value: Any) -> str:
    """Canonical (lower-case) M4 frequency, or a ConfigError."""
    f = str(value or "").strip().lower()
    if f not in M4_RULES:
        raise ConfigError(f"dataset.frequency={value!r} is not an M4 frequency; use one of "
                          + ", ".join(k.capitalize() for k in M4_RULES))
    return f


def m4_paths(root: str | Path, frequency: str) -> tuple[Path, Path]:
    cap = m4_frequency(frequency).capitalize()
    root = Path(root)
    return root / f"{cap}-train.csv", root / f"{cap}-test.csv"


def _rows(path: Path, label: str) -> Iterable[tuple[int, list[str]]]:
    """(line number, cells without trailing empty ones) for every non-empty line."""
    try:
        f = open(path, newline="", encoding="utf-8-sig")
    except OSError as e:
        raise DataError(f"cannot read {label}: {e.strerror or e}") from e
    with f:
        try:
            # dropping the padding commas first keeps wide padded files (Daily: ~10k columns) fast
            stripped = (line.rstrip("\r\n").rstrip(", \t") for line in f)
            for lineno, cells in enumerate(csv.reader(stripped), start=1):
                end = len(cells)
                while end and not cells[end - 1].strip():
                    end -= 1
                if end:
                    yield lineno, cells[:end]
        except (csv.Error, UnicodeDecodeError) as e:
            raise DataError(f"{label} is not a readable CSV file: {e}") from e


def _check_not_cut(path: Path, label: str) -> None:
    """DataError when the file ends mid-row: no final newline and the last line has an open
    quote, or fewer cells than the padded rows before it (the official files pad every row to
    one width). A complete last row without a newline is accepted."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - (4 << 20)))
            tail = fh.read()
            fh.seek(0)
            head = fh.read(1 << 20).split(b"\n", 1)[0]
    except OSError:
        return  # reported by the reader
    if not tail or tail.endswith(b"\n"):
        return
    lines = tail.split(b"\n")
    last = lines[-1].rstrip(b"\r")
    prev = lines[-2].rstrip(b"\r") if len(lines) > 1 else b""
    # padded layout: the row before has as many cells as the header line
    padded = bool(prev) and prev.count(b",") == head.count(b",") and len(lines) > 2
    if last.count(b'"') % 2 == 1 or (padded and last.count(b",") < prev.count(b",")):
        raise DataError(f"{label} ends in the middle of a row (no final newline; the last row is "
                        "cut): the file is truncated; re-download it (dataset.download=true)")


def _read_one(path: Path, label: str) -> tuple[list[str], list[np.ndarray], list[int]]:
    _check_not_cut(path, label)
    ids, vals, lines = [], [], []
    for lineno, cells in _rows(path, label):
        sid = cells[0].strip()
        if lineno == 1 and sid.lower() in ("v1", "id"):
            continue  # header
        if not sid:
            raise DataError(f"{label}, row {lineno}: the first cell (series id) is empty")
        if len(cells) < 2:
            raise DataError(f"{label}, row {lineno} (series {sid}): no values")
        try:
            v = np.array(cells[1:], dtype=np.float64)
            ok = bool(np.isfinite(v).all())
        except ValueError:
            ok = False
        if not ok:
            for j, c in enumerate(cells[1:]):
                try:
                    good = bool(np.isfinite(float(c)))
                except ValueError:
                    good = False
                if not good:
                    raise DataError(f"{label}, row {lineno} (series {sid}), column {j + 2}: "
                                    f"{c!r} is not a finite number; fix or re-download the file")
        ids.append(sid)
        vals.append(v)
        lines.append(lineno)
    return ids, vals, lines


def read_m4_csv(train: str | Path, test: str | Path, horizon: int, period: int,
                frequency: str = "", labels: tuple[str, str] | None = None) -> list[Series]:
    """Parse a pair of M4-layout CSV files into series (``labels`` name the files in errors)."""
    train, test = Path(train), Path(test)
    ltr, lte = labels or (str(train), str(test))
    ids, xs, _ = _read_one(train, ltr)
    tids, ys, tlines = _read_one(test, lte)
    if not ids:
        raise DataError(f"{ltr} holds no series; fix or re-download the file")
    for i, (sid, tid, y, line) in enumerate(zip(ids, tids, ys, tlines)):
        if sid != tid:
            raise DataError(f"{lte}, row {line}: series id {tid!r} but {ltr} has {sid!r} at the "
                            f"same position; train and test files must list the same series in "
                            f"the same order")
        if y.size != horizon:
            raise DataError(f"{lte}, row {line} (series {tid}): {y.size} test values, expected "
                            f"{horizon} (the {frequency or 'M4'} horizon)")
    if len(tids) != len(ids):
        raise DataError(f"{ltr} has {len(ids)} series but {lte} has {len(tids)}; the two files "
                        f"must hold the same series")
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        dup = next(s for s in ids if s in seen or seen.add(s))
        raise DataError(f"{ltr}: series id {dup!r} appears more than once")
    return [Series(id=sid, x=x, y=y, horizon=int(horizon), period=int(period),
                   frequency=frequency, meta={"source": "m4_csv", "index": i + 1})
            for i, (sid, x, y) in enumerate(zip(ids, xs, ys))]
