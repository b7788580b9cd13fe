"""Vector-Jacobian products (reverse-mode gradients) of :func:`apply_rope` and :func:`attention`.

The golden reference for backward kernels: given the cotangent of an output, these return the
cotangents of the inputs, computed in the widest float dtype of the namespace (float64 here)
from the same exact cos/sin tables as the forward pass, and rounded once.

* :func:`apply_rope_vjp` - RoPE is linear in x, so its VJP is the transposed map: pair j of
  the cotangent turns by -m * theta_j (scaled by the same per-pair factors).
* :func:`attention_vjp` - the standard softmax-attention backward (as in FlashAttention-2's
  backward pass), then back through the rotation of q and k.
"""

from __future__ import annotations

from typing import Any

from . import _apply, _attention, _compat
from ._errors import RopeTypeError, RopeValueError
from ._rope import Rope
from ._rotate import rotate

__all__ = ["apply_rope_vjp", "attention_vjp"]


def apply_rope_vjp(
    cotangent: Any,
    positions: Any,
    rope: Rope,
    /,
    *,
    seq_len: int | None = None,
    role: str = "query",
) -> Any:
    r"""The VJP of :func:`apply_rope` with respect to x: ``dx = J^T g``.

    Pair j of ``apply_rope`` maps (x_a, x_b) to

    .. math:: y_a = c_j x_a - s_j x_b, \qquad y_b = c_j x_b + s_j x_a,

    with :math:`c_j = \mu_j \cos(m\theta_j)`, :math:`s_j = \mu_j \sin(m\theta_j)` and
    :math:`\mu_j` the attention factor (YaRN, LongRoPE) times the xPos magnitude of the
    position and role (1 otherwise). The Jacobian is the (scaled) rotation itself, so

    .. math:: dx_a = c_j g_a + s_j g_b, \qquad dx_b = c_j g_b - s_j g_a,

    i.e. :math:`dx = \mu_j R_{-m\theta_j} g = R^T (\mu g)`: the rotation by the opposite angle
    with the same factor (for xPos the factor is not orthogonal, but it is diagonal per pair
    and commutes with the 2x2 rotation). Pass-through channels (``rotary_dim:``) get ``g``
    unchanged.

    Parameters
    ----------
    cotangent : array (..., head_dim)
        The cotangent g of ``apply_rope``'s output (any real floating dtype; broadcast,
        zero-stride views are fine).
    positions, rope, seq_len, role
        Exactly as given to :func:`apply_rope`.

    Returns
    -------
    array of ``cotangent.shape`` and ``cotangent.dtype``, in its namespace and on its device,
    computed in float64 from the exact tables and rounded once. ``cotangent`` is never
    written to.

    Raises
    ------
    RopeTypeError
        ``rope`` is not a ``Rope``, ``cotangent`` is not a real floating array, or the
        positions are bool or complex.
    RopeValueError
        ``cotangent.shape[-1] != rope.head_dim``, and every other condition under which
        :func:`apply_rope` raises.
    """
    # the forward's own validation and tables (xPos magnitude and attention factor included),
    # so forward and backward agree to the last bit of the tables
    xp, wd, cos, sin = _apply._prepare(cotangent, positions, rope, seq_len, role, name="cotangent")
    # the forward's rotation kernel with -sin: R^T g (it never writes to the cotangent)
    return rotate(xp, cotangent, cos, sin, wd=wd, sign=-1, **_apply._kernel_args(rope))


def _check_cotangent(xp: Any, arr: Any, name: str, shape: tuple[int, ...], what: str) -> None:
    if not _compat.is_array(arr):
        raise RopeTypeError(f"{name} must be an array, got {type(arr).__name__}")
    if not _compat.is_real_floating(xp, arr.dtype):
        raise RopeTypeError(f"{name} must have a real floating dtype, got {arr.dtype}")
    if tuple(arr.shape) != shape:
        raise RopeValueError(
            f"{name} must have the shape of {what} {shape}, got {tuple(arr.shape)}"
        )


def _reduce_to(xp: Any, grad: Any, shape: tuple[int, ...]) -> Any:
    """Sum ``grad`` over the axes that broadcasting added or stretched, down to ``shape``."""
    lead = grad.ndim - len(shape)
    if lead:
        grad = xp.sum(grad, axis=tuple(range(lead)))
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if stretched:
        grad = xp.sum(grad, axis=stretched, keepdims=True)
    return grad


