"""Run folders you can trust: config fingerprint, provenance, lock, crash-safe rewrites.

A run dir holds, besides ``results.jsonl`` and ``summary.csv``:

``run.json``
    ``fingerprint`` — everything that changes results: the resolved config without the keys that
    only shape output (:data:`OUTPUT_ONLY`), the package version, the model weights' identity and
    the identity of the evaluated series; ``provenance`` — package version, git commit (in a
    checkout), Python, MLX and mlx-lm versions, device, host, model path and weights hash, dataset
    fingerprint, start time; ``runs`` — one entry per (re)start (:func:`start_record`: time, host,
    pid, git commit, argv, rows reused, and how it ended). Re-running into a dir whose fingerprint
    differs stops with one line
    naming the keys that differ (:class:`FingerprintMismatch`, exit 2); ``resume=false`` starts
    clean in a new dir instead.
``.lock``
    held with ``flock`` while a run writes into the dir; a second run into the same dir stops with
    one line (:class:`RunDirBusy`). The kernel releases the lock when its process dies (also on
    ``kill -9``), so a stale lock never blocks; the file itself stays and names the last holder.
``results.rejected.jsonl``
    lines of ``results.jsonl`` that could not be used (not JSON, not an object, torn by a crash,
    duplicates): moved here on resume, one JSON object per line with the line number, the reason
    and the raw text, and reported.

Every rewrite of a results file goes to a temporary file in the same dir, is fsynced, then
renamed over the old one (and the dir fsynced), so a crash at any moment leaves either the old or
the new file complete; the temporary file of a killed rewrite is never read and is removed at the
next start (:func:`remove_stale_temporaries`).
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import platform
import socket
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Iterable

from .atomic import atomic_write
from .errors import SpecDiffTreeError

log = logging.getLogger(__name__)

RUN_FILE = "run.json"
LOCK_FILE = ".lock"
REJECTED_FILE = "results.rejected.jsonl"
#: top-level config keys that never change results (display, logging, Hydra, the resume switch)
OUTPUT_ONLY = ("output", "logger", "hydra", "resume")
#: dotted keys that change cost or where data comes from, never what a run computes: the caches
#: are tested not to change results; the data's own identity replaces its location
NOT_RESULTS = ("backend.kv_cache_mb", "backend.logprob_cache_mb", "dataset.root",
               "dataset.download", "dataset.base_url", "dataset.download_timeout", "model.path",
               "max_new_tokens_check")
# files hashed in full whatever their size (small); weights: see weights_identity
_MODEL_META = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
               "tokenizer.model", "vocab.json", "merges.txt", "chat_template.jinja",
               "generation_config.json")
FULL_HASH_BYTES = 64 << 20   # weights up to this size are hashed in full
PART_BYTES = 1 << 20         # else: header + first and last MB of every weights file


class RunDirError(SpecDiffTreeError):
    """The run dir cannot be used (a file, read-only, full disk, ...)."""


class RunDirBusy(SpecDiffTreeError):
    """Another live run holds the run dir's lock."""


class FingerprintMismatch(SpecDiffTreeError):
    """The run dir holds results of another configuration."""


# ------------------------------------------------------------------------- temporary files

def _tmp_owner(name: str) -> int | None:
    """The pid in a temporary file name ``.<name>.tmp-<pid>`` (None if it is not one)."""
    if not name.startswith("."):
        return None
    head, sep, pid = name.rpartition(".tmp-")
    return int(pid) if sep and head and pid.isdigit() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. EPERM: it exists
        return True
    return True


def remove_stale_temporaries(folder: str | Path, locked: bool = True) -> list[str]:
    """Remove the temporary files of atomic rewrites that a killed process left in ``folder``.

    ``locked``: the caller holds the folder's run lock, so no other process writes in it and
    every temporary file is stale; otherwise only those whose process is gone are removed. The
    files are never read: a killed rewrite left the old file whole. Returns the removed names.
    """
    removed = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for p in entries:
        pid = _tmp_owner(p.name)
        if pid is None or not p.is_file() or p.is_symlink():
            continue
        if not locked and pid != os.getpid() and _alive(pid):
            continue
        try:
            p.unlink()
            removed.append(p.name)
        except OSError:
            continue
    if removed:
        log.warning("%s: removed %d temporary file(s) left by a killed rewrite (%s); the files "
                    "they were to replace are whole", folder, len(removed), ", ".join(sorted(removed)))
    return removed


