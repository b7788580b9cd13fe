"""Applying the rotation: three independent routes to R_{Theta,m} x.

* :func:`apply_rope` - the elementwise form, RoFormer eq. (34): x * cos + rot(x) * sin.
* :func:`apply_rope_complex` - the complex form, eqs. (12)-(13): z_j * exp(i m theta_j).
* :func:`apply_rope_matrix` - the block-diagonal matrix, eq. (15), times x.

All three share the exact cos/sin tables (``Rope.cos_sin``) and differ in how the rotation
itself is carried out (slicing, complex multiplication with gathers, matrix product), so the
test suite can check them against each other on every backend. The elementwise arithmetic is
the rotation kernel of :mod:`rope_ref._rotate` (shared with the VJP and the signature twins);
the complex and matrix routes stay independent of it on purpose.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from . import _blocks, _compat, _positions, _tables, _validate
from ._errors import RopeTypeError
from ._rope import Rope, check_role
from ._rotate import block_guard, finish, rotate, rotate_into, skip, zero_rows

__all__ = [
    "apply_rope",
    "apply_rope_complex",
    "apply_rope_matrix",
    "rotation_matrix",
]


def _check_rope(rope: Any) -> Rope:
    if not isinstance(rope, Rope):
        raise RopeTypeError(f"rope must be a rope_ref.Rope, got {type(rope).__name__}")
    return rope


def _prepare(
    x: Any, positions: Any, rope: Rope, seq_len: int | None, role: str, *, name: str = "x"
) -> tuple[Any, Any, Any, Any]:
    """Validate everything, then build the exact tables. Returns (xp, work dtype, cos, sin).

    ``name`` is what error messages call ``x`` (the VJP's ``"cotangent"``)."""
    rope = _check_rope(rope)
    _positions.reject_masked(x, name)
    _positions.reject_masked(positions, "positions")
    if not _compat.is_array(x):
        raise RopeTypeError(f"{name} must be an array, got {type(x).__name__}")
    arrays = {name: x, "positions": positions}
    xp = _compat.array_namespace(**arrays)
    _validate.check_x(xp, x, rope.head_dim, name=name)
    device = _compat.device_of(x)
    positions = arrays["positions"] = _positions.to_positions(positions, xp, device)
    xp = _compat.array_namespace(**arrays)
    _compat.check_same_device(**arrays)
    integral = _positions.check_positions(xp, positions)
    tokens = rope.token_shape(tuple(positions.shape))
    _validate.broadcast_positions(tokens, tuple(x.shape[:-1]), target_name=f"{name}.shape[:-1]")
    role = check_role(role)
    wd = _compat.work_dtype(xp, device)
    cos, sin = _tables.tables(
        rope, xp, positions, wd, integral=integral, seq_len=seq_len, role=role
    )
    return xp, wd, cos, sin


def _kernel_args(rope: Rope) -> dict[str, Any]:
    """The rope's part of the rotation kernel's arguments (:mod:`rope_ref._rotate`)."""
    return {"rotary_dim": rope.rotary_dim, "layout": rope.layout, "offset": rope.rotary_offset}


def apply_rope(
    x: Any,
    /,
    positions: Any,
    rope: Rope,
    *,
    seq_len: int | None = None,
    role: str = "query",
) -> Any:
    """Rotate the rotary channels of ``x`` by the angles m * theta_j (RoFormer eq. 34).

    The rotary channels are ``x[..., o:o + rotary_dim]`` with ``o = rope.rotary_offset`` (0 by
    default; DeepSeek's MLA rotates the trailing channels of a head); the others pass through.

    Parameters
    ----------
    x : array (..., head_dim)
        Queries or keys; any real floating dtype (float16/bfloat16 included).
    positions : array or number
        Integer or real positions m, broadcastable to ``x.shape[:-1]`` without growing it:
        for x of shape (batch, heads, seq, head_dim) pass (seq,) or (batch, 1, seq).
        ``abs(m) < 2**53``; rotations are exact for integer-valued m at every such position.
    rope : Rope
        The specification (head_dim, base, rotary_dim, layout, scaling).
    seq_len : int, optional
        Sequence length for dynamic schedules (DynamicNTK, LongRoPE); otherwise max(m) + 1.
    role : {"query", "key"}
        Only xPos distinguishes queries from keys; every other schedule ignores it.

    Returns
    -------
    array of ``x.shape`` and ``x.dtype``, in x's namespace and on x's device. Computed in the
    widest float dtype of the namespace (float64 here) and rounded once to ``x.dtype``.
    ``x`` is never written to.

    Raises
    ------
    RopeTypeError
        ``x`` is not a real floating array (a ``numpy.ma.MaskedArray`` is rejected: the Array
        API has no masks, and a rotation would move masked data into the partner channel;
        pass ``x.filled(v)`` and re-apply the mask), or positions are bool/complex.
    RopeValueError
        Shapes that do not broadcast, or positions that can be read and are NaN, infinite or
        ``abs(m) >= 2**53``.

    Notes
    -----
    Non-finite values: each output channel is the sum of the nonzero entries of
    R_{Theta,m} times x, so inf or NaN in x stays in its own pair (an exact zero, such as
    sin at m = 0, contributes nothing rather than 0 * inf = NaN) and never reaches the
    pass-through channels; the three routes agree on this. Traced (``jax.jit``), lazy (Dask)
    or meta-device positions cannot be checked before the computation: a position that is
    NaN, infinite or ``abs(m) >= 2**53`` gives NaN in its rows, never a finite wrong value.

    Examples
    --------
    >>> import numpy as np, rope_ref as rr
    >>> rope = rr.Rope(head_dim=4, base=10_000.0, layout="interleaved")
    >>> x = np.array([[1.0, 0.0, 1.0, 0.0]])              # one token, two pairs
    >>> rr.apply_rope(x, np.array([1]), rope).round(6)      # pair j turns by 1 * 10000**(-j/2)
    array([[0.540302, 0.841471, 0.99995 , 0.01    ]])
    >>> x32 = np.ones((2, 3, 4), dtype=np.float32)           # (heads, seq, head_dim)
    >>> rr.apply_rope(x32, np.arange(3), rope).dtype        # computed in float64, rounded once
    dtype('float32')
    """
    xp, wd, cos, sin = _prepare(x, positions, rope, seq_len, role)
    plan = _blocks.block_plan(x)
    if plan is not None and _size(x.shape) > 2 * plan.apply:
        return _apply_blocked(xp, x, cos, sin, rope, wd, plan.apply, plan.threads)
    return rotate(xp, x, cos, sin, wd=wd, **_kernel_args(rope))


def _size(shape: tuple[int, ...]) -> int:
    n = 1
    for s_ in shape:
        n *= int(s_)
    return n


def _nonfinite_split(xp: Any, xw: Any) -> tuple[Any, Any] | None:
    """(x with non-finite entries zeroed, the non-finite entries with zeros elsewhere), or None
    when x is known to be finite."""
    if _compat.is_concrete(xw) and bool(xp.all(xp.isfinite(xw))):
        return None
    finite = xp.isfinite(xw)
    zeros = xp.zeros_like(xw)
    return xp.where(finite, xw, zeros), xp.where(finite, zeros, xw)


def _apply_blocked(
    xp: Any, x: Any, cos: Any, sin: Any, rope: Rope, wd: Any, block: int, threads: int
) -> Any:
    """The rotation kernel over cache-sized blocks of x, written into one output array.

    On eager CPU arrays the unblocked pipeline streams several float64 temporaries the size
    of x through memory; on blocks of ``block`` elements they stay in cache (about 3x faster
    on (1, 32, 4096, 128) float32 with NumPy, see benchmarks/), and NumPy blocks run on
    ``threads`` threads (its ufuncs release the GIL; the blocks write disjoint parts of the
    output). Blocks run along the leading axes of x; the tables are sliced to match wherever
    they are not broadcast.
    """
    shape = tuple(int(s_) for s_ in x.shape)
    nd = len(shape)
    pad = (1,) * (nd - cos.ndim)
    cos = xp.reshape(cos, pad + tuple(cos.shape))
    sin = xp.reshape(sin, pad + tuple(sin.shape))
    # split axis a: the inner axes (a+1 .. nd-2) and the channels fit in one block
    inner, a = shape[-1], nd - 2
    while a >= 0 and inner * shape[a] <= block:
        inner *= shape[a]
        a -= 1
    chunk = max(1, block // inner)
    out = xp.empty(shape, dtype=x.dtype, device=_compat.device_of(x))
    keys = []
    for outer in itertools.product(*(range(shape[i]) for i in range(a))):
        t_outer = tuple(0 if int(cos.shape[i]) == 1 else o for i, o in enumerate(outer))
        for start in range(0, shape[a], chunk):
            stop = min(start + chunk, shape[a])
            t_cut = slice(0, 1) if int(cos.shape[a]) == 1 else slice(start, stop)
            keys.append(((*outer, slice(start, stop), ...), (*t_outer, t_cut, ...)))

    kw = _kernel_args(rope)
    # once, on the host: which table rows hold an exact zero (usually only position 0's), so
    # that a block reads its rows of x for inf/NaN only where the tables can meet them
    zrows = zero_rows(xp, cos, sin)
    zhost = np.from_dlpack(xp.astype(zrows, xp.uint8))

    def run(group: list[tuple[Any, Any]]) -> None:
        for key, t_key in group:
            xb = x[key]
            guard = bool(zhost[t_key].any()) and block_guard(xp, xb, zrows[t_key])
            rotate_into(xp, out, key, xb, cos[t_key], sin[t_key], wd=wd, zero_guard=guard, **kw)

    n = max(1, min(threads, len(keys)))
    _blocks.run_blocks(run, [keys[i::n] for i in range(n)], n)
    return out


def _pair_channels(rope: Rope) -> tuple[list[int], list[int]]:
    """Channel indices (a_j, b_j) of pair j: y_a = c x_a - s x_b, y_b = c x_b + s x_a (the
    rope's layout, from channel ``rotary_offset``)."""
    h, o = rope.n_pairs, rope.rotary_offset
    if rope.layout == "half":
        return list(range(o, o + h)), list(range(o + h, o + 2 * h))
    return list(range(o, o + 2 * h, 2)), list(range(o + 1, o + 2 * h, 2))


def _index(xp: Any, values: list[int], device: Any) -> Any:
    return xp.asarray(values, device=device)


def apply_rope_complex(
    x: Any,
    /,
    positions: Any,
    rope: Rope,
    *,
    seq_len: int | None = None,
    role: str = "query",
) -> Any:
    """The complex route (RoFormer eqs. 12-13): pair j as z_j = x_a + i x_b, times e^{i m theta_j}.

    Same contract as :func:`apply_rope`; an independent code path (gathers by index,
    complex multiplication, scatter by the inverse permutation) for cross-checking.

    Parameters
    ----------
    x : array (..., head_dim)
        Queries or keys; any real floating dtype.
    positions : array or number
        Integer or real positions m, broadcastable to ``x.shape[:-1]`` without growing it,
        ``abs(m) < 2**53``.
    rope : Rope
        The specification.
    seq_len : int, optional
        Sequence length for dynamic schedules; otherwise max(m) + 1.
    role : {"query", "key"}
        Only xPos distinguishes queries from keys.

    Returns
    -------
    array
        Of ``x.shape`` and ``x.dtype``, in x's namespace and on x's device; computed in the
        widest float dtype of the namespace and rounded once. ``x`` is never written to.

    Raises
    ------
    RopeTypeError
        ``rope`` is not a ``Rope``, ``x`` is not a real floating array, or positions are
        bool or complex.
    RopeValueError
        ``x.shape[-1] != rope.head_dim``, shapes that do not broadcast, ``role`` not "query"
        or "key", or positions that can be read and are NaN, infinite or ``abs(m) >= 2**53``.
    """
    xp, wd, cos, sin = _prepare(x, positions, rope, seq_len, role)
    device = _compat.device_of(x)
    xw = xp.astype(x, wd)
    a_idx, b_idx = _pair_channels(rope)
    ct = _compat.complex_dtype_for(xp, wd)
    # Complex arithmetic turns one inf into NaN in both parts (1j * inf = nan + inf j): the
    # product runs on the finite values, and non-finite entries add their own terms, with
    # exact-zero table entries contributing nothing (as in R_{Theta,m}).
    split = _nonfinite_split(xp, xw)
    finite_x = xw if split is None else split[0]
    ia, ib = _index(xp, a_idx, device), _index(xp, b_idx, device)
    xa = xp.astype(xp.take(finite_x, ia, axis=-1), ct)
    xb = xp.astype(xp.take(finite_x, ib, axis=-1), ct)
    z = xa + 1j * xb
    e = xp.astype(cos, ct) + 1j * xp.astype(sin, ct)
    w = z * e
    re, im = xp.real(w), xp.imag(w)
    if split is not None:
        na, nb = xp.take(split[1], ia, axis=-1), xp.take(split[1], ib, axis=-1)
        zc, zs = cos == 0, sin == 0
        re = re + (skip(xp, zc, na) * cos - skip(xp, zs, nb) * sin)
        im = im + (skip(xp, zc, nb) * cos + skip(xp, zs, na) * sin)
    # [real parts, imaginary parts] are channels a_idx + b_idx; undo that order.
    order = a_idx + b_idx
    inverse = [0] * len(order)
    for k, ch in enumerate(order):
        inverse[ch - rope.rotary_offset] = k
    y = xp.take(xp.concat([re, im], axis=-1), _index(xp, inverse, device), axis=-1)
    return finish(xp, x, y, xw, rotary_dim=rope.rotary_dim, offset=rope.rotary_offset)


def _matrices(xp: Any, cos: Any, sin: Any, rope: Rope, device: Any) -> Any:
    """R_{Theta,m} (eq. 15) for every position: shape cos.shape[:-1] + (head_dim, head_dim)."""
    d = rope.head_dim
    a_idx, b_idx = _pair_channels(rope)
    h = rope.n_pairs
    pair_of = [h] * d  # pass-through channels read column h: cos 1, sin 0
    sign = [0.0] * d
    partner = np.zeros((d, d))
    for j, (a, b) in enumerate(zip(a_idx, b_idx, strict=True)):
        pair_of[a] = pair_of[b] = j
        sign[a], sign[b] = -1.0, 1.0
        partner[a, b] = partner[b, a] = 1.0
    ones = xp.ones((*cos.shape[:-1], 1), dtype=cos.dtype, device=device)
    zeros = xp.zeros((*cos.shape[:-1], 1), dtype=cos.dtype, device=device)
    idx = _index(xp, pair_of, device)
    c_full = xp.take(xp.concat([cos, ones], axis=-1), idx, axis=-1)
    s_full = xp.take(xp.concat([sin, zeros], axis=-1), idx, axis=-1)
    s_full = s_full * xp.asarray(sign, dtype=cos.dtype, device=device)
    eye = xp.asarray(np.eye(d).tolist(), dtype=cos.dtype, device=device)
    part = xp.asarray(partner.tolist(), dtype=cos.dtype, device=device)
    return c_full[..., :, None] * eye + s_full[..., :, None] * part


def apply_rope_matrix(
    x: Any,
    /,
    positions: Any,
    rope: Rope,
    *,
    seq_len: int | None = None,
    role: str = "query",
) -> Any:
    """The matrix route (RoFormer eq. 15): y = R_{Theta,m} x with the full block matrix.

    Same contract as :func:`apply_rope`; builds a (head_dim, head_dim) matrix per position,
    so use it on small inputs (tests, teaching).

    Parameters
    ----------
    x : array (..., head_dim)
        Queries or keys; any real floating dtype.
    positions : array or number
        Integer or real positions m, broadcastable to ``x.shape[:-1]`` without growing it,
        ``abs(m) < 2**53``.
    rope : Rope
        The specification.
    seq_len : int, optional
        Sequence length for dynamic schedules; otherwise max(m) + 1.
    role : {"query", "key"}
        Only xPos distinguishes queries from keys.

    Returns
    -------
    array
        Of ``x.shape`` and ``x.dtype``, in x's namespace and on x's device; computed in the
        widest float dtype of the namespace and rounded once. ``x`` is never written to.

    Raises
    ------
    RopeTypeError
        ``rope`` is not a ``Rope``, ``x`` is not a real floating array, or positions are
        bool or complex.
    RopeValueError
        ``x.shape[-1] != rope.head_dim``, shapes that do not broadcast, ``role`` not "query"
        or "key", or positions that can be read and are NaN, infinite or ``abs(m) >= 2**53``.
    """
    xp, wd, cos, sin = _prepare(x, positions, rope, seq_len, role)
    device = _compat.device_of(x)
    xw = xp.astype(x, wd)
    mats = _matrices(xp, cos, sin, rope, device)
    # A matrix product spreads one NaN or inf of x over the whole head (0 * inf): multiply the
    # finite values, then add each non-finite entry's own terms where R_{Theta,m} is nonzero.
    split = _nonfinite_split(xp, xw)
    y = xp.matmul(mats, (xw if split is None else split[0])[..., None])[..., 0]
    if split is not None:
        nf = split[1][..., None, :]
        y = y + xp.sum(mats * skip(xp, mats == 0, nf), axis=-1)
    if y.dtype != x.dtype:
        y = xp.astype(y, x.dtype)
    return y


def rotation_matrix(rope: Rope, m: Any, /, *, dtype: Any = None, seq_len: int | None = None) -> Any:
    """The block-diagonal rotation R_{Theta,m} of RoFormer eq. (15).

    ``m`` is a number (returns a NumPy array of shape (head_dim, head_dim)) or an array of
    positions (returns ``m.shape + (head_dim, head_dim)`` in m's namespace). Rows and columns
    follow ``rope.layout``; pass-through channels have identity rows.

    Parameters
    ----------
    rope : Rope
        The specification.
    m : array or number
        A position, or an array of positions (integer or real, ``abs(m) < 2**53``).
    dtype : dtype, optional
        A real floating dtype to round the matrices to; default the working dtype (float64
        where the namespace has it).
    seq_len : int, optional
        Sequence length for dynamic schedules; otherwise max(m) + 1.

    Returns
    -------
    array
        Shape ``m.shape + (head_dim, head_dim)`` (``(head_dim, head_dim)`` for a number), in
        m's namespace (NumPy for a Python number).

    Raises
    ------
    RopeTypeError
        ``rope`` is not a ``Rope``, ``m`` is bool or complex, or ``dtype`` is not a real
        floating dtype.
    RopeValueError
        ``m`` is NaN, infinite or ``abs(m) >= 2**53`` (where it can be read).

    Examples
    --------
    >>> import rope_ref as rr
    >>> rr.rotation_matrix(rr.Rope(4, layout="interleaved"), 0).tolist()  # m = 0: identity
    [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
    """
    rope = _check_rope(rope)
    xp = _compat.array_namespace(m=m)
    m = _positions.to_positions(m, xp, None, name="m")
    xp = _compat.array_namespace(m=m)
    integral = _positions.check_positions(xp, m, name="m")
    device = _compat.device_of(m)
    wd = _compat.work_dtype(xp, device)
    cos, sin = _tables.build(rope, xp, m, wd, integral=integral, seq_len=seq_len)
    mats = _matrices(xp, cos, sin, rope, device)
    if dtype is not None:
        if not _compat.is_real_floating(xp, dtype):
            raise RopeTypeError(f"dtype must be a real floating dtype, got {dtype}")
        mats = xp.astype(mats, dtype)
    return mats
