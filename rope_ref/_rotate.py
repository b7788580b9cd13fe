"""The elementwise rotation kernel, RoFormer eq. (34): the one place its arithmetic is written.

Pair j of the rotary channels, ``(x_a, x_b)``, turns by the angle whose (scaled) cosine and
sine are ``c_j``, ``s_j``:

    y_a = c_j x_a - s_j x_b,        y_b = c_j x_b + s_j x_a.

Everything that rotates elementwise calls :func:`rotate` (or :func:`rotate_into`):
:func:`rope_ref.apply_rope`, its VJP (the same kernel with ``sign=-1``, i.e. ``-s_j``: the
transposed rotation), and the signature twins of ``rope_ref.testing`` (flash-attn, Hugging
Face, vLLM, MLX, TransformerEngine), which differ only in how they gather their tables. So
equal tables give equal bits everywhere. The complex and matrix routes
(:func:`rope_ref.apply_rope_complex`, :func:`rope_ref.apply_rope_matrix`) do *not* use this
module: they are independent on purpose, the cross-check of this kernel.

Where the pair sits in the head: channels ``[offset, offset + rotary_dim)`` rotate (``offset``
is ``Rope.rotary_offset``, nonzero for DeepSeek's MLA), the others pass through unchanged.
``"half"`` pairs channel ``offset + j`` with ``offset + j + rotary_dim / 2``; ``"interleaved"``
pairs ``offset + 2j`` with ``offset + 2j + 1``.

The arithmetic runs in the working dtype ``wd`` (the widest float of the namespace) and the
result is rounded once to ``x.dtype``. An exact-zero coefficient contributes nothing, even
against inf or NaN in x (at m = 0, sin = 0: inf in x_a must not turn x_b into inf * 0 = NaN),
as in the product with R_{Theta,m}.
"""

from __future__ import annotations

from typing import Any, Literal

from . import _compat
from ._typing import Array, Layout, Namespace

__all__ = [
    "block_guard",
    "finish",
    "pair_slices",
    "rotate",
    "rotate_into",
    "rotate_pairs",
    "skip",
    "zero_rows",
]

Sign = Literal[1, -1]


