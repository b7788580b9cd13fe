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

from . import _attention, _compat, _tables, _validate
from ._apply import ROLES, _check_rope
from ._errors import RopeTypeError, RopeValueError
from ._rope import Rope

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
    """
    rope = _check_rope(rope)
    if not _compat.is_array(cotangent):
        raise RopeTypeError(f"cotangent must be an array, got {type(cotangent).__name__}")
    xp = _compat.array_namespace(cotangent=cotangent, positions=positions)
    _validate.check_x(xp, cotangent, rope.head_dim, name="cotangent")
    device = _compat.device_of(cotangent)
    positions = _validate.to_positions(positions, xp, device)
    xp = _compat.array_namespace(cotangent=cotangent, positions=positions)
    _compat.check_same_device(cotangent=cotangent, positions=positions)
    integral = _validate.check_positions(xp, positions)
    tokens = rope.token_shape(tuple(positions.shape))
    _validate.broadcast_positions(
        tokens, tuple(cotangent.shape[:-1]), target_name="cotangent.shape[:-1]"
    )
    if role not in ROLES:
        raise RopeValueError(f"role must be one of {ROLES}, got {role!r}")
    wd = _compat.work_dtype(xp, device)
    # The very tables apply_rope uses (factor and xPos magnitude included), so forward and
    # backward agree to the last bit of the tables.
    cos, sin = _tables.tables(
        rope, xp, positions, wd, integral=integral, seq_len=seq_len, role=role
    )
    # astype copies (also a zero-stride broadcast view), so nothing below can touch the input
    gw = xp.astype(cotangent, wd)
    r = rope.rotary_dim
    h = r // 2
    if rope.layout == "half":
        g1, g2 = gw[..., :h], gw[..., h:r]
        dx = xp.concat([g1 * cos + g2 * sin, g2 * cos - g1 * sin], axis=-1)
    else:
        g1, g2 = gw[..., 0:r:2], gw[..., 1:r:2]
        d1 = g1 * cos + g2 * sin
        d2 = g2 * cos - g1 * sin
        dx = xp.reshape(xp.stack([d1, d2], axis=-1), (*d1.shape[:-1], r))
    if r != rope.head_dim:
        dx = xp.concat([dx, gw[..., r:]], axis=-1)
    if dx.dtype != cotangent.dtype:
        dx = xp.astype(dx, cotangent.dtype)
    return dx


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
    q, k, v, rope, q_positions, k_positions, causal, mask, scale, window, softcap,
    segment_ids, sinks, seq_len
        Exactly as given to :func:`attention`.
    d_out : array (..., Hq, Sq, Dv)
        The cotangent of the output ``out``.
    d_lse : array (..., Hq, Sq), optional
        The cotangent of ``lse`` (when the forward pass returned it and it was used).

    Returns
    -------
    ``(dq, dk, dv)`` of the shapes and dtypes of q, k, v (in their namespace and on their
    device); ``(dq, dk, dv, d_sinks)`` when ``sinks`` is given (``d_sinks`` of ``sinks``'
    shape, in its dtype if real floating, else float64). Computed in float64 and rounded
    once. Rows with no key kept contribute nothing (never NaN).

    Memory: one shot, no chunking: about six float64 temporaries of the score shape
    (..., Hq, Sq, Sk) are alive at once (scores, tanh, keep mask, P, dP, dS), i.e.
    ~48 bytes x batch x Hq x Sq x Sk. Meant for the sizes a reference is used at.
    """
    sp = _attention._prepare(
        q,
        k,
        v,
        rope,
        q_positions,
        k_positions,
        causal,
        mask,
        scale,
        window,
        softcap,
        segment_ids,
        sinks,
        seq_len,
    )
    xp, wd = sp.xp, sp.wd
    batch, hq, hk, g, sq, sk, d, dv = sp.batch, sp.hq, sp.hk, sp.g, sp.sq, sp.sk, sp.d, sp.dv
    xp = _compat.array_namespace(q=q, d_out=d_out, d_lse=d_lse)
    _compat.check_same_device(q=q, d_out=d_out, d_lse=d_lse)
    _check_cotangent(xp, d_out, "d_out", (*batch, hq, sq, dv), "the output (..., Hq, Sq, Dv)")
    if d_lse is not None:
        _check_cotangent(xp, d_lse, "d_lse", (*batch, hq, sq), "lse (..., Hq, Sq)")

    # ---- forward, kept: raw scores, the softcap's tanh, P (grouped: (..., Hk, G, Sq, Sk))
    everything = slice(None)
    s0 = xp.matmul(sp.qg, xp.matrix_transpose(sp.kg)) * sp.scale
    t = None
    if sp.softcap is not None:
        t = xp.tanh(s0 / sp.softcap)
        s = t * sp.softcap
    else:
        s = s0
    if sp.add_mask is not None:
        s = s + sp.add_mask.block(everything, everything)
    keep = _attention._keep(sp, everything, everything)
    if keep is not None:
        s = xp.where(keep, s, -xp.inf)
    m = xp.max(s, axis=-1)
    if sp.sink is not None:
        m = xp.maximum(m, sp.sink)
    m0 = _attention._finite_or_zero(xp, m)
    p = xp.exp(s - m0[..., None])  # exp(-inf) = 0 for dropped keys
    denom = xp.sum(p, axis=-1)
    if sp.sink is not None:
        denom = denom + xp.exp(sp.sink - m0)
    # a row with nothing kept (and no sink) has denom 0: P = 0 there, so it adds nothing
    has = denom > 0
    inv = xp.where(has, 1.0 / xp.where(has, denom, xp.ones_like(denom)), xp.zeros_like(denom))
    p = p * inv[..., None]
    out = xp.matmul(p, sp.vg)  # (..., Hk, G, Sq, Dv)

    # ---- backward
    dog = xp.reshape(xp.astype(d_out, wd), (*batch, hk, g, sq, dv))
    delta = xp.sum(dog * out, axis=-1)  # rowsum(dO * O) = sum_n P_mn dP_mn
    dp = xp.matmul(dog, xp.matrix_transpose(sp.vg))
    row = -delta
    if d_lse is not None:
        # d lse / d S_mn = P_mn, the same weights as the softmax
        dlg = xp.reshape(xp.astype(d_lse, wd), (*batch, hk, g, sq))
        row = row + dlg
    ds = p * (dp + row[..., None])
    if t is not None:
        ds = ds * (1.0 - t * t)  # d(c tanh(x / c)) / dx; dropped keys already have P = 0
    dv_g = xp.sum(xp.matmul(xp.matrix_transpose(p), dog), axis=-3)  # sum over the group
    dq_rot = xp.matmul(ds, sp.kg) * sp.scale
    dk_rot = xp.sum(xp.matmul(xp.matrix_transpose(ds), sp.qg), axis=-3) * sp.scale
    dq_rot = xp.reshape(dq_rot, (*batch, hq, sq, d))

    if rope is not None:
        device = sp.device
        q_pos = q_positions
        k_pos = k_positions
        # the same defaults as attention: keys 0..Sk-1, queries the last Sq positions
        if q_pos is None:
            q_pos = xp.arange(sk - sq, sk, device=device)
        if k_pos is None:
            k_pos = xp.arange(0, sk, device=device)
        dq_rot = apply_rope_vjp(dq_rot, q_pos, rope, seq_len=seq_len, role="query")
        dk_rot = apply_rope_vjp(dk_rot, k_pos, rope, seq_len=seq_len, role="key")

    dq = dq_rot if dq_rot.dtype == q.dtype else xp.astype(dq_rot, q.dtype)
    dk = dk_rot if dk_rot.dtype == k.dtype else xp.astype(dk_rot, k.dtype)
    dvv = dv_g if dv_g.dtype == v.dtype else xp.astype(dv_g, v.dtype)
    if sp.sink is None:
        return dq, dk, dvv

    # sink: P_sink = e^(sigma - m0) / denom; dO/dsigma = -P_sink O, dlse/dsigma = P_sink
    p_sink = xp.exp(sp.sink - m0) * inv
    d_sink = xp.sum(p_sink * row, axis=-1)  # (..., Hk, G)
    d_sink = _reduce_to(xp, xp.reshape(d_sink, (*batch, hq)), tuple(sinks.shape))
    out_dtype = sinks.dtype if _compat.is_real_floating(xp, sinks.dtype) else wd
    if d_sink.dtype != out_dtype:
        d_sink = xp.astype(d_sink, out_dtype)
    return dq, dk, dvv, d_sink
