"""Exact tables for the apply paths: one per distinct position, shared between calls.

:func:`tables` is what :func:`rope_ref.apply_rope` (and the attention and gradient paths) use
instead of ``Rope._cos_sin_work`` directly. On eager CPU arrays (NumPy, array-api-strict,
PyTorch on the CPU) it

* computes the table once per distinct position: positions of shape (batch, seq) that repeat
  one row, or per-head copies, cost one row (``unique_inverse``, then ``take``);
* keeps the last few tables in a small least-recently-used cache keyed by the ``Rope``, the
  namespace, device and dtype, and a digest of the positions' bytes, so q and k rotated at the
  same positions (or every layer of a model) share one table.

The cache is bounded (``CACHE_ENTRIES`` tables, none larger than ``CACHE_MAX_BYTES``), guarded
by a lock, and never hands its arrays to the caller: they are only read by the rotation.
:func:`clear_cache` empties it (benchmarks use it to time cold calls). Lazy, traced and device
arrays bypass both mechanisms.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import Any

import numpy as np

from . import _compat
from ._rope import _length_of

__all__ = ["CACHE_ENTRIES", "CACHE_MAX_BYTES", "cache_info", "clear_cache", "tables"]

CACHE_ENTRIES = 8
CACHE_MAX_BYTES = 64 * 2**20

_lock = threading.Lock()
_cache: OrderedDict[Any, tuple[Any, Any]] = OrderedDict()
_stats = {"hits": 0, "misses": 0}


def clear_cache() -> None:
    """Forget every cached table."""
    with _lock:
        _cache.clear()
        _stats["hits"] = _stats["misses"] = 0


def cache_info() -> dict[str, int]:
    """Entries, hits and misses of the table cache.

    Returns
    -------
    dict of str to int
        ``{"entries": ..., "hits": ..., "misses": ...}``: tables cached now, and lookups
        that found or missed a cached table since the last ``clear_cache()``.
    """
    with _lock:
        return {"entries": len(_cache), **_stats}


def _digest(positions: Any) -> bytes | None:
    try:
        host = positions if isinstance(positions, np.ndarray) else np.from_dlpack(positions)
    except Exception:  # no DLPack export (or a tensor that requires grad): no caching
        return None
    h = hashlib.blake2b(digest_size=20)
    h.update(str((host.dtype.str, host.shape)).encode())
    h.update(np.ascontiguousarray(host).tobytes())
    return h.digest()


def tables(
    rope: Any,
    xp: Any,
    positions: Any,
    wd: Any,
    *,
    integral: bool,
    seq_len: int | None,
    role: str,
) -> tuple[Any, Any]:
    """``rope._cos_sin_work(...)`` for validated positions, deduplicated and cached."""
    if not _compat.prefers_blocks(positions) or not _compat.is_concrete(positions):
        c, s = rope._cos_sin_work(xp, positions, wd, integral=integral, seq_len=seq_len, role=role)
        return c, s
    key = None
    digest = _digest(positions)
    if digest is not None:
        try:
            key = (
                rope,
                xp.__name__,
                str(_compat.device_of(positions)),
                str(wd),
                integral,
                seq_len,
                role,
                digest,
            )
            hash(key)
        except TypeError:  # a Rope holding something unhashable: compute, don't cache
            key = None
    if key is not None:
        with _lock:
            hit = _cache.get(key)
            if hit is not None:
                _cache.move_to_end(key)
                _stats["hits"] += 1
                return hit
    cos, sin = _distinct(rope, xp, positions, wd, integral=integral, seq_len=seq_len, role=role)
    if key is not None and 2 * _nbytes(cos) <= CACHE_MAX_BYTES:
        with _lock:
            _stats["misses"] += 1
            _cache[key] = (cos, sin)
            _cache.move_to_end(key)
            while len(_cache) > CACHE_ENTRIES:
                _cache.popitem(last=False)
    return cos, sin


def _nbytes(a: Any) -> int:
    n = 1
    for s_ in a.shape:
        n *= int(s_)
    return n * 8


def _distinct(
    rope: Any, xp: Any, positions: Any, wd: Any, *, integral: bool, seq_len: int | None, role: str
) -> tuple[Any, Any]:
    """The table, computed on the distinct positions only when that saves work."""
    scaling = rope.scaling
    single_axis = rope._pair_axes() is None
    size = 1
    for s_ in positions.shape:
        size *= int(s_)
    if single_axis and positions.ndim > 1 and size > 1:
        flat = xp.reshape(positions, (size,))
        try:
            values, inverse = xp.unique_inverse(flat)
        except Exception:  # pragma: no cover - namespaces without unique_inverse
            values = None
        if values is not None and 2 * int(values.shape[0]) <= size:
            if seq_len is None and scaling is not None and scaling.dynamic:
                seq_len = _length_of(xp, values)
            cos_u, sin_u = rope._cos_sin_work(
                xp, values, wd, integral=integral, seq_len=seq_len, role=role
            )
            idx = xp.reshape(inverse, (size,))
            shape = (*positions.shape, int(cos_u.shape[-1]))
            return (
                xp.reshape(xp.take(cos_u, idx, axis=0), shape),
                xp.reshape(xp.take(sin_u, idx, axis=0), shape),
            )
    c, s = rope._cos_sin_work(xp, positions, wd, integral=integral, seq_len=seq_len, role=role)
    return c, s