def pair_slices(rotary_dim: int, offset: int, layout: Layout) -> tuple[slice, slice]:
    """The channels ``a`` (first of each pair) and ``b`` (second) of the rotary block."""
    o, r = offset, rotary_dim
    if layout == "half":
        return slice(o, o + r // 2), slice(o + r // 2, o + r)
    return slice(o, o + r, 2), slice(o + 1, o + r, 2)


def rotate_pairs(
    xp: Namespace,
    x: Array,
    cos: Array,
    sin: Array,
    *,
    rotary_dim: int,
    layout: Layout,
    wd: Any,
    offset: int = 0,
    sign: Sign = 1,
    cos_b: Array = None,
    sin_b: Array = None,
    zero_guard: bool | None = None,
) -> tuple[Array, slice, slice, Array, Array]:
    """Eq. 34 on the pairs of ``x``: ``(x in the working dtype, channels a, channels b, y_a,
    y_b)``.

    ``cos``/``sin`` are per pair (last axis ``rotary_dim / 2``), broadcastable against
    ``x[..., a]``, already in ``wd``. ``sign=-1`` rotates by the opposite angle (``-sin``;
    the VJP). ``cos_b``/``sin_b`` (default: ``cos``/``sin``) are the coefficients of the
    ``y_b`` outputs where they differ from those of ``y_a`` (Hugging Face's channel-by-channel
    ``x * cos + rotate_half(x) * sin`` with tables whose halves differ).

    ``x`` is promoted to ``wd`` by the products themselves where that is exact and fast
    (float32 * float64 is float64 under the Array API's promotion rules), else cast once.

    ``zero_guard`` says whether an exact-zero coefficient can meet inf or NaN in ``x`` (then
    such products are made 0); None: find out here (a caller running many blocks decides
    once per block from a per-row summary of the tables, which is cheaper).
    """
    xw = x
    if x.dtype != wd and not _compat.promotes_exactly(xp, x.dtype, wd):
        xw = xp.astype(x, wd)
    if sign == -1:  # negation is exact: R(-angle) with the same bits as R^T
        sin = -sin
        sin_b = None if sin_b is None else -sin_b
    elif sign != 1:
        raise ValueError(f"sign must be 1 or -1, got {sign!r}")
    cb = cos if cos_b is None else cos_b
    sb = sin if sin_b is None else sin_b
    tables = (cos, sin) if cos_b is None and sin_b is None else (cos, sin, cb, sb)
    a, b = pair_slices(rotary_dim, offset, layout)
    x1, x2 = xw[..., a], xw[..., b]
    if zero_guard is None:
        zero_guard = _zero_terms_matter(xp, x, tables)
    if not zero_guard:
        return xw, a, b, x1 * cos - x2 * sin, x2 * cb + x1 * sb
    # An exact-zero coefficient contributes nothing, even against inf or NaN in x.
    y1 = skip(xp, cos == 0, x1) * cos - skip(xp, sin == 0, x2) * sin
    y2 = skip(xp, cb == 0, x2) * cb + skip(xp, sb == 0, x1) * sb
    return xw, a, b, y1, y2


def rotate(
    xp: Namespace,
    x: Array,
    cos: Array,
    sin: Array,
    *,
    rotary_dim: int,
    layout: Layout,
    wd: Any,
    offset: int = 0,
    sign: Sign = 1,
    cos_b: Array = None,
    sin_b: Array = None,
) -> Array:
    """Eq. 34 on ``x`` (any leading shape, last axis the whole head): the rotary channels
    rotated, the others copied, rounded once to ``x.dtype``. Arguments as
    :func:`rotate_pairs`."""
    xw, _, _, y1, y2 = rotate_pairs(
        xp, x, cos, sin, rotary_dim=rotary_dim, layout=layout, wd=wd, offset=offset,
        sign=sign, cos_b=cos_b, sin_b=sin_b,
    )  # fmt: skip
    if layout == "half":
        y = xp.concat([y1, y2], axis=-1)
    else:
        y = xp.reshape(xp.stack([y1, y2], axis=-1), (*y1.shape[:-1], rotary_dim))
    return finish(xp, x, y, xw, rotary_dim=rotary_dim, offset=offset)


def rotate_into(
    xp: Namespace,
    out: Array,
    key: tuple[Any, ...],
    x: Array,
    cos: Array,
    sin: Array,
    *,
    rotary_dim: int,
    layout: Layout,
    wd: Any,
    offset: int = 0,
    sign: Sign = 1,
    zero_guard: bool | None = None,
) -> None:
    """:func:`rotate` of ``x`` (a block of a larger array), written into ``out[key]`` channel
    group by channel group (no concatenated temporary); ``key`` ends with an Ellipsis. The
    same operations per element, so the same bits. ``zero_guard`` as in
    :func:`rotate_pairs`."""
    _, a, b, y1, y2 = rotate_pairs(
        xp, x, cos, sin, rotary_dim=rotary_dim, layout=layout, wd=wd, offset=offset,
        sign=sign, zero_guard=zero_guard,
    )  # fmt: skip
    lead = key[:-1]
    out[(*lead, ..., a)] = xp.astype(y1, out.dtype, copy=False)
    out[(*lead, ..., b)] = xp.astype(y2, out.dtype, copy=False)
    if offset:
        out[(*lead, ..., slice(0, offset))] = x[..., :offset]
    if offset + rotary_dim != int(x.shape[-1]):
        out[(*lead, ..., slice(offset + rotary_dim, None))] = x[..., offset + rotary_dim :]


def finish(
    xp: Namespace, x: Array, y_rot: Array, x_work: Array, *, rotary_dim: int, offset: int = 0
) -> Array:
    """Put the pass-through channels (from ``x_work``, exact copies) before and after the
    rotated block ``y_rot`` and round once to ``x.dtype``."""
    o, r, d = offset, rotary_dim, int(x.shape[-1])
    if r != d:
        parts = [y_rot]
        if o:
            parts.insert(0, xp.astype(x_work[..., :o], y_rot.dtype))
        if o + r != d:
            parts.append(xp.astype(x_work[..., o + r :], y_rot.dtype))
        y_rot = xp.concat(parts, axis=-1)
    if y_rot.dtype != x.dtype:
        y_rot = xp.astype(y_rot, x.dtype)
    return y_rot


def skip(xp: Namespace, zero: Array, values: Array) -> Array:
    """``values`` with 0 where the coefficient they multiply is an exact zero (broadcast), so
    the product is 0 even for inf or NaN values (and no invalid-operation warning is raised)."""
    return xp.where(zero, xp.zeros_like(values), values)


def zero_rows(xp: Namespace, cos: Array, sin: Array) -> Array:
    """Per table row (all axes but the last): whether it holds an exact-zero coefficient."""
    return xp.any((cos == 0) | (sin == 0), axis=-1)


def block_guard(xp: Namespace, x: Array, zero_row_block: Array) -> bool:
    """:func:`rotate_pairs`' ``zero_guard`` for a block of eager ``x`` whose table rows have
    the summary ``zero_row_block`` (from :func:`zero_rows`): only the rows of x whose tables
    hold a zero are read (usually position 0's)."""
    if not bool(xp.any(zero_row_block)):
        return False
    rows = xp.broadcast_to(zero_row_block, tuple(x.shape[:-1]))
    return not bool(xp.all(xp.isfinite(x[rows])))


def _zero_terms_matter(xp: Namespace, x: Array, tables: tuple[Array, ...]) -> bool:
    """Whether some product coefficient * x can be 0 * inf or 0 * NaN: a table holds an exact
    zero and x a non-finite value. Traced or lazy arrays cannot be read: assume yes."""
    if not (_compat.is_concrete(x) and _compat.is_concrete(tables[0])):
        return True  # the tables share one namespace: one of them tells
    if not any(bool(xp.any(t == 0)) for t in tables):
        return False
    return not bool(xp.all(xp.isfinite(x)))
