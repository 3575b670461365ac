r"""Every scored continuation of a search, recorded: ``samples.jsonl`` beside ``results.jsonl``.

While a method searches one series, :class:`Recorder` sits between it and the Session and the
reward oracle (thin proxies: the method sees the same objects and the same numbers). It records,
in the order the method asked for them, every complete continuation handed to the reward: its
tokens, its reward and the Session's ``tokens_processed`` at that moment (so the tokens the
search had spent when that continuation was finished, prompt prefill included).

The log-probability log p_θ(x) of each continuation (temperature 1) comes from the per-token
log-probs the Session already returned (rollouts, and next-token rows of recent ``logprobs``
calls); only a continuation whose tokens were not all seen that way is scored by
``Session.sequence_logprob`` after the search (its extra tokens count in ``eval_tokens``, never in
``tokens_processed``).

One line of ``samples.jsonl`` per scored continuation:

========================  =========  ===========================================================
field                     unit       meaning
========================  =========  ===========================================================
method, dataset, seed,               the run and series (as in results.jsonl)
series_id, sample_index
rollout                              order among this series' scored continuations (0, 1, …)
tokens                    tokens     ``tokens_processed`` of the search when it was scored
text                                 the generated text
generated_tokens          tokens     its length
reward                    reward     its reward (as the method saw it)
reward_failed                        its reward failed: the value is the failure stand-in
logprob                   nats       log p_θ of the continuation (temperature 1)
valid, n_parsed                      all h values parsed / how many did
forecast                  series     the parsed forecast (completed as in results.jsonl)
answer                               it is the continuation the method chose
in_samples                count      how often it is among the method's returned samples
========================  =========  ===========================================================

A repeated continuation (scored again from the oracle's cache) is a line of its own: it cost the
search a simulation. The file is appended, flushed and fsynced per series, after the search and
before the series' results row; a run resumed in the same folder first drops the lines of series
that have no results row (a crash between the two: that series runs again) and moves unusable
lines (torn by a crash, not JSON, duplicates) to ``samples.rejected.jsonl``, rewriting the file
atomically, so after ``kill -9`` at any point a re-run leaves the same file as an uninterrupted
run: no line torn, stale, duplicated or lost (tests kill the CLI at several points).
"""

from __future__ import annotations

import json
import logging
import os
from collections import OrderedDict
from pathlib import Path
from typing import Sequence

import numpy as np

SAMPLES_FILE = "samples.jsonl"
log = logging.getLogger(__name__)
_RECENT_ROWS = 8


class _TokenTrie:
    """log p_θ(token | prefix) for every (prefix, token) seen, stored as a token trie."""

    def __init__(self):
        self.root: dict = {}

    def add(self, prefix: Sequence[int], tokens: Sequence[int], logprobs: Sequence[float]) -> None:
        node = self._walk(prefix, create=True)
        for t, lp in zip(tokens, logprobs):
            entry = node.get(int(t))
            if entry is None:
                entry = node[int(t)] = [float(lp), {}]
            node = entry[1]

    def _walk(self, prefix: Sequence[int], create: bool):
        node = self.root
        for t in prefix:
            entry = node.get(int(t))
            if entry is None:
                if not create:
                    return None
                entry = node[int(t)] = [float("nan"), {}]
            node = entry[1]
        return node

    def logprob(self, tokens: Sequence[int]) -> float | None:
        node, total = self.root, 0.0
        for t in tokens:
            entry = node.get(int(t))
            if entry is None or entry[0] != entry[0]:  # unknown or NaN placeholder
                return None
            total += entry[0]
            node = entry[1]
        return total


