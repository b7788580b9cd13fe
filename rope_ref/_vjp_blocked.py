r"""The backward pass of :func:`rope_ref.attention` in query x key blocks (bounded memory).

The one-shot :func:`rope_ref.attention_vjp` holds about six float64 arrays of the score shape
(..., Hq, Sq, Sk) at once. This module computes the same gradients with only
(block x block) score temporaries alive, as FlashAttention-2's backward pass does: the
softmax weights are never stored but recomputed, block by block, from the row statistics of
the forward pass (the running maximum and normalizer of the online softmax, i.e. the
log-sum-exp).

Derivation
----------
Per row m (one query of one head), with the rotated :math:`\hat q_m = R_m q_m`,
:math:`\hat k_n = R_n k_n`, the raw scores :math:`S^0_{mn} = \mathrm{scale}\,\hat q_m\cdot
\hat k_n`, the scores :math:`S_{mn} = c\tanh(S^0_{mn}/c)` (softcap c; else
:math:`S = S^0`) plus the additive mask, dropped pairs (causal, window, segments, a False or
-inf mask entry) at :math:`-\infty`, the sink logit :math:`\sigma` (``sinks``; none:
:math:`\sigma = -\infty`):

.. math::
    L_m = \log\Big(\sum_n e^{S_{mn}} + e^{\sigma}\Big), \quad
    P_{mn} = e^{S_{mn} - L_m}, \quad P_{m,\mathrm{sink}} = e^{\sigma - L_m}, \quad
    O_m = \sum_n P_{mn} v_n .

Given the cotangents :math:`dO` and :math:`dL` (``d_lse``, 0 when not given):

* :math:`\partial O_m / \partial S_{mn} = P_{mn}(v_n - O_m)` and
  :math:`\partial L_m / \partial S_{mn} = P_{mn}`, so with :math:`dP_{mn} = dO_m\cdot v_n`
  and :math:`D_m = dO_m \cdot O_m = \sum_n P_{mn} dP_{mn}` (a row sum over the *output*,
  available without the weights),

  .. math:: dS_{mn} = P_{mn}\,(dP_{mn} - D_m + dL_m).

* The softcap: :math:`dS^0 = dS\,(1 - \tanh^2(S^0/c))`; dropped pairs get :math:`dS^0 = 0`.
* :math:`dv_n = \sum_m P_{mn}\, dO_m`, :math:`d\hat q_m = \mathrm{scale}\sum_n dS^0_{mn}
  \hat k_n`, :math:`d\hat k_n = \mathrm{scale}\sum_m dS^0_{mn}\hat q_m`; grouped-query
  attention sums dk and dv over the query heads of a group.
* The sink enters only through :math:`L` and the normalizer:
  :math:`\partial O_m/\partial\sigma = -P_{m,\mathrm{sink}} O_m`,
  :math:`\partial L_m/\partial\sigma = P_{m,\mathrm{sink}}`, so
  :math:`d\sigma = \sum_m P_{m,\mathrm{sink}}\,(dL_m - D_m)`, summed over the axes along
  which ``sinks`` was broadcast.
* RoPE: :math:`dq_m = R_m^\top d\hat q_m`, :math:`dk_n = R_n^\top d\hat k_n`
  (:func:`rope_ref.apply_rope_vjp`, roles "query" and "key", same positions).

Every term of dq is a sum over keys and every term of dk, dv a sum over queries, so the
gradients split over blocks: for each block of queries,

1. one forward sweep over the key blocks (``_attention._absorb``, the online softmax of the
   forward pass) gives the final statistics of its rows, the output block :math:`O` and
   :math:`D = \mathrm{rowsum}(dO\circ O)`;
2. a second sweep recomputes, for each key block, the scores in the units of those final
   statistics (same shift, same maximum) and :math:`P = e^{S - L}` exactly as the forward's
   ``_weights`` does, then adds :math:`P^\top dO` to dv of the key block,
   :math:`dS^{0\top}\hat q` to its dk, and :math:`dS^0\hat k` to dq of the query block.

Blocks wholly outside a causal/window mask are skipped in both sweeps (concrete positions
only). Memory: a few (block x block) float64 temporaries plus the O(S x D) inputs and
gradients; work: about 3.5x the forward's matrix products (Q K^T twice, P V, dO V^T,
P^T dO, dS K, dS^T Q against the forward's Q K^T and P V). Equal to the one-shot result to a
few float64 ulps (only the order of the sums differs).
"""

