"""Building the tables of a :class:`~rope_ref.Rope`: frequencies, cos and sin, blocks, cache.

A ``Rope`` is a specification; this module turns it into numbers. The flow:

1. **Frequencies** (:func:`thetas`): theta_j = base ** (-2j / rotary_dim) as exact
   ``Decimal`` values (90 digits), after the frequency schedule (``rope.scaling``) and the
   axis scheme (``rope.axes``), checked and cached per ``(Rope, seq_len)``.
   :func:`inv_freq` rounds them once to the requested format.
2. **Tables** (:func:`build`): cos(m theta_j) and sin(m theta_j) for validated positions by
   the exact kernel of :mod:`rope_ref._exact` (``angle_table`` on the host,
   ``exact_cos_sin`` on the device), per position axis for multi-axis schemes, then times
   the attention factor and the schedule's magnitude (xPos). On eager CPU arrays the kernel
   runs on cache-sized blocks of positions (:func:`blocked_cos_sin`, sizes and threads from
   :func:`rope_ref._blocks.block_plan`).
3. **Sharing** (:func:`tables`, what the apply, attention and gradient paths call): on eager
   CPU arrays, one table per *distinct* position (positions of shape (batch, seq) that repeat
   one row, or per-head copies, cost one row: ``unique_inverse``, then ``take``), and a small
   least-recently-used cache keyed by the ``Rope``, namespace, device, dtype and a digest of
   the positions' bytes, so q and k rotated at the same positions (or every layer of a model)
   share one table.

The cache is bounded (``CACHE_ENTRIES`` tables, none larger than ``CACHE_MAX_BYTES``), guarded
by a lock, and never hands its arrays to the caller: they are only read by the rotation.
:func:`clear_cache` empties it (benchmarks use it to time cold calls). Lazy, traced and device
arrays bypass both mechanisms.
"""

from __future__ import annotations

import functools
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from decimal import Decimal
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import numpy as np

from . import _blocks, _compat, _exact, _positions, _validate
from ._errors import RopeTypeError, RopeValueError
from ._typing import Array, Namespace

if TYPE_CHECKING:
    from ._rope import Rope

__all__ = [
    "CACHE_ENTRIES",
    "CACHE_MAX_BYTES",
    "attention_factor",
    "blocked_cos_sin",
    "build",
    "cache_info",
    "clear_cache",
    "cos_sin",
    "inv_freq",
    "tables",
    "thetas",
]

CACHE_ENTRIES = 8
CACHE_MAX_BYTES = 64 * 2**20