class RecordingSession:
    """Forwards everything to the Session; remembers the per-token log-probs it hands out."""

    def __init__(self, session, trie: _TokenTrie):
        self._s = session
        self._trie = trie
        self._recent: OrderedDict[tuple, np.ndarray] = OrderedDict()
        if hasattr(session, "draw_excluding"):  # only where the Session draws on the device
            self.draw_excluding = self._draw_excluding

    def _draw_excluding(self, prefix, exclude, rng):
        got = self._s.draw_excluding(prefix, exclude, rng)
        if got is not None:
            p = tuple(int(t) for t in prefix)
            self._fill_prefix(p)
            self._trie.add(p, [got[0]], [got[1]])
        return got

    def __getattr__(self, name):
        return getattr(self._s, name)

    def _fill_prefix(self, p: tuple) -> None:
        # the last tokens of a prefix were typically chosen from a recent logprobs row
        for i in range(len(p)):
            row = self._recent.get(p[:i])
            if row is not None:
                self._trie.add(p[:i], [p[i]], [float(row[p[i]])])

    def logprobs(self, prefixes):
        out = self._s.logprobs(prefixes)
        for p, row in zip(prefixes, out):
            key = tuple(int(t) for t in p)
            self._recent[key] = row
            self._recent.move_to_end(key)
            while len(self._recent) > _RECENT_ROWS:
                self._recent.popitem(last=False)
        return out

    def rollout(self, prefixes, max_new_tokens, **kw):
        ros = self._s.rollout(prefixes, max_new_tokens, **kw)
        for ro in ros:
            p = tuple(int(t) for t in ro.prefix)
            self._fill_prefix(p)
            self._trie.add(p, ro.tokens, ro.logprobs)
        return ros


class RecordingOracle:
    """Forwards to the reward oracle; records every continuation it scores, in order."""

    def __init__(self, oracle, session):
        self._o = oracle
        self._session = session
        self.records: list[tuple[tuple, float, int]] = []

    def __getattr__(self, name):
        return getattr(self._o, name)

    def __call__(self, seqs):
        keys = [tuple(int(t) for t in s) for s in seqs]
        out = self._o(keys)
        tokens = int(self._session.tokens_processed)
        self.records.extend((k, float(r), tokens) for k, r in zip(keys, np.asarray(out).reshape(-1)))
        return out


class Recorder:
    """Wraps one series' Session and reward oracle; builds its ``samples.jsonl`` lines."""

    def __init__(self, session, oracle):
        self.trie = _TokenTrie()
        self.session = RecordingSession(session, self.trie)
        self.oracle = RecordingOracle(oracle, session)
        self._raw_session = session

    def reward_of(self, tokens: tuple) -> float:
        """The reward of a continuation the search scored (from the oracle's cache; not logged)."""
        return float(self.oracle._o([tuple(tokens)])[0])

    def logprob(self, tokens: tuple) -> float | None:
        """log p_θ(tokens): from the recorded per-token log-probs, else the Session scores it."""
        if not tokens:
            return 0.0
        lp = self.trie.logprob(tokens)
        if lp is None:
            scorer = getattr(self._raw_session, "sequence_logprob", None)
            if scorer is not None:
                lp = float(scorer(tokens)[0])
        return lp

    def rows(self, base: dict, decode, parse, chosen: tuple, samples: Sequence[tuple],
             failed=None) -> list[dict]:
        """One dict per recorded continuation. ``parse(texts) -> (forecasts, parsed share)``."""
        recs = self.oracle.records
        if not recs:
            return []
        texts = [decode(list(k)) for k, _, _ in recs]
        forecasts, share = parse(texts)
        counts: dict[tuple, int] = {}
        for s in samples:
            k = tuple(int(t) for t in s)
            counts[k] = counts.get(k, 0) + 1
        lps: dict[tuple, float | None] = {}
        out = []
        for i, ((k, r, tok), text) in enumerate(zip(recs, texts)):
            if k not in lps:
                lps[k] = self.logprob(k)
            h = forecasts.shape[1]
            row = dict(base)
            row.update(rollout=i, tokens=tok, text=text, generated_tokens=len(k), reward=r,
                       logprob=lps[k], valid=bool(share[i] >= 1.0),
                       n_parsed=int(round(float(share[i]) * h)), forecast=forecasts[i],
                       answer=k == chosen, in_samples=counts.get(k, 0))
            if failed is not None:
                row["reward_failed"] = bool(failed(k))
            out.append(row)
        return out


SAMPLES_REJECTED_FILE = "samples.rejected.jsonl"