def describe_oserror(exc: OSError, path: Path | str) -> str:
    """One line for an OS error on the run dir, with the fix."""
    reason = {errno.ENOSPC: "the disk is full", errno.EROFS: "the file system is read-only",
              errno.EACCES: "permission denied", errno.EPERM: "permission denied",
              errno.ENOTDIR: "a parent of it is a file, not a folder",
              errno.EEXIST: "it exists and is not a folder",
              errno.EISDIR: "a folder is in the way of a results file",
              errno.EDQUOT: "the disk quota is exceeded",
              errno.EFBIG: "the file size limit is reached (disk full or ulimit -f)"}.get(exc.errno, exc.strerror or str(exc))
    return (f"cannot write the run dir {path}: {reason} ({type(exc).__name__}); free space or "
            "choose a writable folder with hydra.run.dir=... (run(cfg, run_dir=...) in Python)")


def check_writable_dir(path: str | Path) -> Path:
    """Create ``path`` if needed and prove it is a writable folder; RunDirError otherwise."""
    path = Path(path)
    try:
        if path.exists() and not path.is_dir():
            raise OSError(errno.EEXIST, "not a folder")
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        with open(probe, "wb") as fh:
            fh.write(b"ok")
            fh.flush()
            os.fsync(fh.fileno())
        probe.unlink()
    except OSError as exc:
        raise RunDirError(describe_oserror(exc, path)) from None
    return path


# ------------------------------------------------------------------------------------- lock

class RunLock:
    """An exclusive ``flock`` on ``<run dir>/.lock`` for the duration of a run."""

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        import fcntl

        try:
            fd = os.open(str(self.path), os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise RunDirError(describe_oserror(exc, self.path.parent)) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            try:
                holder = os.pread(fd, 4096, 0).decode(errors="replace").strip()
            except OSError:
                holder = ""
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                info = _parse_holder(holder)
                raise RunDirBusy(f"run dir {self.path.parent} is in use by another run ({info}); "
                                 "wait for it to finish or choose another hydra.run.dir") from None
            if exc.errno == errno.ENOLCK:  # a file system without locks: run unguarded
                log.warning("cannot lock %s (no lock support on this file system); make sure "
                            "no other run writes into this dir", self.path)
                return self
            raise RunDirError(describe_oserror(exc, self.path.parent)) from None
        self._fd = fd
        stamp = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                            "started_at": _now()}) + "\n"
        os.ftruncate(fd, 0)
        os.pwrite(fd, stamp.encode(), 0)
        return self

    def release(self) -> None:
        if self._fd is not None:
            import fcntl

            try:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            finally:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _parse_holder(text: str) -> str:
    try:
        d = json.loads(text)
        return f"pid {d.get('pid')} on {d.get('host')}, started {d.get('started_at')}"
    except (json.JSONDecodeError, AttributeError):
        return "holder unknown"


def _now() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


# ------------------------------------------------------------------------------ fingerprint

def flatten(d, prefix: str = "") -> dict:
    out = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(flatten(v, f"{prefix}{k}."))
        if not d and prefix:
            out[prefix[:-1]] = {}
    else:
        out[prefix[:-1]] = d
    return out


def result_config(cfg) -> dict:
    """The resolved config as flat ``dotted.key -> value``, without output-only keys."""
    from omegaconf import OmegaConf

    data = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else dict(cfg)
    for k in OUTPUT_ONLY:
        data.pop(k, None)
    flat = flatten(data)
    return {k: v for k, v in sorted(flat.items()) if k not in NOT_RESULTS}


def _sha(h: "hashlib._Hash", path: Path, limit: int | None = None, tail: int = 0) -> None:
    size = path.stat().st_size
    with open(path, "rb") as fh:
        if limit is None or size <= limit + tail:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
            return
        h.update(fh.read(limit))
        fh.seek(size - tail)
        h.update(fh.read(tail))


_WEIGHTS_CACHE: dict[tuple, dict] = {}


