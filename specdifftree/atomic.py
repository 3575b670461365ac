"""Durable file writes: a file is replaced whole (temporary file, fsync, rename, fsync of the
folder) or not at all. Used by the results writers and the run dir's metadata."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


#: name of the temporary file of an atomic rewrite of ``<name>`` by process ``<pid>``
TMP_PATTERN = ".{name}.tmp-{pid}"


def atomic_write(path: str | Path, data: bytes | str) -> None:
    """Replace ``path`` by ``data``: temporary file in the same dir, fsync, rename, fsync dir.

    The temporary file is ``.<name>.tmp-<pid>``; it is removed when the write fails, and one left
    by a killed process is removed at the next start in the dir (:func:`remove_stale_temporaries`).
    """
    from . import faults

    path = Path(path)
    if isinstance(data, str):
        data = data.encode()
    tmp = path.with_name(TMP_PATTERN.format(name=path.name, pid=os.getpid()))
    try:
        with open(tmp, "wb") as fh:
            half = len(data) // 2
            fh.write(data[:half])
            fh.flush()
            faults.crash_point("rewrite-mid")
            faults.crash_point(f"rewrite-mid@{path.name}")
            fh.write(data[half:])
            fh.flush()
            os.fsync(fh.fileno())
        faults.crash_point("rewrite")
        faults.crash_point(f"rewrite@{path.name}")
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise
    fsync_dir(path.parent)