def attention_vjp(
    q: Any,
    k: Any,
    v: Any,
    d_out: Any,
    /,
    *,
    rope: Rope | None = None,
    q_positions: Any = None,
    k_positions: Any = None,
    causal: bool = False,
    mask: Any = None,
    scale: float | None = None,
    window: tuple[int | None, int | None] | None = None,
    softcap: float | None = None,
    segment_ids: tuple[Any, Any] | None = None,
    sinks: Any = None,
    d_lse: Any = None,
    seq_len: int | None = None,
    chunk_size: int | None = None,
    memory_budget: int | None = None,
) -> tuple[Any, ...]:
    r"""Gradients of :func:`attention` (same keyword arguments) with respect to q, k, v.

    With :math:`\hat q = R_m q`, :math:`\hat k = R_n k` (``rope``; identity without it),
    raw scores :math:`S^0 = \mathrm{scale}\,\hat q \hat k^\top`, scores
    :math:`S = c \tanh(S^0 / c)` (``softcap`` c, else :math:`S = S^0`) plus the additive
    mask, dropped keys at :math:`-\infty`, :math:`P = \mathrm{softmax}(S)` over the kept keys
    (the sink :math:`e^{\sigma}` in the normalizer), :math:`O = P V` and
    :math:`\mathrm{lse} = \log(\sum_n e^{S_{mn}} + e^{\sigma})`, the backward pass is

    .. math::
        dV = P^\top dO, \qquad dP = dO\, V^\top, \qquad
        \delta = \mathrm{rowsum}(dO \circ O),

        dS = P \circ (dP - \delta + d\mathrm{lse}), \qquad
        dS^0 = dS \circ (1 - \tanh^2(S^0 / c)),

        d\hat q = \mathrm{scale}\; dS^0\, \hat k, \qquad
        d\hat k = \mathrm{scale}\; (dS^0)^\top \hat q,

    then :math:`dq = R_m^\top d\hat q` and :math:`dk = R_n^\top d\hat k`
    (:func:`apply_rope_vjp` with roles "query" and "key"). With sinks,
    :math:`d\sigma = \sum_m P_{m,\mathrm{sink}} (d\mathrm{lse}_m - \delta_m)`, summed over
    the axes along which ``sinks`` was broadcast. Grouped-query attention: dK and dV sum the
    contributions of every query head of a group.

    Parameters
    ----------
    q, k, v, rope, q_positions, k_positions, causal, mask, scale, window
        Exactly as given to :func:`attention`.
    softcap, segment_ids, sinks, seq_len
        Exactly as given to :func:`attention`.
    d_out : array (..., Hq, Sq, Dv)
        The cotangent of the output ``out``.
    d_lse : array (..., Hq, Sq), optional
        The cotangent of ``lse`` (when the forward pass returned it and it was used).
    chunk_size, memory_budget : int, optional
        As for :func:`attention`: blocks of ``chunk_size`` queries x keys, or automatic
        blocks (at most 256) when the one-shot temporaries below exceed ``memory_budget``
        bytes (default ``DEFAULT_MEMORY_BUDGET``).

    Returns
    -------
    ``(dq, dk, dv)`` of the shapes and dtypes of q, k, v (in their namespace and on their
    device); ``(dq, dk, dv, d_sinks)`` when ``sinks`` is given (``d_sinks`` of ``sinks``'
    shape, in its dtype if real floating, else float64). Computed in float64 and rounded
    once. Rows with no key kept contribute nothing (never NaN). NaN in the inputs reaches
    exactly the gradients of the rows and keys it touches (a dropped pair adds 0, not
    0 * NaN); rows whose output is infinite (inf in a kept v) have NaN gradients.

    Raises
    ------
    RopeTypeError, RopeValueError
        Where :func:`attention` raises for the same arguments (each message names the
        argument), and for a ``d_out`` or ``d_lse`` that is not a real floating array of
        the output's or the lse's shape.

    Notes
    -----
    Memory: the one-shot path holds about six float64 temporaries of the score shape
    (..., Hq, Sq, Sk) at once (scores, tanh, keep mask, P, dP, dS), i.e.
    ~48 bytes x batch x Hq x Sq x Sk. Above ``memory_budget``, or with ``chunk_size``, the
    gradients are computed in blocks (FlashAttention-2's backward: P recomputed from the
    forward's softmax statistics, see ``rope_ref/_vjp_blocked.py``), equal to the one-shot
    result to a few float64 ulps.
    """
    sp = _attention._prepare(
        q,
        k,
        v,
        rope=rope,
        q_positions=q_positions,
        k_positions=k_positions,
        causal=causal,
        mask=mask,
        scale=scale,
        window=window,
        softcap=softcap,
        segment_ids=segment_ids,
        sinks=sinks,
        seq_len=seq_len,
    )
    xp, wd = sp.xp, sp.wd
    batch, hq, hk, g, sq, d, dv = sp.batch, sp.hq, sp.hk, sp.g, sp.sq, sp.d, sp.dv
    xp = _compat.array_namespace(q=q, d_out=d_out, d_lse=d_lse)
    _compat.check_same_device(q=q, d_out=d_out, d_lse=d_lse)
    _check_cotangent(xp, d_out, "d_out", (*batch, hq, sq, dv), "the output (..., Hq, Sq, Dv)")
    if d_lse is not None:
        _check_cotangent(xp, d_lse, "d_lse", (*batch, hq, sq), "lse (..., Hq, Sq)")
    from ._vjp_blocked import maybe_blocked  # (it imports this module)

    blocked = maybe_blocked(sp, d_out, d_lse, sinks, chunk_size, memory_budget)
    if blocked is not None:
        return blocked

    # ---- forward, the one-shot softmax of attention itself: scores, statistics, weights
    everything = slice(None)
    rows, lg = _attention._absorb(sp, None, everything, everything)
    out, _, stats = _attention._finish(sp, rows)
    p, p_sink = _attention._weights(sp, lg, stats)  # (..., Hk, G, Sq, Sk)

    # ---- backward (q, k with non-finite entries zeroed: a dropped pair adds 0, not 0 * NaN)
    dog = xp.reshape(xp.astype(d_out, wd), (*batch, hk, g, sq, dv))
    if dv == 0:  # no value channels: dO carries nothing (Dask mis-shapes empty contractions)
        delta = xp.zeros((*batch, hk, g, sq), dtype=wd, device=sp.device)
        dp = xp.zeros((*batch, hk, g, sq, int(sp.kg.shape[-2])), dtype=wd, device=sp.device)
    else:
        delta = xp.sum(dog * out, axis=-1)  # rowsum(dO * O) = sum_n P_mn dP_mn
        dp = xp.matmul(dog, xp.matrix_transpose(sp.vg))
    row = -delta
    if d_lse is not None:
        # d lse / d S_mn = P_mn, the same weights as the softmax
        row = row + xp.reshape(xp.astype(d_lse, wd), (*batch, hk, g, sq))
    if sp.v_bad is not None:  # an infinite output (inf in a kept v) has no gradient: NaN
        row = xp.where(xp.isinf(row), xp.nan, row)
    ds = p * (dp + row[..., None])
    if lg.t is not None:
        ds = ds * (1.0 - lg.t * lg.t)  # d(c tanh(x / c)) / dx
    if lg.keep is not None:  # dropped pairs add 0 to dq, dk, also next to a NaN row
        ds = xp.where(lg.keep, ds, xp.zeros_like(ds))
    dv_g = xp.sum(xp.matmul(xp.matrix_transpose(p), dog), axis=-3)  # sum over the group
    dq_rot = xp.matmul(ds, _finite(xp, sp.kg)) * sp.scale
    dk_rot = xp.sum(xp.matmul(xp.matrix_transpose(ds), _finite(xp, sp.qg)), axis=-3) * sp.scale
    dq_rot = xp.reshape(dq_rot, (*batch, hq, sq, d))
    if rope is not None:  # back through the rotation, at the positions the forward used
        dq_rot = apply_rope_vjp(dq_rot, sp.q_pos, rope, seq_len=seq_len, role="query")
        dk_rot = apply_rope_vjp(dk_rot, sp.k_pos, rope, seq_len=seq_len, role="key")
    grads = tuple(
        grad if grad.dtype == dtype else xp.astype(grad, dtype)
        for grad, dtype in zip((dq_rot, dk_rot, dv_g), sp.dtypes, strict=True)
    )
    if _attention._prod((*batch, hq, sq, sp.sk)) == 0:  # no pair: zeros (Dask cannot reduce
        grads = tuple(  # the empty blocks above when it computes them)
            xp.zeros(x.shape, dtype=x.dtype, device=sp.device) for x in (q, k, v)
        )
    if p_sink is None or sp.sinks_shape is None:
        return grads

    if _attention._prod((*batch, hq, sq)) == 0:  # no rows (Dask cannot reduce empty blocks)
        return (
            *grads,
            xp.zeros(sp.sinks_shape, dtype=_sink_dtype(xp, sinks, wd), device=sp.device),
        )
    # sink: dO/dsigma = -P_sink O, dlse/dsigma = P_sink
    d_sink = xp.sum(p_sink * row, axis=-1)  # (..., Hk, G)
    d_sink = _reduce_to(xp, xp.reshape(d_sink, (*batch, hq)), sp.sinks_shape)
    out_dtype = _sink_dtype(xp, sinks, wd)
    if d_sink.dtype != out_dtype:
        d_sink = xp.astype(d_sink, out_dtype)
    return (*grads, d_sink)


def _sink_dtype(xp: Any, sinks: Any, wd: Any) -> Any:
    return sinks.dtype if _compat.is_real_floating(xp, sinks.dtype) else wd


def _finite(xp: Any, x: Any) -> Any:
    return xp.where(xp.isfinite(x), x, xp.zeros_like(x))
