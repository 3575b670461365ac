"""Fetching the official M4 CSV files (``dataset.download=true``).

Source: the M4 organisers' repository (github.com/Mcompetitions/M4-methods), raw files
``Dataset/Train/{Frequency}-train.csv`` and ``Dataset/Test/{Frequency}-test.csv``.

``base_url`` is a template: ``{split}`` becomes ``Train`` or ``Test`` and ``{frequency}`` the
capitalised frequency (``Hourly``); the file name ``{Frequency}-{train|test}.csv`` is appended
unless the template contains ``{file}``, which is replaced by it.

Only missing files are fetched. Each goes to a temporary file in the target folder; the pair is
parsed and must hold the M4 number of series (Hourly 414, Weekly 359, Daily 4227, Monthly 48000,
Quarterly 24000, Yearly 23000) before the temporary files are renamed into place. Any failure
(offline, HTTP error, a body shorter than its Content-Length, unparsable file, wrong count)
removes the temporary files and raises one DataError naming the URL and the folder to fill by hand.
"""

from __future__ import annotations

import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from ..errors import ConfigError, DataError
from .m4_files import M4_COUNTS, M4_RULES, m4_frequency, m4_paths, read_m4_csv

DEFAULT_BASE_URL = "https://raw.githubusercontent.com/Mcompetitions/M4-methods/master/Dataset/{split}/"
CHUNK = 1 << 20


def file_url(base_url: str, split: str, frequency: str) -> str:
    """URL of one file: ``split`` is ``train`` or ``test``, ``frequency`` any case."""
    cap = m4_frequency(frequency).capitalize()
    name = f"{cap}-{split.lower()}.csv"
    try:
        url = str(base_url).format(split=split.capitalize(), frequency=cap, file=name)
    except (KeyError, IndexError, ValueError) as e:
        raise ConfigError(f"dataset.base_url={base_url!r} is not a valid template (allowed "
                          f"placeholders: {{split}}, {{frequency}}, {{file}}): {e}") from e
    if "{file}" not in str(base_url):
        url = url if url.endswith("/") else url + "/"
        url += name
    return url


class _FetchError(Exception):
    def __init__(self, url: str, reason: str):
        super().__init__(reason)
        self.url, self.reason = url, reason


def _fetch(url: str, dest: Path, timeout: float) -> None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(dest, "wb") as out:
            expected = resp.headers.get("Content-Length")
            got = 0
            while True:
                block = resp.read(CHUNK)
                if not block:
                    break
                out.write(block)
                got += len(block)
            if expected is not None and expected.isdigit() and got != int(expected):
                raise _FetchError(url, f"the transfer was cut off ({got} of {expected} bytes)")
            if got == 0:
                raise _FetchError(url, "the server sent an empty file")
    except urllib.error.HTTPError as e:
        raise _FetchError(url, f"HTTP {e.code} {e.reason}") from e
    except urllib.error.URLError as e:
        raise _FetchError(url, f"cannot connect ({e.reason})") from e
    except (OSError, ValueError) as e:  # timeouts, resets, IncompleteRead, bad URL
        raise _FetchError(url, f"{type(e).__name__}: {e}") from e


def download_m4(frequency: str, root: str | Path, base_url: str = DEFAULT_BASE_URL,
                timeout: float = 60.0) -> tuple[Path, Path]:
    """Fetch the missing ``{Frequency}-train.csv`` / ``-test.csv`` into ``root``; return both paths."""
    freq = m4_frequency(frequency)
    root = Path(root)
    train, test = m4_paths(root, freq)
    splits = [(s, p) for s, p in (("train", train), ("test", test)) if not p.is_file()]
    if not splits:
        return train, test
    urls = {s: file_url(base_url, s, freq) for s, _ in splits}
    created_root = not root.exists()
    tmps: dict[str, Path] = {}
    hint = (f"Download {train.name} and {test.name} by hand into {root} (or point dataset.root "
            f"at a folder that holds them)")
    try:
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DataError(f"cannot create the M4 folder {root}: {e.strerror or e}. {hint}") from e
        for split, path in splits:
            fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=root)
            os.close(fd)
            tmps[split] = Path(name)
            try:
                _fetch(urls[split], tmps[split], timeout)
            except _FetchError as e:
                raise DataError(f"cannot download M4 {freq.capitalize()} from {e.url}: "
                                f"{e.reason}. {hint}") from e
        pair = {"train": tmps.get("train", train), "test": tmps.get("test", test)}
        labels = tuple(urls.get(s, str(p)) for s, p in (("train", train), ("test", test)))
        h, m = M4_RULES[freq]
        try:
            series = read_m4_csv(pair["train"], pair["test"], h, m, freq, labels=labels)
        except DataError as e:
            raise DataError(f"the downloaded M4 {freq.capitalize()} files are malformed: {e}. "
                            f"{hint}") from e
        if len(series) != M4_COUNTS[freq]:
            raise DataError(f"the downloaded M4 {freq.capitalize()} files from "
                            f"{' and '.join(urls.values())} hold {len(series)} series, expected "
                            f"{M4_COUNTS[freq]} (truncated or wrong file). {hint}")
        for split, path in splits:
            os.replace(tmps.pop(split), path)
        return train, test
    finally:
        for p in tmps.values():
            p.unlink(missing_ok=True)
        if created_root:
            try:
                root.rmdir()  # only succeeds when nothing was written
            except OSError:
                pass