def weights_identity(folder: str | Path) -> dict:
    """Identity of an mlx-lm model folder: sha256 over config/tokenizer files and the weights.

    Weights totalling ≤ 64 MB are hashed in full; larger ones by size, safetensors header (the
    tensor names, shapes and offsets) and their first and last MB — a few ms for multi-GB models.
    A Hugging Face id that is not a local folder is identified by its id only.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return {"kind": "hub_id", "id": str(folder), "sha256": None}
    weights = sorted(folder.glob("*.safetensors"))
    stamp = tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in weights)
    key = (str(folder.resolve()), stamp)
    if key in _WEIGHTS_CACHE:
        return _WEIGHTS_CACHE[key]
    total = sum(p.stat().st_size for p in weights)
    full = total <= FULL_HASH_BYTES
    h = hashlib.sha256()
    for name in _MODEL_META:
        p = folder / name
        if p.is_file():
            h.update(name.encode())
            _sha(h, p)
    for p in weights:
        h.update(f"{p.name}:{p.stat().st_size}".encode())
        if full:
            _sha(h, p)
        else:
            with open(p, "rb") as fh:
                n = int.from_bytes(fh.read(8), "little")
                h.update(fh.read(min(n, 100 << 20)))
            _sha(h, p, limit=PART_BYTES, tail=PART_BYTES)
    out = {"kind": "full" if full else "header+edges", "sha256": h.hexdigest(),
           "weights_bytes": total, "files": [p.name for p in weights]}
    _WEIGHTS_CACHE[key] = out
    return out


def series_identity(samples: Iterable) -> str:
    """sha256 over the ids, horizons, periods, histories and futures of the evaluated series."""
    import numpy as np

    h = hashlib.sha256()
    for s in samples:
        h.update(f"{s.id}|{getattr(s, 'horizon', '')}|{getattr(s, 'period', '')}|".encode())
        for arr in (getattr(s, "x", None), getattr(s, "y", None)):
            if arr is not None:
                h.update(np.ascontiguousarray(np.asarray(arr, dtype=np.float64)).tobytes())
                h.update(b"|")
        for k in ("reference", "caption"):
            v = getattr(s, k, None)
            if isinstance(v, str):
                h.update(v.encode())
    return h.hexdigest()


def package_version() -> str:
    from .version import __version__

    return __version__


def adapter_identity(folder: str | Path) -> str:
    """sha256 over a LoRA adapter folder's config and weights (adapters are small)."""
    h = hashlib.sha256()
    for name in ("adapter_config.json", "adapters.safetensors"):
        p = Path(folder) / name
        if p.is_file():
            h.update(name.encode())
            _sha(h, p)
    return h.hexdigest()


def fingerprint(cfg, lm, samples) -> dict:
    """What a run dir's results depend on (compared on resume)."""
    return _fingerprint(cfg, getattr(lm, "path", None), getattr(lm, "adapter_path", None), samples)


def planned_fingerprint(cfg, samples, needs_model: bool) -> dict:
    """The fingerprint a run of ``cfg`` will have, without loading the model: the weights are
    identified from the files :func:`specdifftree.backend.base.planned_model_files` names (what the
    loader loads). Raises what the loader would (e.g. a missing folder)."""
    path = adapter = None
    if needs_model:
        from .backend.base import planned_model_files

        path, adapter = planned_model_files(cfg.model)
    return _fingerprint(cfg, path, adapter, samples)


def _fingerprint(cfg, model_path, adapter_path, samples) -> dict:
    fp = {"config": result_config(cfg),
          "package_version": package_version(),
          "model_weights": ((weights_identity(model_path)["sha256"] or str(model_path))
                            if model_path else None),
          "series": series_identity(samples)}
    if adapter_path:  # only then: fingerprints of runs without adapters keep their form
        fp["model_adapter"] = adapter_identity(adapter_path)
    return fp


def diff_fingerprints(old: dict, new: dict) -> list[str]:
    """Human-readable differences, e.g. ``budget.rollouts (2 → 8)``."""
    out = []
    oc, nc = old.get("config") or {}, new.get("config") or {}
    for k in sorted(set(oc) | set(nc)):
        if oc.get(k, "<unset>") != nc.get(k, "<unset>"):
            out.append(f"{k} ({_short(oc.get(k, '<unset>'))} → {_short(nc.get(k, '<unset>'))})")
    labels = {"package_version": "package version", "model_weights": "model weights",
              "model_adapter": "model adapter", "series": "series data"}
    for k, label in labels.items():
        if old.get(k) != new.get(k):
            out.append(f"{label} ({_short(old.get(k))} → {_short(new.get(k))})")
    return out


def _short(v) -> str:
    s = json.dumps(v) if not isinstance(v, str) else v
    return s if len(s) <= 40 else "…" + s[-30:]


# ------------------------------------------------------------------------------ provenance