def _scan_samples(data: bytes):
    """(good lines, bad (line number, reason, text)) of samples.jsonl's bytes.

    A line is bad when it is not a JSON object with the series key, repeats the (series,
    rollout) of an earlier line, or is torn (the last line without its newline: a crash
    mid-write). Reading never stops at a bad line."""
    good: list[tuple[tuple, bytes]] = []
    bad: list[tuple[int, str, str]] = []
    from .results import jsonl_lines, row_key

    seen: set[tuple] = set()
    for i, line, text, row, reason in jsonl_lines(data):
        if reason:
            bad.append((i, reason, text))
            continue
        if not isinstance(row, dict) or "series_id" not in row:
            bad.append((i, "not a samples row", text))
            continue
        k = (*row_key(row), row.get("rollout"))
        if k in seen:
            bad.append((i, "duplicate of an earlier line", text))
            continue
        seen.add(k)
        good.append((row_key(row), line + b"\n"))
    return good, bad


class SamplesWriter:
    """Appends ``samples.jsonl`` lines (written whole, flushed and fsynced per series).

    ``done``: the keys (method, dataset, seed, series_id) that have a results row. On opening, the
    lines of any other series (left by a crash between a series' samples and its results row:
    that series runs again) are dropped, and lines that are not usable (torn by a crash, not
    JSON, duplicates) are moved to ``samples.rejected.jsonl``; the file is then rewritten
    atomically (temporary file, fsync, rename), so the appends start on a clean line and a kill
    at any moment loses no line of a finished series.
    """

    def __init__(self, run_dir: str | Path, done: set[tuple]):
        from .results import _jsonable

        self._jsonable = _jsonable
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / SAMPLES_FILE
        self.dropped = 0
        self.rejected = 0
        if self.path.exists():
            good, bad = _scan_samples(self.path.read_bytes())
            keep = [line for key, line in good if key in done]
            self.dropped = len(good) - len(keep)
            self.rejected = len(bad)
            if bad:
                self._quarantine(bad)
            if bad or self.dropped:
                from .atomic import atomic_write

                atomic_write(self.path, b"".join(keep))
                log.info("%s: %d line(s) of series without a results row dropped (they run "
                         "again)", self.path, self.dropped)
        self._fh = self.path.open("ab", buffering=0)  # each batch goes straight to the OS

    def _quarantine(self, bad) -> None:
        from datetime import datetime, timezone

        from .atomic import fsync_dir

        side = self.run_dir / SAMPLES_REJECTED_FILE
        now = datetime.now(timezone.utc).isoformat()
        with side.open("a") as fh:
            for lineno, reason, text in bad:
                fh.write(json.dumps({"line": lineno, "reason": reason, "text": text,
                                     "moved_at": now}) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        fsync_dir(self.run_dir)
        log.warning("%s: %d unusable line(s) moved to %s (%s)", self.path, len(bad), side,
                    "; ".join(f"line {n}: {r}" for n, r, _ in bad[:5]))

    def write(self, rows: list[dict]) -> None:
        from . import faults

        if not rows:
            return
        data = "".join(json.dumps(self._jsonable(r)) + "\n" for r in rows).encode()
        if os.environ.get("SPECDIFFTREE_CRASH_AT", "").startswith("samples-torn"):
            self._write_all(data[: len(data) // 2])
            faults.crash_point("samples-torn")
            data = data[len(data) // 2:]
        self._write_all(data)
        os.fsync(self._fh.fileno())
        faults.crash_point("samples")

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = self._fh.write(view)
            view = view[n:]

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()


def scan_samples(run_dir: str | Path) -> tuple[list[dict], list[tuple[int, str, str]]]:
    """Lines of ``samples.jsonl`` and its unusable lines as (line number, reason, text)."""
    path = Path(run_dir) / SAMPLES_FILE
    if not path.is_file():
        return [], []
    good, bad = _scan_samples(path.read_bytes())
    return [json.loads(line) for _, line in good], bad


def read_samples(run_dir: str | Path) -> list[dict]:
    """Lines of ``samples.jsonl`` (empty when absent); unusable lines (torn, not JSON,
    duplicates) are skipped with a warning, never the lines after them."""
    rows, bad = scan_samples(run_dir)
    if bad:
        log.warning("%s: %d unreadable line(s) skipped (%s)", Path(run_dir) / SAMPLES_FILE,
                    len(bad), "; ".join(f"line {n}: {r}" for n, r, _ in bad[:5]))
    return rows
