"""A prefix store of KV-cache segments, so every tree token is pushed through the model once.

Each entry holds, per layer, the keys/values of a token sequence *beyond the prompt* (the prompt's
own KV lives once in the Session). Because attention is causal, the KV of the first d tokens of a
stored sequence is exactly the KV of any continuation that shares those d tokens, so a lookup
returns the entry with the longest common prefix with the query. Entries are indexed by a token
trie; each trie node points at the most recent live entry passing through it.

Memory is capped (``cap_bytes``): least-recently-used entries are evicted, which only makes the
Session recompute more — results do not depend on what is cached.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence


@dataclass
class _Entry:
    tokens: tuple[int, ...]
    kv: list  # per layer: (keys, values), each (1, heads, len(tokens), dim)
    nbytes: int


class _Node:
    __slots__ = ("children", "entry")

    def __init__(self):
        self.children: dict[int, _Node] = {}
        self.entry: int | None = None


class PrefixKVStore:
    def __init__(self, cap_bytes: int):
        self.cap_bytes = int(cap_bytes)
        self._root = _Node()
        self._entries: OrderedDict[int, _Entry] = OrderedDict()
        self._next_id = 0
        self.nbytes = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, tokens: Sequence[int]) -> tuple[_Entry | None, int]:
        """The live entry sharing the longest prefix with ``tokens`` and that prefix's length."""
        node, best, depth = self._root, (None, 0), 0
        for t in tokens:
            node = node.children.get(int(t))
            if node is None:
                break
            depth += 1
            if node.entry is not None and node.entry in self._entries:
                best = (node.entry, depth)
        eid, d = best
        if eid is None:
            return None, 0
        self._entries.move_to_end(eid)
        return self._entries[eid], d

    def insert(self, tokens: Sequence[int], kv: list, nbytes: int) -> None:
        tokens = tuple(int(t) for t in tokens)
        if not tokens or nbytes > self.cap_bytes:
            return
        eid = self._next_id
        self._next_id += 1
        node = self._root
        for t in tokens:
            nxt = node.children.get(t)
            if nxt is None:
                nxt = node.children[t] = _Node()
            nxt.entry = eid
            node = nxt
        self._entries[eid] = _Entry(tokens, kv, nbytes)
        self.nbytes += nbytes
        while self.nbytes > self.cap_bytes and len(self._entries) > 1:
            self._evict_oldest()

    def _evict_oldest(self) -> None:
        eid, entry = self._entries.popitem(last=False)
        self.nbytes -= entry.nbytes
        self.evictions += 1
        # unlink trie nodes that pointed at it; prune branches left without any entry
        path = [self._root]
        for t in entry.tokens:
            nxt = path[-1].children.get(t)
            if nxt is None:
                break
            if nxt.entry == eid:
                nxt.entry = None
            path.append(nxt)
        for i in range(len(path) - 1, 0, -1):
            node = path[i]
            if node.children or node.entry is not None:
                break
            del path[i - 1].children[entry.tokens[i - 1]]
