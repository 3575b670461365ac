"""KV caches assembled for a batch of rows (mlx-lm ``KVCache`` / ``BatchKVCache`` layers).

The Session keeps the prompt's KV once and the KV of tokens beyond it in a prefix store
(:mod:`.kvstore`); these functions assemble the per-layer caches a forward pass needs. A batch
cache is filled directly (keys, values, padding and write position), as mlx-lm's
``BatchKVCache.merge`` fills one, without copying rows through ``update_and_fetch``. This module
is the only place that sets mlx-lm's private write index ``BatchKVCache._idx``: the public cache
API has no setter for it, ``merge`` copies every row with one slice update per layer, and
``filter`` reads the padding on the host (a blocking read that would stall the pipelined decode;
docs/performance.md).
"""

from __future__ import annotations

import functools

import mlx.core as mx


def build(prompt_cache, P: int, rows: list, room: int):
    """A cache holding prompt + ``prefix[:d]`` for each ``(entry, d)`` row (``entry``: a
    :mod:`.kvstore` entry, ``P``: the prompt's length in ``prompt_cache``), plus ``room`` free
    slots so the next ``room`` tokens are written in place.

    One row gives a list of ``KVCache``; several give ``BatchKVCache`` (left-padded when the
    rows' d differ). Rows with equal d are assembled in a single copy per layer.
    """
    from mlx_lm.models.cache import BatchKVCache, KVCache

    B = len(rows)
    dmax = max(d for _, d in rows)
    pads = [dmax - d for _, d in rows]
    out = []
    for layer, c in enumerate(prompt_cache):
        ks, vs = [], []
        for arr, which in ((c.keys, ks), (c.values, vs)):
            idx = 0 if which is ks else 1
            prompt = arr[..., :P, :]
            H, D = prompt.shape[1], prompt.shape[3]
            tail = [mx.zeros((B, H, room, D), prompt.dtype)] if room else []
            if len(set(pads)) == 1:
                segs = [mx.concatenate([e.kv[layer][idx][..., :d, :] for e, d in rows], axis=0)] if dmax else []
                which.append(mx.concatenate([mx.broadcast_to(prompt, (B, H, P, D)), *segs, *tail], axis=2))
            else:
                per_row = [mx.concatenate(([mx.zeros((1, H, pad, D), prompt.dtype)] if pad else [])
                                          + [prompt] + ([e.kv[layer][idx][..., :d, :]] if d else []),
                                          axis=2) for (e, d), pad in zip(rows, pads)]
                which.append(mx.concatenate([mx.concatenate(per_row, axis=0), *tail], axis=2))
        if B == 1:
            n = KVCache()
            n.keys, n.values, n.offset = ks[0], vs[0], P + dmax
        else:
            n = BatchKVCache(pads)
            n.keys, n.values = ks[0], vs[0]
            n._idx = P + dmax
            n.offset = n.offset + n._idx
        out.append(n)
    return out


def gather_rows(cache, parent, n: int):
    """A ``BatchKVCache`` per layer holding the rows ``parent`` (device int array of n row
    indices) of ``cache`` (one plain cache or batch caches), gathered in one take per layer and
    tensor; left padding and offsets are gathered too, so nothing is read on the host.

    Every layer of a cache holds the same positions, so the rows' padding and offsets are
    gathered once and shared by the layers' caches (each layer rebinds its own ``offset`` when
    it is written, as ``BatchKVCache.update_and_fetch`` does): the graph built per step on the
    host stays at two ops per layer, which bounds a beam step where kernel launches are host
    work (the CUDA backend; docs/performance.md)."""
    from mlx_lm.models.cache import BatchKVCache

    first = cache[0]
    template = _clone(_batch_cache_prototype())
    if isinstance(first, BatchKVCache):
        template.left_padding = mx.take(first.left_padding, parent)
        template.offset = mx.take(first.offset, parent)
        template._idx = first._idx
    else:  # a plain cache (the prompt's, or one row): no padding
        template.left_padding = mx.zeros((n,), dtype=mx.int32)
        template.offset = mx.full((n,), first.offset, dtype=mx.int32)
        template._idx = first.offset
    new = []
    for c in cache:
        nc = _clone(template)
        nc.keys, nc.values = mx.take(c.keys, parent, axis=0), mx.take(c.values, parent, axis=0)
        new.append(nc)
    return new


@functools.cache
def _batch_cache_prototype():
    """A ``BatchKVCache`` made once, with every attribute its ``__init__`` sets; beam steps clone
    it and set keys, values, padding, offsets and the write index (``__init__`` builds two small
    device arrays, about 50 µs a beam step on the CUDA backend's host path)."""
    from mlx_lm.models.cache import BatchKVCache

    return BatchKVCache([0])


def _clone(cache):
    """A shallow copy of a layer cache (its attributes shared), without ``copy.copy``'s
    reduce protocol: this runs once per layer on every beam step."""
    out = object.__new__(type(cache))
    out.__dict__.update(cache.__dict__)
    return out


def is_batch(cache) -> bool:
    """Whether ``cache`` (a list of layer caches) is a batch cache (else one plain row)."""
    from mlx_lm.models.cache import BatchKVCache

    return isinstance(cache[0], BatchKVCache)


def take_rows(cache, idx, pads: list[int] | None):
    """Layer caches holding the rows ``idx`` (device int array) of ``cache`` at their current
    length: ``pads`` are those rows' left paddings (read on the host by the caller) for a batch
    cache, None for a plain one. One row without padding stays a plain ``KVCache``. As in
    :func:`gather_rows`, the padding and offsets are made once and shared by the layers."""
    from mlx_lm.models.cache import BatchKVCache, KVCache

    first = cache[0]
    B = int(idx.shape[0])
    length = first._idx if pads is not None else first.offset
    pads = pads if pads is not None else [0] * B
    if B == 1 and not pads[0]:
        template = KVCache()
        template.offset = length
    else:
        template = BatchKVCache(pads)
        template._idx = length
        template.offset = template.offset + length
    out = []
    for c in cache:
        n = _clone(template)
        n.keys, n.values = mx.take(c.keys, idx, axis=0), mx.take(c.values, idx, axis=0)
        out.append(n)
    return out