# ============================================================================ 1. frequencies
@functools.lru_cache(maxsize=256)
def _unscaled_thetas(base: float, rotary_dim: int) -> tuple[Decimal, ...]:
    # theta_j = exp(-(2j / r) * ln(base)), base taken as the exact value of the float.
    ctx = _exact.context()
    ln_b = ctx.ln(Decimal(base))
    r = Decimal(rotary_dim)
    return tuple(
        ctx.exp(ctx.multiply(ctx.divide(Decimal(-2 * j), r), ln_b)) for j in range(rotary_dim // 2)
    )


def unscaled_thetas(rope: Rope) -> tuple[Decimal, ...]:
    """theta_j = base ** (-2j / rotary_dim), exact (cached per base and rotary_dim)."""
    return _unscaled_thetas(rope.base, rope.rotary_dim)


# Caches of pure functions of immutable values (functools.lru_cache is thread-safe): the scaled
# frequencies per (Rope, seq_len), and their rounding per (frequencies, format). inv_freq in
# any namespace, dtype and device is then one asarray of cached Python floats.
@functools.lru_cache(maxsize=512)
def _scaled_thetas(rope: Rope, seq_len: int | None) -> tuple[Decimal, ...]:
    assert rope.scaling is not None
    return _checked_thetas(rope, rope.scaling.thetas(rope, seq_len))


@functools.lru_cache(maxsize=512)
def _axes_thetas(rope: Rope, seq_len: int | None) -> tuple[Decimal, ...]:
    assert rope.axes is not None
    return _checked_thetas(rope, rope.axes.composed_thetas(rope, seq_len))


def _method(rope: Rope, name: str) -> str:
    return f"{type(rope.scaling).__name__}.{name}()"


def _checked_thetas(rope: Rope, values: Any) -> tuple[Decimal, ...]:
    """A schedule's frequencies: n_pairs finite real numbers >= 0 (Decimals, or ints and
    floats, taken at their exact value)."""
    where = _method(rope, "thetas")
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise RopeTypeError(
            f"{where} must return a sequence of {rope.n_pairs} frequencies (Decimals), got "
            f"{type(values).__name__}"
        )
    out = []
    for j, t in enumerate(values):
        d = t if isinstance(t, Decimal) else Decimal(_validate.as_real(t, f"{where}[{j}]"))
        if not d.is_finite() or d < 0:
            raise RopeValueError(f"{where}[{j}] must be a finite real number >= 0, got {t!r}")
        out.append(d)
    if len(out) != rope.n_pairs:
        raise RopeValueError(
            f"{where} must return rotary_dim // 2 = {rope.n_pairs} frequencies, got {len(out)}"
        )
    return tuple(out)


def _cached(
    cache: Callable[[Rope, int | None], tuple[Decimal, ...]],
    compute: Callable[[Rope, int | None], Any],
    rope: Rope,
    seq_len: int | None,
) -> tuple[Decimal, ...]:
    """``cache(rope, seq_len)``, or the checked ``compute(rope, seq_len)`` uncached when the
    Rope holds something unhashable."""
    try:
        return cache(rope, seq_len)
    except TypeError as exc:
        if isinstance(exc, RopeTypeError):
            raise
        return _checked_thetas(rope, compute(rope, seq_len))


def check_seq_len(seq_len: Any) -> int | None:
    """``seq_len`` as an int >= 1, or None."""
    if seq_len is None:
        return None
    return _validate.check_int("seq_len", seq_len, minimum=1)


def thetas(rope: Rope, seq_len: Any = None) -> tuple[Decimal, ...]:
    """The frequencies after the schedule and the axis scheme (see :meth:`Rope.thetas`)."""
    seq_len = check_seq_len(seq_len)
    if rope.axes is not None:
        return _cached(_axes_thetas, rope.axes.composed_thetas, rope, seq_len)
    if rope.scaling is None:
        return unscaled_thetas(rope)
    return _cached(_scaled_thetas, rope.scaling.thetas, rope, seq_len)


def attention_factor(rope: Rope, seq_len: int | None) -> float:
    """The schedule's factor on cos and sin at ``seq_len`` (YaRN, LongRoPE), checked > 0."""
    if rope.scaling is None:
        return 1.0
    value = rope.scaling.attention_scaling(rope, seq_len)
    return _validate.as_real(value, _method(rope, "attention_scaling"), positive=True)


@functools.lru_cache(maxsize=512)
def _rounded(values: tuple[Decimal, ...], p: int) -> tuple[float, ...]:
    return tuple(_round_to(t, p) for t in values)


def _round_to(value: Decimal, p: int) -> float:
    """Round an exact Decimal to a binary format with p significand bits (ties to even)."""
    if p == 53:
        return _exact.to_float(value)
    f = Fraction(value)
    if f == 0:
        return 0.0
    ex = abs(f).numerator.bit_length() - abs(f).denominator.bit_length()
    if Fraction(2) ** ex > abs(f):
        ex -= 1
    unit = Fraction(2) ** (ex - p + 1)
    return float(round(f / unit) * unit)


def inv_freq(rope: Rope, xp: Namespace, *, dtype: Any, device: Any, seq_len: Any) -> Array:
    """The frequencies correctly rounded to ``dtype`` (see :meth:`Rope.inv_freq`)."""
    if xp is None:
        xp = _compat.array_namespace()
    values = thetas(rope, seq_len)
    if dtype is None:
        dtype = _compat.work_dtype(xp, device)
    if not _compat.is_real_floating(xp, dtype):
        raise RopeTypeError(f"dtype must be a real floating dtype, got {dtype}")
    rounded = _rounded(values, _compat.significand_bits(xp, dtype))
    return xp.asarray(list(rounded), dtype=dtype, device=device)


# ============================================================================ 2. tables
def cos_sin(rope: Rope, positions: Any, *, dtype: Any, seq_len: Any, role: str) -> tuple[Any, Any]:
    """:meth:`Rope.cos_sin`: positions validated, the tables built and rounded to ``dtype``."""
    xp = _compat.array_namespace(positions=positions)
    positions = _positions.to_positions(positions, xp, None)
    xp = _compat.array_namespace(positions=positions)
    integral = _positions.check_positions(xp, positions)
    wd = _compat.work_dtype(xp, _compat.device_of(positions))
    if dtype is not None and not _compat.is_real_floating(xp, dtype):
        raise RopeTypeError(f"dtype must be a real floating dtype, got {dtype}")
    cos, sin = build(rope, xp, positions, wd, integral=integral, seq_len=seq_len, role=role)
    if dtype is not None and dtype != wd:
        cos, sin = xp.astype(cos, dtype), xp.astype(sin, dtype)
    return cos, sin


def build(
    rope: Rope,
    xp: Namespace,
    positions: Array,
    wd: Any,
    *,
    integral: bool,
    seq_len: Any,
    role: str = "query",
) -> tuple[Any, Any]:
    """Tables in the working dtype ``wd`` for validated positions, shape
    ``rope.token_shape(positions.shape) + (n_pairs,)``."""
    seq_len = check_seq_len(seq_len)
    scaling = rope.scaling
    rope.token_shape(tuple(positions.shape))
    if seq_len is None and scaling is not None and scaling.dynamic:
        # Documented exception to "no branching on values": dynamic schedules need the
        # length; pass seq_len explicitly under jax.jit or on lazy arrays.
        if not _compat.is_concrete(positions):
            raise RopeValueError(
                "seq_len is required with a dynamic scaling when positions are lazy, "
                "traced or on PyTorch's meta device (it cannot be read from the positions)"
            )
        seq_len = _length_of(xp, positions)
    device = _compat.device_of(positions)
    p = _compat.significand_bits(xp, wd)
    freqs = thetas(rope, seq_len)
    m = xp.astype(positions, wd)
    blocks = _blocks.prefers_blocks(positions)
    axes = pair_axes(rope)
    if axes is None:
        table = _exact.angle_table(freqs, p)
        cos, sin = blocked_cos_sin(
            xp, m, table, dtype=wd, device=device, integral=integral, blocks=blocks
        )
    else:
        cos, sin = _multi_axis(rope, xp, m, freqs, axes, p, wd, device, integral, blocks)
    if not _compat.is_concrete(positions):
        # Traced (jax.jit) or lazy (Dask) positions cannot be checked before the
        # computation: a position outside |m| < 2**53 (or NaN / inf) gives NaN in its row
        # of both tables instead of a finite wrong value (documented in apply_rope).
        scheme = rope.axis_scheme
        where = None if scheme is None else scheme.axis_position
        cos, sin = _nan_outside(xp, m, cos, sin, p, leading=where)
    factor = attention_factor(rope, seq_len)
    if factor != 1.0:
        cos, sin = cos * factor, sin * factor
    if scaling is not None:
        mag = scaling.magnitude(xp, m, rope, role=role, seq_len=seq_len, dtype=wd)
        if mag is not None:
            mag = _checked_magnitude(rope, xp, mag, tuple(cos.shape))
            cos, sin = cos * mag, sin * mag
    return cos, sin


def pair_axes(rope: Rope) -> tuple[int, ...] | None:
    """The axis scheme's pair_axes(), checked: None, or one axis index per pair."""
    scheme = rope.axis_scheme if rope.axes is not None else rope.scaling
    if scheme is None:
        return None
    axes = scheme.pair_axes(rope)
    if axes is None:
        return None
    where = f"{type(scheme).__name__}.pair_axes()"
    n = scheme.n_axes
    if isinstance(axes, (str, bytes)) or not hasattr(axes, "__iter__"):
        raise RopeTypeError(
            f"{where} must return None or {rope.n_pairs} axis indices, got {type(axes).__name__}"
        )
    out = tuple(_validate.as_int(a, f"{where}[{j}]", minimum=0) for j, a in enumerate(axes))
    if len(out) != rope.n_pairs or any(a >= n for a in out):
        raise RopeValueError(
            f"{where} must return {rope.n_pairs} axis indices in [0, {n}), got {out}"
        )
    return out


def _checked_magnitude(rope: Rope, xp: Namespace, mag: Any, shape: tuple[int, ...]) -> Any:
    """A schedule's magnitude(): a real number or an array of the positions' namespace
    that broadcasts to the table shape without growing it."""
    where = _method(rope, "magnitude")
    if not _compat.is_array(mag):
        return _validate.as_real(mag, where)
    if _compat.array_namespace(mag=mag) is not xp:
        raise RopeTypeError(
            f"{where} must return an array of the positions' library, got "
            f"{type(mag).__module__}.{type(mag).__name__}"
        )
    if not _compat.is_real_floating(xp, mag.dtype):
        raise RopeTypeError(f"{where} must return a real floating array, got {mag.dtype}")
    _validate.broadcast_positions(
        tuple(mag.shape), shape, name=f"{where}'s result", target_name="the tables"
    )
    return mag


def _multi_axis(
    rope: Rope,
    xp: Namespace,
    m: Array,
    freqs: tuple[Decimal, ...],
    axes: tuple[int, ...],
    p: int,
    wd: Any,
    device: Any,
    integral: bool,
    blocks: bool,
) -> tuple[Any, Any]:
    """Each axis' pairs from that axis' positions, reassembled in pair order."""
    scheme = rope.axis_scheme
    assert scheme is not None
    leading = scheme.axis_position == "leading"
    order: list[int] = []
    cos_parts, sin_parts = [], []
    for k in range(scheme.n_axes):
        pairs = [j for j, a in enumerate(axes) if a == k]
        if not pairs:
            continue
        mk = m[k, ...] if leading else m[..., k]
        table = _exact.angle_table(tuple(freqs[j] for j in pairs), p)
        c, s = blocked_cos_sin(
            xp, mk, table, dtype=wd, device=device, integral=integral, blocks=blocks
        )
        cos_parts.append(c)
        sin_parts.append(s)
        order.extend(pairs)
    inverse = [0] * len(order)
    for pos, j in enumerate(order):
        inverse[j] = pos
    idx = xp.asarray(inverse, device=device)
    cos = xp.take(xp.concat(cos_parts, axis=-1), idx, axis=-1)
    sin = xp.take(xp.concat(sin_parts, axis=-1), idx, axis=-1)
    return cos, sin


def _length_of(xp: Namespace, positions: Array) -> int | None:
    """max(position) + 1 for dynamic schedules; None (the schedule's default) when empty."""
    for n in positions.shape:
        if int(n) == 0:
            return None
    return int(float(xp.max(positions))) + 1


def _nan_outside(
    xp: Namespace, m: Array, cos: Array, sin: Array, p: int, *, leading: str | None
) -> tuple[Any, Any]:
    """NaN in every table row whose position (any axis of a multi-axis position) is not a
    valid position: NaN, infinite or |m| >= 2**53 (2**p in a p-bit working format)."""
    limit = min(_positions.MAX_POSITION, 2.0**p)
    ok = xp.abs(m) < limit  # False for NaN
    if leading == "leading":
        ok = xp.all(ok, axis=0)
    elif leading == "trailing":
        ok = xp.all(ok, axis=-1)
    ok = ok[..., None]
    nan = xp.asarray(float("nan"), dtype=cos.dtype)
    return xp.where(ok, cos, nan), xp.where(ok, sin, nan)


def blocked_cos_sin(
    xp: Namespace,
    m: Array,
    table: _exact.AngleTable,
    *,
    dtype: Any,
    device: Any,
    integral: bool,
    blocks: bool,
) -> tuple[Any, Any]:
    """:func:`rope_ref._exact.exact_cos_sin`, on cache-sized blocks of positions when
    ``blocks`` is true (sizes and threads from :func:`rope_ref._blocks.block_plan`).

    Each block uses only as many position pieces as its largest |m| needs: the bits are the
    same as one pass.
    """
    n = table.digits.shape[1]
    size = _size(m.shape)
    plan = _blocks.block_plan(m) if blocks else None
    if plan is None:
        return _exact.exact_cos_sin(xp, m, table, dtype=dtype, device=device, integral=integral)
    rows = max(1, plan.table // max(n, 1))
    if size <= rows:
        return _exact.exact_cos_sin(xp, m, table, dtype=dtype, device=device, integral=integral)
    flat = xp.reshape(m, (size,))
    digits = _exact.table_digits(xp, table, dtype, device)

    def block(start: int) -> tuple[Any, Any]:
        part = flat[start : min(start + rows, size)]
        return _exact.exact_cos_sin(
            xp,
            part,
            table,
            dtype=dtype,
            device=device,
            integral=integral,
            n_pieces=_exact.pieces_needed(table.fmt, float(xp.max(xp.abs(part)))),
            digits=digits,
        )

    parts = _blocks.run_blocks(block, list(range(0, size, rows)), plan.threads)
    shape = (*m.shape, n)
    return (
        xp.reshape(xp.concat([c for c, _ in parts], axis=0), shape),
        xp.reshape(xp.concat([s_ for _, s_ in parts], axis=0), shape),
    )


def _size(shape: tuple[int, ...]) -> int:
    n = 1
    for s_ in shape:
        n *= int(s_)
    return n


# ============================================================================ 3. sharing
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


def _digest(positions: Array) -> bytes | None:
    try:
        host = positions if isinstance(positions, np.ndarray) else np.from_dlpack(positions)
    except Exception:  # no DLPack export (or a tensor that requires grad): no caching
        return None
    h = hashlib.blake2b(digest_size=20)
    h.update(str((host.dtype.str, host.shape)).encode())
    h.update(np.ascontiguousarray(host).tobytes())
    return h.digest()


def _cache_key(
    rope: Rope,
    xp: Namespace,
    positions: Array,
    wd: Any,
    integral: bool,
    seq_len: Any,
    role: str,
) -> Any:
    """The cache key of a table, or None (positions without DLPack, an unhashable Rope)."""
    digest = _digest(positions)
    if digest is None:
        return None
    device = str(_compat.device_of(positions))
    key = (rope, xp.__name__, device, str(wd), integral, seq_len, role, digest)
    try:
        hash(key)
    except TypeError:  # a Rope holding something unhashable: compute, don't cache
        return None
    return key


def tables(
    rope: Rope,
    xp: Namespace,
    positions: Array,
    wd: Any,
    *,
    integral: bool,
    seq_len: Any,
    role: str,
) -> tuple[Any, Any]:
    """:func:`build` for validated positions, deduplicated and cached on eager CPU arrays."""
    if not _blocks.prefers_blocks(positions) or not _compat.is_concrete(positions):
        return build(rope, xp, positions, wd, integral=integral, seq_len=seq_len, role=role)
    key = _cache_key(rope, xp, positions, wd, integral, seq_len, role)
    if key is not None:
        with _lock:
            hit = _cache.get(key)
            if hit is not None:
                _cache.move_to_end(key)
                _stats["hits"] += 1
                return hit
    cos, sin = _distinct(rope, xp, positions, wd, integral=integral, seq_len=seq_len, role=role)
    if key is not None and _nbytes(xp, cos) + _nbytes(xp, sin) <= CACHE_MAX_BYTES:
        with _lock:
            _stats["misses"] += 1
            _cache[key] = (cos, sin)
            _cache.move_to_end(key)
            while len(_cache) > CACHE_ENTRIES:
                _cache.popitem(last=False)
    return cos, sin


def _nbytes(xp: Namespace, a: Array) -> int:
    """Bytes of ``a``'s elements, from its dtype (float32 tables are half a float64 one)."""
    dtype = a.dtype
    if _compat.is_complex(xp, dtype):
        bits = 2 * int(xp.finfo(dtype).bits)  # finfo of a complex dtype: its real part
    elif _compat.is_real_floating(xp, dtype):
        bits = int(xp.finfo(dtype).bits)
    elif _compat.is_integral(xp, dtype):
        bits = int(xp.iinfo(dtype).bits)
    else:  # bool
        bits = 8
    return _size(a.shape) * bits // 8


def _distinct(
    rope: Rope,
    xp: Namespace,
    positions: Array,
    wd: Any,
    *,
    integral: bool,
    seq_len: Any,
    role: str,
) -> tuple[Any, Any]:
    """The table, computed on the distinct positions only when that saves work."""
    scaling = rope.scaling
    size = _size(positions.shape)
    if pair_axes(rope) is None and positions.ndim > 1 and size > 1:
        flat = xp.reshape(positions, (size,))
        try:
            values, inverse = xp.unique_inverse(flat)
        except Exception:  # pragma: no cover - namespaces without unique_inverse
            values = None
        if values is not None and 2 * int(values.shape[0]) <= size:
            if seq_len is None and scaling is not None and scaling.dynamic:
                seq_len = _length_of(xp, values)
            cos_u, sin_u = build(
                rope, xp, values, wd, integral=integral, seq_len=seq_len, role=role
            )
            idx = xp.reshape(inverse, (size,))
            shape = (*positions.shape, int(cos_u.shape[-1]))
            return (
                xp.reshape(xp.take(cos_u, idx, axis=0), shape),
                xp.reshape(xp.take(sin_u, idx, axis=0), shape),
            )
    return build(rope, xp, positions, wd, integral=integral, seq_len=seq_len, role=role)
