"""The paper's RoPE linear attention (RoFormer section 3.3, eqs. 17-19)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import _attention, _compat, _positions, _validate
from ._apply import apply_rope
from ._errors import RopeTypeError, RopeValueError
from ._rope import Rope

__all__ = ["linear_attention"]

FEATURE_MAPS = ("elu1", "relu")
DEFAULT_CHUNK = 256


def _feature(xp: Any, x: Any, feature_map: str | Callable[[Any], Any]) -> Any:
    if callable(feature_map):
        return _checked_feature(xp, x, feature_map(x))
    if feature_map == "elu1":  # elu(x) + 1 = x + 1 for x > 0, exp(x) otherwise (> 0 always)
        return xp.where(x > 0, x + 1.0, xp.exp(xp.minimum(x, xp.zeros_like(x))))
    return xp.maximum(x, xp.zeros_like(x))


def _checked_feature(xp: Any, x: Any, out: Any) -> Any:
    """A callable feature map's result: an array of x's library, shape and kind, >= 0."""
    if not _compat.is_array(out):
        raise RopeTypeError(f"feature_map must return an array, got {type(out).__name__}")
    _compat.array_namespace(input=x, feature_map=out)  # names both libraries if they differ
    if tuple(out.shape) != tuple(x.shape):
        raise RopeValueError(
            f"feature_map must return an array of the input's shape {tuple(x.shape)}, got "
            f"{tuple(out.shape)}"
        )
    if not (_compat.is_real_floating(xp, out.dtype) or _compat.is_integral(xp, out.dtype)):
        raise RopeTypeError(f"feature_map must return real values, got dtype {out.dtype}")
    out = xp.astype(out, x.dtype)
    # negative features can make the normalizer 0 or negative (no longer an average of v)
    if _compat.is_concrete(out) and bool(xp.any(out < 0)):
        raise RopeValueError(
            "feature_map must return non-negative values (phi(x) >= 0 keeps the normalizer "
            f"positive, RoFormer eq. 18); got a minimum of {float(xp.min(out))!r}"
        )
    return out


def _rotator(
    xp: Any,
    rope: Rope | None,
    positions: Any,
    seq_len: int | None,
    batch: tuple[int, ...],
    hq: int,
    hk: int,
    s: int,
    device: Any,
) -> Callable[[Any, slice, str], Any]:
    """A function rotating a block of tokens (identity without rope)."""
    if rope is None:
        if positions is not None:
            raise RopeValueError("positions only matter with rope=; pass rope= or drop positions")
        return lambda x, sl, role: x
    pos = xp.arange(s, device=device) if positions is None else positions
    pos = _positions.to_positions(pos, xp, device)
    _positions.check_positions(xp, pos)
    tokens = rope.token_shape(tuple(pos.shape))
    for heads in (hq, hk):
        _validate.broadcast_positions(
            tokens, (*batch, heads, s), target_name=f"(..., H, S) = {(*batch, heads, s)}"
        )
    trailing = rope.axis_scheme is not None and rope.axis_scheme.axis_position == "trailing"
    sliced = len(tokens) > 0 and tokens[-1] == s
    if seq_len is None and rope.scaling is not None and rope.scaling.dynamic and s > 0:
        if not _compat.is_concrete(pos):
            raise RopeValueError("seq_len is required with a dynamic scaling and lazy positions")
        seq_len = int(float(xp.max(pos))) + 1  # one length for every block

    def rotate(x: Any, sl: slice, role: str) -> Any:
        p = pos
        if sliced:
            p = pos[..., sl, :] if trailing else pos[..., sl]
        return apply_rope(x, p, rope, seq_len=seq_len, role=role)

    return rotate


def linear_attention(
    q: Any,
    k: Any,
    v: Any,
    /,
    *,
    rope: Rope | None = None,
    positions: Any = None,
    causal: bool = False,
    feature_map: str | Callable[[Any], Any] = "elu1",
    chunk_size: int | None = None,
    seq_len: int | None = None,
) -> Any:
    r"""RoPE linear attention, RoFormer eq. (19):

    .. math:: o_m = \frac{\sum_n (R_m \phi(q_m))^\top (R_n \varphi(k_n))\, v_n}
                         {\sum_n \phi(q_m)^\top \varphi(k_n)}

    The rotation acts on the feature-mapped vectors; the normalizer is left unrotated, so it
    stays positive, but the weights of the numerator can be negative and need not sum to 1
    (they are not a probability distribution, as the paper acknowledges).

    Parameters
    ----------
    q, k, v : arrays (..., Hq, S, D), (..., Hk, S, D), (..., Hk, S, Dv)
        One sequence for queries and keys; Hq a multiple of Hk (grouped heads).
    rope : Rope, optional
        Rotation applied after the feature map; without it, plain linear attention (eq. 18).
    positions : array, optional
        Token positions for the rotation, broadcastable to (..., S) heads included as for
        ``apply_rope``; default 0 .. S - 1.
    causal : bool
        Sum over n <= m (by index) with running prefix sums: O(S) time and memory. Both
        modes work in blocks of ``chunk_size`` (default 256) tokens.
    feature_map : "elu1" (default, elu(x) + 1), "relu", or a callable
        A callable receives an array of the working dtype in the caller's namespace and must
        return a non-negative array of the same shape and library (else RopeTypeError /
        RopeValueError naming ``feature_map``; negative values are caught where they can be
        read, not under jit or on Dask).
    chunk_size : int, optional
        Tokens per block (>= 1); default 256. Changes only the order of the sums.
    seq_len : int, optional
        For dynamic RoPE schedules (as in :func:`apply_rope`).

    Returns
    -------
    array (..., Hq, S, Dv) of q.dtype, computed in float64 where available (S may be 0;
    D must be >= 1). A row whose normalizer is 0 (possible with relu) gives 0; NaN inputs
    give NaN in the rows they reach.

    Raises
    ------
    RopeTypeError
        Inputs that are not real floating arrays of one library and device, a ``rope`` that
        is not a ``Rope``, a non-bool ``causal``, a non-integer ``chunk_size``, or a
        ``feature_map`` callable returning something other than a real array.
    RopeValueError
        Shapes that do not fit (q, k, v as above, Hq not a multiple of Hk, D = 0), an unknown
        ``feature_map`` name, ``chunk_size`` < 1, a callable's result of the wrong shape or
        (where readable) negative, ``positions`` without ``rope``, or positions that do not
        broadcast or are out of range.
    """
    xp, device = _attention._check_arrays(q=q, k=k, v=v, positions=positions)
    batch, hq, hk, s, d, dv = _check_shapes(q, k, v)
    causal = _validate.as_bool(causal, "causal")
    if not callable(feature_map) and feature_map not in FEATURE_MAPS:
        raise RopeValueError(
            f"feature_map must be one of {FEATURE_MAPS} or a callable, got {feature_map!r}"
        )
    if rope is not None and not isinstance(rope, Rope):
        raise RopeTypeError(f"rope must be None or a rope_ref.Rope, got {type(rope).__name__}")
    chunk = (
        DEFAULT_CHUNK
        if chunk_size is None
        else _validate.as_int(chunk_size, "chunk_size", minimum=1)
    )
    wd = _compat.work_dtype(xp, device)
    g = hq // hk
    rotate = _rotator(xp, rope, positions, seq_len, batch, hq, hk, s, device)
    if s == 0:
        return xp.zeros((*batch, hq, 0, dv), dtype=q.dtype, device=device)

    fq_all = _feature(xp, xp.astype(q, wd), feature_map)
    fk_all = _feature(xp, xp.astype(k, wd), feature_map)
    vw = xp.expand_dims(xp.astype(v, wd), axis=-3)  # (..., Hk, 1, S, Dv)

    def block(sl: slice) -> tuple[Any, Any, Any, Any]:
        """Feature-mapped and rotated q, k of a block, grouped: q (..., Hk, G, n, D)."""
        fq_b, fk_b = fq_all[..., sl, :], fk_all[..., sl, :]
        rq_b, rk_b = rotate(fq_b, sl, "query"), rotate(fk_b, sl, "key")
        n = sl.stop - sl.start
        return (
            xp.reshape(rq_b, (*batch, hk, g, n, d)),
            xp.reshape(fq_b, (*batch, hk, g, n, d)),
            xp.expand_dims(rk_b, axis=-3),
            xp.expand_dims(fk_b, axis=-3),
        )

    # Blocks of `chunk` tokens keep the rotation tables and products cache-sized, so time
    # and memory grow linearly with S.
    blocks = [slice(i, min(i + chunk, s)) for i in range(0, s, chunk)]
    state = xp.zeros((*batch, hk, 1, d, dv), dtype=wd, device=device)
    zsum = xp.zeros((*batch, hk, 1, d), dtype=wd, device=device)
    nums, dens = [], []
    if not causal:
        parts = [block(sl) for sl in blocks]
        for sl, (_, _, rk_b, fk_b) in zip(blocks, parts, strict=True):
            state = state + xp.matmul(xp.matrix_transpose(rk_b), vw[..., sl, :])
            zsum = zsum + xp.sum(fk_b, axis=-2)
        for rq_b, fq_b, _, _ in parts:
            nums.append(xp.matmul(rq_b, state))
            dens.append(xp.sum(fq_b * zsum[..., None, :], axis=-1))
    else:
        for sl in blocks:
            rq_b, fq_b, rk_b, fk_b = block(sl)
            v_b = vw[..., sl, :]
            tri = xp.arange(sl.stop - sl.start, device=device)
            lower = tri[:, None] >= tri[None, :]  # key index <= query index
            a = xp.where(lower, xp.matmul(rq_b, xp.matrix_transpose(rk_b)), 0.0)
            b = xp.where(lower, xp.matmul(fq_b, xp.matrix_transpose(fk_b)), 0.0)
            nums.append(xp.matmul(a, v_b) + xp.matmul(rq_b, state))
            dens.append(xp.sum(b, axis=-1) + xp.sum(fq_b * zsum[..., None, :], axis=-1))
            state = state + xp.matmul(xp.matrix_transpose(rk_b), v_b)
            zsum = zsum + xp.sum(fk_b, axis=-2)
    num = xp.concat(nums, axis=-2)
    den = xp.concat(dens, axis=-1)
    zero = den == 0  # (NaN is not 0: it spreads)
    safe = xp.where(zero, xp.ones_like(den), den)
    out = xp.where(zero[..., None], xp.zeros_like(num), num / safe[..., None])
    out = xp.reshape(out, (*batch, hq, s, dv))
    return xp.astype(out, q.dtype) if out.dtype != q.dtype else out


def _check_shapes(q: Any, k: Any, v: Any) -> tuple[tuple[int, ...], int, int, int, int, int]:
    """(batch, Hq, Hk, S, D, Dv) after checking that q, k and v fit together."""
    batch = tuple(int(n) for n in q.shape[:-3])
    hq, s, d = (int(n) for n in q.shape[-3:])
    hk = int(k.shape[-3])
    if tuple(k.shape) != (*batch, hk, s, d):
        raise RopeValueError(
            f"k must have shape (..., Hk, S, D) with q's batch axes, length and head_dim: "
            f"q {tuple(q.shape)}, k {tuple(k.shape)}"
        )
    if d == 0:
        raise RopeValueError(
            f"head_dim (the last axis of q and k) must be >= 1, got shape {tuple(q.shape)}"
        )
    if tuple(v.shape[:-1]) != (*batch, hk, s):
        raise RopeValueError(f"v must have shape (..., {hk}, {s}, Dv), got {tuple(v.shape)}")
    if hk == 0 or hq % hk:
        raise RopeValueError(
            f"the number of query heads ({hq}) must be a multiple of the key/value heads ({hk})"
        )
    return batch, hq, hk, s, d, int(v.shape[-1])