from __future__ import annotations

import math
from typing import Any

from . import _attention, _compat, _validate
from ._attention import _Logits, _Rows, _Spec, _Stats

__all__ = [
    "VJP_TEMPS",
    "attention_vjp_blocked",
    "maybe_blocked",
    "vjp_blocks",
    "vjp_chunk_for",
]

#: score-sized float64 temporaries of the one-shot VJP (scores, tanh, keep mask, P, dP, dS):
#: the one-shot path needs about ``VJP_TEMPS * 8 * batch * Hq * Sq * Sk`` bytes
VJP_TEMPS = 6


def vjp_chunk_for(sp: _Spec, chunk_size: Any, memory_budget: Any) -> int:
    """Block size of the blocked VJP, or 0 for one shot: the rules of ``attention``.

    ``chunk_size`` given: that size. Otherwise blocks are used when the one-shot temporaries
    (``VJP_TEMPS`` x 8 bytes x batch x Hq x Sq x Sk) exceed ``memory_budget`` bytes (default
    ``DEFAULT_MEMORY_BUDGET``), square, at most 256 wide, fitting the budget. Empty problems
    and blocks covering both lengths run in one shot.
    """
    if chunk_size is not None:
        chunk = _validate.as_int(chunk_size, "chunk_size", minimum=1)
    else:
        budget = (
            _attention.DEFAULT_MEMORY_BUDGET
            if memory_budget is None
            else _validate.as_int(memory_budget, "memory_budget", minimum=1)
        )
        rows = _attention._prod(sp.batch) * sp.hq
        if VJP_TEMPS * 8 * rows * sp.sq * sp.sk <= budget:
            return 0
        side = math.isqrt(max(1, budget // (VJP_TEMPS * 8 * rows)))
        chunk = max(16, min(_attention._AUTO_BLOCK, side))
    empty = _attention._prod((*sp.batch, sp.hq, sp.sq, sp.sk)) == 0
    return 0 if empty or (chunk >= sp.sq and chunk >= sp.sk) else chunk


def _finite(xp: Any, x: Any) -> Any:
    return xp.where(xp.isfinite(x), x, xp.zeros_like(x))


def _recompute(
    sp: _Spec, rows: _Rows, stats: _Stats, qsl: slice, ksl: slice, positional: bool
) -> tuple[Any, _Logits]:
    """The softmax weights P of a block from the final statistics of its rows.

    ``_scores`` with the final ``rows`` puts the block in their units (their shift is already
    the maximum over every key, so nothing moves); the exponent is taken as ``_absorb`` takes
    it, and ``_weights`` normalizes it (sinks, empty rows and dropped keys included).
    """
    xp = sp.xp
    lg, _, r0, m_old = _attention._scores(sp, rows, qsl, ksl, positional)
    if r0 is not None and sp.add_mask is None:
        p = xp.exp(lg.s)  # the row maximum is 0 in these units (as in _absorb)
    else:
        m = xp.maximum(m_old, _attention._row_max(xp, lg.s))
        p = xp.exp(lg.s - _attention._reference(xp, m)[..., None])
    lg = _Logits(s=lg.s, keep=lg.keep, t=lg.t, p=p)
    weights, _ = _attention._weights(sp, lg, stats)
    return weights, lg


def _sink_weights(sp: _Spec, stats: _Stats, nq: int) -> Any:
    """P_sink of the rows (None without sinks), by ``_weights`` on a block of no keys."""
    xp = sp.xp
    none = xp.zeros((*sp.batch, sp.hk, sp.g, nq, 0), dtype=sp.wd, device=sp.device)
    _, p_sink = _attention._weights(sp, _Logits(s=none, keep=None, t=None, p=none), stats)
    return p_sink


def _forward_sweep(
    sp: _Spec, qsl: slice, kblocks: list[slice], states: list[str]
) -> tuple[_Rows, Any, _Stats]:
    """Step 1 for one block of queries: the online softmax over its key blocks (skipped
    blocks left out) gives the final row statistics and the output block O."""
    rows = None
    for ksl, state in zip(kblocks, states, strict=True):
        if state != "skip":
            rows, _ = _attention._absorb(sp, rows, qsl, ksl, positional=state != "full")
    if rows is None:
        rows = _attention._start(sp, qsl.stop - qsl.start)
    out, _, stats = _attention._finish(sp, rows)
    return rows, out, stats


def _row_term(sp: _Spec, dog: Any, out: Any, dl: Any, nq: int) -> Any:
    """-D + dL per row (D = rowsum(dO * O); dL = ``d_lse``'s rows or None for 0)."""
    xp = sp.xp
    if sp.dv:
        row = -xp.sum(dog * out, axis=-1)
    else:  # no value channels: D = 0 (and no empty contraction: Dask mis-shapes them)
        row = xp.zeros((*sp.batch, sp.hk, sp.g, nq), dtype=sp.wd, device=sp.device)
    if dl is not None:
        row = row + dl
    if sp.v_bad is not None:  # an infinite output (inf in a kept v) has no gradient: NaN
        row = xp.where(xp.isinf(row), xp.nan, row)
    return row


def _block_ds(sp: _Spec, p: Any, lg: _Logits, dog: Any, row: Any, ksl: slice) -> Any:
    """dS^0 of one block: P (dP - D + dL), through the softcap, 0 at dropped pairs."""
    xp = sp.xp
    if sp.dv:
        ds = p * (xp.matmul(dog, xp.matrix_transpose(sp.vg[..., ksl, :])) + row[..., None])
    else:
        ds = p * row[..., None]  # dP = dO V^T = 0
    if lg.t is not None:
        ds = ds * (1.0 - lg.t * lg.t)  # d(c tanh(x / c)) / dx
    if lg.keep is not None:  # dropped pairs add 0, also next to a NaN row
        ds = xp.where(lg.keep, ds, xp.zeros_like(ds))
    return ds


def _accumulate(parts: list[Any], j: int, value: Any) -> None:
    parts[j] = value if parts[j] is None else parts[j] + value


def _gather(sp: _Spec, parts: list[Any], blocks: list[slice], width: int) -> Any:
    """The key blocks' gradients (zeros for blocks no query reached) along the key axis."""
    xp = sp.xp
    filled = [
        xp.zeros((*sp.batch, sp.hk, sl.stop - sl.start, width), dtype=sp.wd, device=sp.device)
        if part is None
        else part
        for part, sl in zip(parts, blocks, strict=True)
    ]
    if not filled:
        return xp.zeros((*sp.batch, sp.hk, sp.sk, width), dtype=sp.wd, device=sp.device)
    return filled[0] if len(filled) == 1 else xp.concat(filled, axis=-2)


def vjp_blocks(sp: _Spec, d_out: Any, d_lse: Any, chunk: int) -> tuple[Any, Any, Any, Any]:
    """(dq, dk, dv, d_sink) in blocks of ``chunk`` queries x ``chunk`` keys.

    dq and dk are the gradients of the *rotated* q and k, (..., Hq, Sq, D) and
    (..., Hk, Sk, D); dv is (..., Hk, Sk, Dv); d_sink is (..., Hk, G) or None. All in the
    working dtype; the caller applies the rotation's VJP and rounds.
    """
    xp, wd = sp.xp, sp.wd
    batch, hk, g, d, dv = sp.batch, sp.hk, sp.g, sp.d, sp.dv
    qblocks, kblocks = _attention._blocks(sp.sq, chunk), _attention._blocks(sp.sk, chunk)
    empty = _attention._prod((*batch, sp.hq)) == 0
    skip = None if empty else _attention._block_skipper(sp)
    dog_all = xp.reshape(xp.astype(d_out, wd), (*batch, hk, g, sp.sq, dv))
    dl_all = None if d_lse is None else xp.reshape(xp.astype(d_lse, wd), (*batch, hk, g, sp.sq))
    qf, kf = _finite(xp, sp.qg), _finite(xp, sp.kg)  # a dropped pair adds 0, not 0 * NaN
    dk_parts: list[Any] = [None] * len(kblocks)
    dv_parts: list[Any] = [None] * len(kblocks)
    dq_parts, d_sink = [], None
    for qsl in qblocks:
        nq = qsl.stop - qsl.start
        states = ["partial" if skip is None else skip(qsl, ksl) for ksl in kblocks]
        # 1. the forward sweep: final statistics, output and D = rowsum(dO * O)
        rows, out, stats = _forward_sweep(sp, qsl, kblocks, states)
        dog = dog_all[..., qsl, :]
        row = _row_term(sp, dog, out, None if dl_all is None else dl_all[..., qsl], nq)
        # 2. the backward sweep: P recomputed from the statistics, block by block
        dq = xp.zeros((*batch, hk, g, nq, d), dtype=wd, device=sp.device)
        for j, (ksl, state) in enumerate(zip(kblocks, states, strict=True)):
            if state == "skip":
                continue
            p, lg = _recompute(sp, rows, stats, qsl, ksl, state != "full")
            ds = _block_ds(sp, p, lg, dog, row, ksl)
            dq = dq + xp.matmul(ds, kf[..., ksl, :])
            _accumulate(dv_parts, j, xp.sum(xp.matmul(xp.matrix_transpose(p), dog), axis=-3))
            dk_b = xp.sum(xp.matmul(xp.matrix_transpose(ds), qf[..., qsl, :]), axis=-3)
            _accumulate(dk_parts, j, dk_b)
        dq_parts.append(dq)
        if sp.sink is not None:
            d_s = xp.sum(_sink_weights(sp, stats, nq) * row, axis=-1)  # (..., Hk, G)
            d_sink = d_s if d_sink is None else d_sink + d_s

    if dq_parts:
        dq_all = dq_parts[0] if len(dq_parts) == 1 else xp.concat(dq_parts, axis=-2)
    else:
        dq_all = xp.zeros((*batch, hk, g, 0, d), dtype=wd, device=sp.device)
    dq_all = xp.reshape(dq_all, (*batch, sp.hq, sp.sq, d)) * sp.scale
    dk_all = _gather(sp, dk_parts, kblocks, d) * sp.scale
    dv_all = _gather(sp, dv_parts, kblocks, dv)
    if sp.sink is not None and d_sink is None:  # no query rows
        d_sink = xp.zeros((*batch, hk, g), dtype=wd, device=sp.device)
    return dq_all, dk_all, dv_all, d_sink


def finish_vjp(sp: _Spec, grads: tuple[Any, Any, Any, Any], sinks: Any) -> tuple[Any, ...]:
    """Back through the rotation, rounded to the input dtypes (as the one-shot VJP ends)."""
    from ._vjp import _reduce_to, apply_rope_vjp

    xp, wd = sp.xp, sp.wd
    dq, dk, dv, d_sink = grads
    if sp.rope is not None:
        dq = apply_rope_vjp(dq, sp.q_pos, sp.rope, seq_len=sp.seq_len, role="query")
        dk = apply_rope_vjp(dk, sp.k_pos, sp.rope, seq_len=sp.seq_len, role="key")
    out = tuple(
        grad if grad.dtype == dtype else xp.astype(grad, dtype)
        for grad, dtype in zip((dq, dk, dv), sp.dtypes, strict=True)
    )
    if d_sink is None or sp.sinks_shape is None:
        return out
    d_sink = _reduce_to(xp, xp.reshape(d_sink, (*sp.batch, sp.hq)), sp.sinks_shape)
    out_dtype = sinks.dtype if _compat.is_real_floating(xp, sinks.dtype) else wd
    if d_sink.dtype != out_dtype:
        d_sink = xp.astype(d_sink, out_dtype)
    return (*out, d_sink)


def attention_vjp_blocked(
    q: Any,
    k: Any,
    v: Any,
    d_out: Any,
    /,
    *,
    chunk_size: int | None = None,
    memory_budget: int | None = None,
    d_lse: Any = None,
    sinks: Any = None,
    **options: Any,
) -> tuple[Any, ...]:
    """:func:`rope_ref.attention_vjp` (same arguments and result), in blocks.

    Parameters
    ----------
    q, k, v, d_out, d_lse, sinks, **options
        Exactly as for :func:`rope_ref.attention_vjp` (``rope``, ``q_positions``,
        ``k_positions``, ``causal``, ``mask``, ``scale``, ``window``, ``softcap``,
        ``segment_ids``, ``seq_len``).
    chunk_size, memory_budget : int, optional
        As for :func:`rope_ref.attention`: blocks of ``chunk_size``, or automatic blocks when
        the one-shot temporaries (``VJP_TEMPS`` x 8 bytes x batch x Hq x Sq x Sk) exceed
        ``memory_budget`` (default ``DEFAULT_MEMORY_BUDGET``); one shot otherwise.

    Returns
    -------
    ``(dq, dk, dv)`` or ``(dq, dk, dv, d_sinks)``, as :func:`rope_ref.attention_vjp`.

    Raises
    ------
    RopeTypeError, RopeValueError
        As :func:`rope_ref.attention_vjp`, and for a ``chunk_size`` or ``memory_budget``
        that is not an integer >= 1.
    """
    from ._vjp import _check_cotangent, attention_vjp

    sp = _attention._prepare(q, k, v, sinks=sinks, **options)
    xp = _compat.array_namespace(q=q, d_out=d_out, d_lse=d_lse)
    _compat.check_same_device(q=q, d_out=d_out, d_lse=d_lse)
    batch, hq, sq, dv = sp.batch, sp.hq, sp.sq, sp.dv
    _check_cotangent(xp, d_out, "d_out", (*batch, hq, sq, dv), "the output (..., Hq, Sq, Dv)")
    if d_lse is not None:
        _check_cotangent(xp, d_lse, "d_lse", (*batch, hq, sq), "lse (..., Hq, Sq)")
    grads = maybe_blocked(sp, d_out, d_lse, sinks, chunk_size, memory_budget)
    if grads is None:
        # the same rules give the same answer there: one shot
        return attention_vjp(
            q, k, v, d_out, d_lse=d_lse, sinks=sinks, memory_budget=memory_budget, **options
        )
    return grads


def maybe_blocked(
    sp: _Spec, d_out: Any, d_lse: Any, sinks: Any, chunk_size: Any, memory_budget: Any
) -> tuple[Any, ...] | None:
    """The gradients in blocks when ``chunk_size`` or ``memory_budget`` call for them (see
    :func:`vjp_chunk_for`), else None (the caller runs the one-shot VJP). The cotangents
    must be validated already. An empty problem with a ``chunk_size`` runs the (empty) block
    loops: zero-filled gradients of the right shapes on every backend."""
    chunk = vjp_chunk_for(sp, chunk_size, memory_budget)
    empty = _attention._prod((*sp.batch, sp.hq, sp.sq, sp.sk)) == 0
    if not chunk and not (empty and chunk_size is not None):
        return None
    return finish_vjp(sp, vjp_blocks(sp, d_out, d_lse, max(chunk, 1)), sinks)
