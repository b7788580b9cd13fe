"""The paper's RoPE linear attention (RoFormer section 3.3, eqs. 17-19)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import _compat, _validate
from ._apply import apply_rope
from ._errors import RopeTypeError, RopeValueError
from ._rope import Rope

__all__ = ["linear_attention"]

FEATURE_MAPS = ("elu1", "relu")
DEFAULT_CHUNK = 256


def _feature(xp: Any, x: Any, feature_map: str | Callable[[Any], Any]) -> Any:
    if callable(feature_map):
        out = feature_map(x)
        if not _compat.is_array(out) or tuple(out.shape) != tuple(x.shape):
            raise RopeValueError(
                f"feature_map must return an array of the input's shape {tuple(x.shape)}"
            )
        return xp.astype(out, x.dtype)
    if feature_map == "elu1":  # elu(x) + 1 = x + 1 for x > 0, exp(x) otherwise (> 0 always)
        return xp.where(x > 0, x + 1.0, xp.exp(xp.minimum(x, xp.zeros_like(x))))
    return xp.maximum(x, xp.zeros_like(x))


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
        Sum over n <= m (by index) with running prefix sums: O(S) time and memory, processed
        in blocks of ``chunk_size`` (default 256) tokens.
    feature_map : "elu1" (default, elu(x) + 1), "relu", or a callable
        A callable receives an array of the working dtype in the caller's namespace and must
        return a non-negative array of the same shape.

    Returns
    -------
    array (..., Hq, S, Dv) of q.dtype, computed in float64 where available. A row whose
    normalizer is 0 (possible with relu) gives 0.
    """
    for name, arr in (("q", q), ("k", k), ("v", v)):
        if not _compat.is_array(arr):
            raise RopeTypeError(f"{name} must be an array, got {type(arr).__name__}")
    xp = _compat.array_namespace(q=q, k=k, v=v, positions=positions)
    device = _compat.check_same_device(q=q, k=k, v=v, positions=positions)
    for name, arr in (("q", q), ("k", k), ("v", v)):
        if not _compat.is_real_floating(xp, arr.dtype):
            raise RopeTypeError(f"{name} must have a real floating dtype, got {arr.dtype}")
        if arr.ndim < 3:
            raise RopeValueError(f"{name} must be (..., heads, seq, dim), got {tuple(arr.shape)}")
    batch = tuple(q.shape[:-3])
    hq, s, d = (int(x) for x in q.shape[-3:])
    hk = int(k.shape[-3])
    if tuple(k.shape) != (*batch, hk, s, d):
        raise RopeValueError(
            f"k must have shape (..., Hk, S, D) with q's batch axes, length and head_dim: "
            f"q {tuple(q.shape)}, k {tuple(k.shape)}"
        )
    if tuple(v.shape[:-1]) != (*batch, hk, s):
        raise RopeValueError(f"v must have shape (..., {hk}, {s}, Dv), got {tuple(v.shape)}")
    if hk == 0 or hq % hk:
        raise RopeValueError(
            f"the number of query heads ({hq}) must be a multiple of the key/value heads ({hk})"
        )
    if not isinstance(causal, bool):
        raise RopeTypeError(f"causal must be a bool, got {causal!r}")
    if not callable(feature_map) and feature_map not in FEATURE_MAPS:
        raise RopeValueError(
            f"feature_map must be one of {FEATURE_MAPS} or a callable, got {feature_map!r}"
        )
    if rope is not None and not isinstance(rope, Rope):
        raise RopeTypeError(f"rope must be None or a rope_ref.Rope, got {type(rope).__name__}")
    chunk = (
        DEFAULT_CHUNK
        if chunk_size is None
        else _validate.check_int("chunk_size", chunk_size, minimum=1)
    )
    wd = _compat.work_dtype(xp, device)
    g = hq // hk
    dv = int(v.shape[-1])

    fq = _feature(xp, xp.astype(q, wd), feature_map)
    fk = _feature(xp, xp.astype(k, wd), feature_map)
    vw = xp.astype(v, wd)
    if rope is not None:
        pos = positions if positions is not None else xp.arange(s, device=device)
        rq = apply_rope(fq, pos, rope, seq_len=seq_len, role="query")
        rk = apply_rope(fk, pos, rope, seq_len=seq_len, role="key")
    elif positions is not None:
        raise RopeValueError("positions only matter with rope=; pass rope= or drop positions")
    else:
        rq, rk = fq, fk
    # grouped views: queries (..., Hk, G, S, D), keys/values (..., Hk, 1, S, *)
    rq = xp.reshape(rq, (*batch, hk, g, s, d))
    fq = xp.reshape(fq, (*batch, hk, g, s, d))
    rk = xp.expand_dims(rk, axis=-3)
    fk = xp.expand_dims(fk, axis=-3)
    vw = xp.expand_dims(vw, axis=-3)

    if not causal:
        kv = xp.matmul(xp.matrix_transpose(rk), vw)  # (..., Hk, 1, D, Dv)
        num = xp.matmul(rq, kv)
        z = xp.sum(fk, axis=-2)  # (..., Hk, 1, D)
        den = xp.sum(fq * z[..., None, :], axis=-1)
    else:
        state = xp.zeros((*batch, hk, 1, d, dv), dtype=wd, device=device)
        zsum = xp.zeros((*batch, hk, 1, d), dtype=wd, device=device)
        nums, dens = [], []
        for start in range(0, s, chunk):
            sl = slice(start, min(start + chunk, s))
            n = sl.stop - sl.start
            tri = xp.arange(n, device=device)
            lower = tri[:, None] >= tri[None, :]  # key index <= query index
            rq_b, fq_b, rk_b, fk_b, v_b = (
                rq[..., sl, :],
                fq[..., sl, :],
                rk[..., sl, :],
                fk[..., sl, :],
                vw[..., sl, :],
            )
            a = xp.where(lower, xp.matmul(rq_b, xp.matrix_transpose(rk_b)), 0.0)
            b = xp.where(lower, xp.matmul(fq_b, xp.matrix_transpose(fk_b)), 0.0)
            nums.append(xp.matmul(a, v_b) + xp.matmul(rq_b, state))
            dens.append(xp.sum(b, axis=-1) + xp.sum(fq_b * zsum[..., None, :], axis=-1))
            state = state + xp.matmul(xp.matrix_transpose(rk_b), v_b)
            zsum = zsum + xp.sum(fk_b, axis=-2)
        num = xp.concat(nums, axis=-2)
        den = xp.concat(dens, axis=-1)
    pos_den = den > 0
    safe = xp.where(pos_den, den, xp.ones_like(den))
    out = xp.where(pos_den[..., None], num / safe[..., None], xp.zeros_like(num))
    out = xp.reshape(out, (*batch, hq, s, dv))
    return xp.astype(out, q.dtype) if out.dtype != q.dtype else out