def _git_commit() -> str | None:
    here = Path(__file__).resolve().parent.parent
    if not (here / ".git").exists():
        return None
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain",
                                "--untracked-files=no"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def _versions() -> dict:
    from importlib import metadata

    out = {}
    for dist in ("mlx", "mlx-lm", "numpy", "hydra-core"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def _device() -> str | None:
    try:
        import mlx.core as mx

        dev = mx.default_device()
        name = None
        try:
            info = mx.device_info() if hasattr(mx, "device_info") else {}
            name = info.get("device_name") or info.get("architecture")
        except Exception:  # noqa: BLE001 - optional detail
            name = None
        return f"{dev}" + (f" ({name})" if name else "")
    except Exception:  # noqa: BLE001
        return None


def provenance(cfg, lm, fp: dict) -> dict:
    weights = weights_identity(lm.path) if lm is not None and lm.path else None
    return {"package_version": package_version(), "git_commit": _git_commit(),
            "python": platform.python_version(), **{k.replace("-", "_"): v
                                                    for k, v in _versions().items()},
            "device": _device(), "platform": platform.platform(), "host": socket.gethostname(),
            "argv": list(sys.argv), "model_name": lm.name if lm else None,
            "model_path": str(lm.path) if lm else None, "model_weights": weights,
            "series_sha256": fp.get("series"), "started_at": _now()}


def start_record(resumed: bool, stale: list[str] | None = None) -> dict:
    """One entry of ``run.json``'s ``runs``: who (re)started the run, where, with what code.

    ``rows_reused`` (rows of earlier starts kept), ``lines_rejected`` and, when the run ends,
    ``finished_at``, ``status`` and ``rows_written`` are added by :func:`note_run`."""
    return {"started_at": _now(), "host": socket.gethostname(), "pid": os.getpid(),
            "git_commit": _git_commit(), "package_version": package_version(),
            "argv": list(sys.argv), "resumed": bool(resumed), "rows_reused": None,
            "stale_temporaries_removed": list(stale or [])}


def note_run(run_dir: str | Path, **fields) -> None:
    """Add ``fields`` to the latest entry of ``run.json``'s ``runs`` (the caller holds the lock)."""
    data = read_run_file(run_dir)
    if not data or not data.get("runs"):
        return
    data["runs"][-1].update(fields)
    atomic_write(Path(run_dir) / RUN_FILE, json.dumps(data, indent=2, default=str) + "\n")


def read_run_file(run_dir: str | Path) -> dict | None:
    path = Path(run_dir) / RUN_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def write_run_file(run_dir: str | Path, fp: dict, prov: dict, history: list | None = None) -> None:
    data = {"fingerprint": fp, "provenance": prov, "runs": history or []}
    atomic_write(Path(run_dir) / RUN_FILE, json.dumps(data, indent=2, default=str) + "\n")


# ----------------------------------------------------------------------- choosing the dir

@dataclass
class Claim:
    """The dir a run writes into, with its lock held."""

    run_dir: Path
    lock: RunLock
    resumed: bool


def _has_results(run_dir: Path) -> bool:
    from .results import RESULTS_FILE

    p = run_dir / RESULTS_FILE
    return p.exists() and (not p.is_file() or p.stat().st_size > 0)


def fresh_sibling(run_dir: Path) -> Path:
    n = 1
    while True:
        cand = run_dir.with_name(f"{run_dir.name}-{n}")
        if not cand.exists():
            return cand
        n += 1


def claim(run_dir: str | Path, fp: dict, prov: dict, resume: bool = True) -> Claim:
    """Lock ``run_dir`` and check that its results (if any) belong to fingerprint ``fp``.

    With ``resume=False`` a dir that already holds results is left untouched and the run goes to
    a fresh sibling ``<dir>-<n>``.
    """
    from .results import RESULTS_FILE

    run_dir = check_writable_dir(run_dir)
    res = run_dir / RESULTS_FILE
    if res.is_dir():
        raise RunDirError(f"{res} is a folder, not a results file; move it away or choose "
                          "another run dir (hydra.run.dir=...)")
    if not resume and (_has_results(run_dir) or (run_dir / RUN_FILE).exists()):
        new = fresh_sibling(run_dir)
        log.warning("resume=false: %s holds results; starting clean in %s", run_dir, new)
        run_dir = check_writable_dir(new)
    lock = RunLock(run_dir).acquire()
    try:
        old = read_run_file(run_dir)
        resumed = _has_results(run_dir)
        history = []
        if old is not None and old.get("fingerprint"):
            diff = diff_fingerprints(old["fingerprint"], fp)
            if diff:
                raise FingerprintMismatch(
                    f"run dir {run_dir} holds results of another configuration (differs in: "
                    f"{', '.join(diff)}); use another hydra.run.dir, or resume=false to start "
                    "clean in a new dir")
            history = list(old.get("runs") or [])
            prov = dict(old.get("provenance") or prov)
        elif resumed:
            raise FingerprintMismatch(
                f"run dir {run_dir} holds results without a {RUN_FILE} (an older version or "
                "another tool wrote them), so they cannot be checked against this configuration; "
                "use another hydra.run.dir, or resume=false to start clean in a new dir")
        stale = remove_stale_temporaries(run_dir)
        history.append(start_record(resumed, stale))
        write_run_file(run_dir, fp, prov, history)
    except OSError as exc:
        lock.release()
        raise RunDirError(describe_oserror(exc, run_dir)) from None
    except BaseException:
        lock.release()
        raise
    return Claim(run_dir, lock, resumed)
