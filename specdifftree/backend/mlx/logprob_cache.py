"""The Session's next-token log-prob cache: an LRU of device rows keyed by prefix.

Each entry is ``prefix -> (MLX (B, V) log-prob array of one forward pass, row)``: a row stays a
reference into its batch's array until it is read, then it gets its own copy (so kept rows do
not pin whole batch arrays). The prompt's row (key ``()``) is never evicted.
"""

from __future__ import annotations

from collections import OrderedDict


class LogprobCache(OrderedDict):
    """An ``OrderedDict`` (least recently used first) capped at ``cap`` entries."""

    def __init__(self, cap: int):
        super().__init__()
        self.cap = int(cap)

    def remember(self, key: tuple[int, ...], arr, row: int) -> None:
        self[key] = (arr, row)
        self.move_to_end(key)
        while len(self) > self.cap:
            oldest = next(iter(self))
            if oldest == ():
                self.move_to_end(())
                continue
            self.popitem(last=False)

    def row(self, key: tuple[int, ...]):
        """The cached next-token log-prob row after ``key`` (MLX (V,)), or None."""
        hit = self.get(key)
        if hit is None:
            return None
        arr, row = hit
        if arr.shape[0] > 1:  # a row the search reads gets its own copy: it must not keep the
            import mlx.core as mx  # whole batch's array alive

            arr, row = mx.contiguous(arr[row : row + 1]), 0
            self[key] = (arr, row)
        return arr[row]
