"""MLX's ``mx.fast.rope``, computed with rope_ref's exact tables."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any, Literal

from ... import _blocks, _compat, _exact, _tables, _validate
from ..._apply import apply_rope
from ..._errors import RopeTypeError, RopeValueError
from ..._rope import Rope
from ._common import _check_float_array, _rotate

__all__ = ["mlx_rope"]


def _real(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RopeTypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    out = float(value)
    if not math.isfinite(out):
        raise RopeValueError(f"{name} must be finite, got {value!r}")
    return out


def mlx_rope(
    x: Any,
    dims: int,
    *,
    traditional: bool,
    base: float | None,
    scale: float,
    offset: Any,
    freqs: Any = None,
) -> Any:
    """MLX's ``mx.fast.rope``, computed with rope_ref's exact tables.

    Parameters
    ----------
    x : array (B, ..., T, D), at least 3 axes (as MLX)
        Sequence on the second-to-last axis.
    dims : int
        Channels that rotate (even, <= D); the rest pass through.
    traditional : bool
        True: pairs (x0, x1), (x2, x3), ... (interleaved); False: pairs (x_i, x_{i + dims/2}).
    base : float or None
        theta_j = base ** (-2j / dims). Exactly one of ``base`` and ``freqs`` is given.
    scale : float
        Multiplies the positions: token t is at ``(offset + t) * scale``, formed in float64
        (one rounding; exact for integer scales and powers of two).
    offset : int or integer array
        A scalar, or one offset per entry of the first axis (shape (B,)), as MLX.
    freqs : array (dims / 2,) or sequence of floats, optional
        *Periods*: theta_j = 1 / freqs[j] (MLX's convention), positive and finite; read on
        the host (an array must be concrete, not lazy or traced), each theta_j taken as the
        exact reciprocal of the given value.

    Returns
    -------
    array of ``x.shape`` and ``x.dtype``, computed in float64 and rounded once. MLX itself
    works in float32 (base, scale and freqs included) and is compared against this within
    its own tolerance.

    Raises
    ------
    RopeTypeError
        ``x`` not a real floating array, ``dims`` or a scalar ``offset`` not an integer,
        ``traditional`` not a bool, ``base``, ``scale`` or an entry of ``freqs`` not a real
        number, an ``offset`` array not of an integer dtype, or a ``freqs`` array not real
        floating.
    RopeValueError
        ``x`` with fewer than 3 axes, ``dims`` odd, < 1 or > ``x.shape[-1]``, non-finite
        ``scale`` or ``base``, both or neither of ``base`` and ``freqs``, an ``offset``
        array not of shape () / (1,) / (B,), ``freqs`` not 1-D, lazy, of the wrong length
        or with a period that is not positive and finite, or positions out of range.
    """
    if not _compat.is_array(x):
        raise RopeTypeError(f"x must be an array, got {type(x).__name__}")
    xp = _compat.array_namespace(x=x, offset=offset, freqs=freqs)
    _check_float_array(xp, x, "x")
    device = _compat.check_same_device(x=x, offset=offset, freqs=freqs)
    dims = _check_dims(x, dims)
    if not isinstance(traditional, bool):
        raise RopeTypeError(f"traditional must be a bool, got {traditional!r}")
    scale = _real("scale", scale)
    if (base is None) == (freqs is None):
        raise RopeValueError(
            "exactly one of base and freqs must be given (the other None), as in MLX"
        )
    layout: Literal["half", "interleaved"] = "interleaved" if traditional else "half"
    wd = _compat.work_dtype(xp, device)
    m = _positions(xp, x, offset, scale, wd, device)
    if freqs is None:
        rope = Rope(int(x.shape[-1]), rotary_dim=dims, base=_real("base", base), layout=layout)
        return apply_rope(x, m, rope)
    thetas = _thetas(xp, freqs, dims, wd)
    _validate.check_positions(xp, m)
    p = _compat.significand_bits(xp, wd)
    table = _exact.angle_table(thetas, p)
    cos, sin = _tables.blocked_cos_sin(
        xp,
        m,
        table,
        dtype=wd,
        device=device,
        integral=False,
        blocks=_blocks.prefers_blocks(x),
    )
    return _rotate(xp, x, cos, sin, dims, traditional, wd)


def _check_dims(x: Any, dims: Any) -> int:
    """``dims`` as an int: even, >= 1 and at most x.shape[-1]; x has at least 3 axes."""
    if x.ndim < 3:
        raise RopeValueError(
            f"x must have at least 3 axes (B, ..., T, D) as in MLX, got shape {tuple(x.shape)}"
        )
    n = _validate.check_int("dims", dims, minimum=1)
    d = int(x.shape[-1])
    if n % 2 or n > d:
        raise RopeValueError(f"dims must be even and <= x.shape[-1] = {d}, got {n}")
    return n


def _positions(xp: Any, x: Any, offset: Any, scale: float, wd: Any, device: Any) -> Any:
    """Positions ``(offset + t) * scale`` in ``wd``, shaped to broadcast against x.shape[:-1]."""
    batch, t_len = int(x.shape[0]), int(x.shape[-2])
    t = xp.arange(t_len, dtype=wd, device=device)
    if not _compat.is_array(offset):
        off_int = _validate.check_int("offset", offset)
        return (t + float(off_int)) * scale
    if not _compat.is_integral(xp, offset.dtype):
        raise RopeTypeError(f"offset must have an integer dtype, got {offset.dtype}")
    size = math.prod(offset.shape)
    if offset.ndim > 1 or size not in (1, batch):
        raise RopeValueError(
            f"offset must be a scalar or a vector of x.shape[0] = {batch} entries, got "
            f"shape {tuple(offset.shape)}"
        )
    shape = (1,) if size == 1 else (batch,) + (1,) * (x.ndim - 2)
    return (xp.reshape(xp.astype(offset, wd), shape) + t) * scale


def _thetas(xp: Any, freqs: Any, dims: int, wd: Any) -> tuple[Decimal, ...]:
    """theta_j = 1 / freqs[j] (MLX's periods), each the exact reciprocal of the given value."""
    if isinstance(freqs, (list, tuple)):
        periods = [_real(f"freqs[{j}]", f) for j, f in enumerate(freqs)]
    else:
        _check_float_array(xp, freqs, "freqs")
        if freqs.ndim != 1:
            raise RopeValueError(f"freqs must be one-dimensional, got shape {tuple(freqs.shape)}")
        if not _compat.is_concrete(freqs):
            raise RopeValueError(
                "freqs must be concrete (not lazy or traced; a Python list also works): its "
                "values set the exact frequencies"
            )
        fw = xp.astype(freqs, wd)
        periods = [float(fw[j]) for j in range(int(freqs.shape[0]))]
    if len(periods) != dims // 2:
        raise RopeValueError(f"freqs must have dims / 2 = {dims // 2} entries, got {len(periods)}")
    for j, f in enumerate(periods):
        if not f > 0.0:
            raise RopeValueError(f"freqs[{j}] must be a positive finite period, got {f!r}")
    ctx = _exact.context()
    return tuple(ctx.divide(Decimal(1), Decimal(f)) for f in periods)


# ---------------------------------------------------------------------------- check adapter
def mlx_prepare(fn: Any, ci: Any) -> Any:
    """``fn(x, dims, traditional=..., base=..., scale=1.0, offset=...)`` with x (B, ..., T, D)
    (bhsd; bshd transposed; packed sequences one call each, as (1, heads, T, D)); offset an int
    when all rows share it, else an int64 array (B,). Plain RoPE only (MLX's rope has a base
    and a position scale, no schedule or attention factor)."""
    from ._common import (
        Call,
        Unfit,
        require_1d,
        require_plain,
        row_offsets,
        segment_offsets,
        swap_12,
    )

    who = "MLX's rope"
    require_1d(ci.rope, who)
    require_plain(ci.rope, who)
    xp, dev = ci.xp, ci.device
    kw: dict[str, Any] = {
        "traditional": ci.rope.layout == "interleaved",
        "base": ci.rope.base,
        "scale": 1.0,
    }
    dims = ci.rope.rotary_dim
    unfit = f"{who} takes positions offset + arange(T) per sequence"
    if ci.family == "thd":
        segs = segment_offsets(ci)
        if segs is None:
            raise Unfit(unfit)
        parts = [(swap_12(xp, ci.x[a:b, ...][None, ...]), off) for a, b, off in segs]

        def run() -> Any:
            return [fn(xs, dims, offset=off, **kw) for xs, off in parts]

        def unpack(out: Any) -> dict[str, Any]:
            for o in out:
                if not _compat.is_array(o):
                    raise TypeError(f"the target returned {type(o).__name__}, not an array")
            return {"q": xp.concat([swap_12(xp, o)[0, ...] for o in out], axis=0)}

        return Call(run=run, unpack=unpack, note="one call per packed sequence")
    off = row_offsets(ci.tok)
    if off is None:
        raise Unfit(unfit)
    x = ci.x if ci.family == "bhsd" else swap_12(xp, ci.x)
    offset: Any = (
        int(off[0]) if len(set(off.tolist())) == 1 else xp.asarray(off, dtype=xp.int64, device=dev)
    )

    def unpack1(out: Any) -> dict[str, Any]:
        if not _compat.is_array(out):
            raise TypeError(f"the target returned {type(out).__name__}, not an array")
        return {"q": out if ci.family == "bhsd" else swap_12(xp, out)}

    return Call(run=lambda: fn(x, dims, offset=offset, **kw), unpack=unpack1)
