"""Hugging Face transformers' ``apply_rotary_pos_emb`` and ``RotaryEmbedding.forward``."""

from __future__ import annotations

import math
from typing import Any

from ... import _compat, _validate
from ..._errors import RopeTypeError, RopeValueError
from ..._rope import Rope
from ..._rotate import rotate
from .._cases import with_axes
from ._common import (
    Call,
    Unfit,
    _check_float_array,
    _check_tables,
    _concrete,
    _gather_rows,
    from_layout,
    require_1d,
    to_layout,
    tuple_of,
)

__all__ = ["hf_apply_rotary_pos_emb", "hf_cos_sin"]


def _hf_one(xp: Any, t: Any, cos: Any, sin: Any, r: int, wd: Any) -> Any:
    """``t * cos + rotate_half(t) * sin`` on the first r channels, channel by channel: with
    ``rotate_half(t) = [-t_b, t_a]`` that is ``y_a = t_a cos_a - t_b sin_a`` and ``y_b = t_b
    cos_b + t_a sin_b`` over the two halves of the full-width tables (the same bits: negation
    is exact), i.e. rope_ref's rotation kernel with the second half's coefficients for y_b."""
    h = r // 2
    c_a, c_b, s_a, s_b = cos[..., :h], cos[..., h:], sin[..., :h], sin[..., h:]
    return rotate(xp, t, c_a, s_a, rotary_dim=r, layout="half", wd=wd, cos_b=c_b, sin_b=s_b)


def hf_apply_rotary_pos_emb(
    q: Any,
    k: Any,
    cos: Any,
    sin: Any,
    position_ids: Any = None,
    unsqueeze_dim: int = 1,
) -> tuple[Any, Any]:
    """Hugging Face transformers' ``apply_rotary_pos_emb``, computed exactly.

    ``q_embed = q * cos + rotate_half(q) * sin`` (and the same for k) with cos/sin expanded
    at ``unsqueeze_dim``. When cos is narrower than the head (partial rotary, GPT-NeoX, Phi,
    GLM), the first ``rotary_dim = cos.shape[-1]`` channels rotate and the rest pass through.
    The formula is evaluated channel by channel as written, so tables whose halves differ
    behave as in transformers; with duplicated [c, c] tables it is the rotation.

    Parameters
    ----------
    q, k : arrays (batch, heads, seq, head_dim)
        Or (batch, seq, heads, head_dim) with ``unsqueeze_dim=2``; q and k may differ in heads
        and dtype.
    cos, sin : arrays (batch, seq, rotary_dim)
        Full-width tables with duplicated halves, as ``RotaryEmbedding.forward`` returns
        (see :func:`hf_cos_sin`). Any real floating dtype, widened exactly.
    position_ids : array, optional
        Ignored, as in current transformers, except for the older convention where cos/sin
        are 2-D caches (max_seq, rotary_dim): then rows ``cos[position_ids]`` are used.
    unsqueeze_dim : int
        The axis inserted into cos/sin to broadcast over heads.

    Returns
    -------
    (q_embed, k_embed) : arrays of the shapes and dtypes of q and k.

    Raises
    ------
    RopeTypeError
        q, k, cos or sin not a real floating array, ``unsqueeze_dim`` not an integer, or
        ``position_ids`` (with 2-D tables) not integer.
    RopeValueError
        cos and sin of different shapes, 0-d or with an odd last axis (or one below 2), a
        table wider than q or k, ``position_ids`` outside the rows of 2-D tables, an
        ``unsqueeze_dim`` out of range, or expanded tables that do not broadcast to q or k.
    """
    if not _compat.is_array(q):
        raise RopeTypeError(f"q must be an array, got {type(q).__name__}")
    if not _compat.is_array(k):
        raise RopeTypeError(f"k must be an array, got {type(k).__name__}")
    xp = _compat.array_namespace(q=q, k=k, cos=cos, sin=sin, position_ids=position_ids)
    _check_float_array(xp, q, "q")
    _check_float_array(xp, k, "k")
    _check_tables(xp, cos, sin)
    device = _compat.check_same_device(q=q, k=k, cos=cos, sin=sin, position_ids=position_ids)
    unsqueeze_dim = _validate.check_int("unsqueeze_dim", unsqueeze_dim)
    if cos.ndim < 1:
        raise RopeValueError("cos and sin must have a last axis of size rotary_dim")
    r = int(cos.shape[-1])
    if r < 2 or r % 2:
        raise RopeValueError(
            f"cos.shape[-1] (rotary_dim) must be even and >= 2 for rotate_half, got {r}"
        )
    for name, t in (("q", q), ("k", k)):
        if t.ndim < 1 or r > t.shape[-1]:
            raise RopeValueError(
                f"cos.shape[-1] = {r} (rotary_dim) exceeds {name}.shape[-1]; {name} has shape "
                f"{tuple(t.shape)}"
            )
    if position_ids is not None and cos.ndim == 2:
        # transformers < 4.38: cos/sin were (max_seq, dim) caches indexed by position_ids.
        position_ids = _validate.to_positions(position_ids, xp, device, name="position_ids")
        if not _compat.is_integral(xp, position_ids.dtype):
            raise RopeTypeError(
                f"position_ids must have an integer dtype, got {position_ids.dtype}"
            )
        if _concrete(position_ids) and math.prod(position_ids.shape) > 0:
            lo, hi = int(xp.min(position_ids)), int(xp.max(position_ids))
            if lo < 0 or hi >= cos.shape[0]:
                raise RopeValueError(
                    f"position_ids span [{lo}, {hi}] but cos/sin have {cos.shape[0]} rows"
                )
        cos = _gather_rows(xp, cos, position_ids)
        sin = _gather_rows(xp, sin, position_ids)
    if not -(cos.ndim + 1) <= unsqueeze_dim <= cos.ndim:
        raise RopeValueError(
            f"unsqueeze_dim must lie in [{-(cos.ndim + 1)}, {cos.ndim}] for cos of shape "
            f"{tuple(cos.shape)}, got {unsqueeze_dim}"
        )
    wd = _compat.work_dtype(xp, device)
    c = xp.expand_dims(xp.astype(cos, wd), axis=unsqueeze_dim)
    s = xp.expand_dims(xp.astype(sin, wd), axis=unsqueeze_dim)
    for name, t in (("q", q), ("k", k)):
        _validate.broadcast_positions(
            tuple(c.shape[:-1]),
            tuple(t.shape[:-1]),
            name=f"cos (expanded at unsqueeze_dim={unsqueeze_dim})",
            target_name=f"{name}.shape[:-1]",
        )
    return _hf_one(xp, q, c, s, r, wd), _hf_one(xp, k, c, s, r, wd)


def hf_cos_sin(rope: Rope, x: Any, position_ids: Any) -> tuple[Any, Any]:
    """What Hugging Face's ``RotaryEmbedding.forward(x, position_ids)`` returns, exactly.

    Parameters
    ----------
    rope : Rope
        The specification (its layout does not change the table: transformers always builds
        duplicated halves, ``cat((freqs, freqs), -1)``).
    x : array
        Only its dtype, namespace and device are used (as in transformers).
    position_ids : array or Python ints
        Integer or real positions, e.g. (batch, seq); for ``scaling.MRope`` the (3, batch,
        seq) positions of Qwen-VL.

    Returns
    -------
    (cos, sin) : arrays of shape ``token_shape + (rotary_dim,)``, dtype ``x.dtype``
        ``[cos(m theta_j) for j] * 2`` concatenated (the halves duplicated), times the
        attention factor (YaRN, LongRoPE), each entry rounded once from float64. The token
        shape is ``position_ids.shape``, without the axes axis for multi-axis schemes: for
        M-RoPE this is the per-token table ``apply_multimodal_rotary_pos_emb`` assembles from
        the per-axis ones, ready for :func:`hf_apply_rotary_pos_emb`.

    Raises
    ------
    RopeTypeError
        ``rope`` not a ``Rope``, ``x`` not a real floating array, or ``position_ids`` bool,
        complex or not convertible to an array.
    RopeValueError
        ``position_ids`` NaN, infinite or too large, or not shaped for the rope's
        multi-axis scheme (see ``Rope.cos_sin``).
    """
    if not isinstance(rope, Rope):
        raise RopeTypeError(f"rope must be a rope_ref.Rope, got {type(rope).__name__}")
    if not _compat.is_array(x):
        raise RopeTypeError(f"x must be an array, got {type(x).__name__}")
    xp = _compat.array_namespace(x=x, position_ids=position_ids)
    _check_float_array(xp, x, "x")
    device = _compat.device_of(x)
    position_ids = _validate.to_positions(position_ids, xp, device, name="position_ids")
    _compat.check_same_device(x=x, position_ids=position_ids)
    cos, sin = rope.cos_sin(position_ids)
    cos = xp.concat([cos, cos], axis=-1)
    sin = xp.concat([sin, sin], axis=-1)
    if cos.dtype != x.dtype:
        cos, sin = xp.astype(cos, x.dtype), xp.astype(sin, x.dtype)
    return cos, sin


# ---------------------------------------------------------------------------- check adapters
def _hf_layout(ci: Any) -> tuple[Any, Any, Any, int]:
    """q, k and positions in Hugging Face's shapes: bhsd with unsqueeze_dim=1, bshd with
    unsqueeze_dim=2, packed thd as one sequence (batch 1) with unsqueeze_dim=2. Channels
    reordered to the half layout (``rotate_half``; interleaved cases through the permutation
    DeepSeek's ``apply_rotary_pos_emb_interleave`` applies); partial rotary split off first,
    as the attention code of GPT-NeoX, Phi and GLM does."""

    r = ci.rope.rotary_dim
    q, k, tok = ci.x, ci.k, ci.tok
    if ci.family == "thd":
        q, k, tok = q[None, ...], k[None, ...], tok[None, :]
    ud = 1 if ci.family == "bhsd" else 2
    q = to_layout(ci, q, "half")[..., :r]
    k = to_layout(ci, k, "half")[..., :r]
    return q, k, tok, ud


def _hf_unpack(ci: Any, out: Any, who: str) -> dict[str, Any]:
    xp, r = ci.xp, ci.rope.rotary_dim
    res = {}
    for name, got, full in zip(("q", "k"), tuple_of(out, 2, who), (ci.x, ci.k), strict=True):
        if not _compat.is_array(got):
            raise TypeError(f"{who} returned {type(got).__name__} for {name}, not an array")
        if ci.family == "thd":
            got = got[0, ...]
        if r != full.shape[-1]:
            got = xp.concat([got, full[..., r:]], axis=-1)  # pass-through, as the caller does
        res[name] = from_layout(ci, got, "half")
    return res


def hf_prepare(fn: Any, ci: Any) -> Any:
    """``fn(q, k, cos, sin[, unsqueeze_dim=2]) -> (q_embed, k_embed)``: transformers'
    ``apply_rotary_pos_emb`` with the exact tables of ``RotaryEmbedding.forward``
    (:func:`hf_cos_sin`, M-RoPE assembled per token); unsqueeze_dim passed only when not 1."""

    if type(ci.rope.scaling).__name__ == "XPos":
        raise Unfit("one cos/sin pair serves q and k here (no xPos cases)")
    q, k, tok, ud = _hf_layout(ci)
    cos, sin = hf_cos_sin(ci.rope, q, ci.xp.asarray(with_axes(tok, ci.rope), device=ci.device))
    kw = {} if ud == 1 else {"unsqueeze_dim": ud}
    return Call(
        run=lambda: fn(q, k, cos, sin, **kw),
        unpack=lambda out: _hf_unpack(ci, out, "the target"),
        note=f"unsqueeze_dim={ud}",
    )


def hf_module_prepare(cls: Any, ci: Any) -> Any:
    """An HF rotary-embedding class: ``emb = cls(config)``; ``cos, sin = emb(x, position_ids)``;
    then the module's own ``apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=...)`` (or this
    twin when the module has none with that signature). The whole pipeline is judged."""

    require_1d(ci.rope, "the HF module convention")
    config = ci.options["hf_config"]
    apply = ci.options.get("hf_apply") or hf_apply_rotary_pos_emb
    q, k, tok, ud = _hf_layout(ci)
    pos = ci.xp.asarray(tok, device=ci.device)

    def run() -> Any:
        emb = cls(config)
        cos, sin = emb(q, pos)
        return apply(q, k, cos, sin, unsqueeze_dim=ud)

    return Call(run=run, unpack=lambda out: _hf_unpack(ci, out, "apply_rotary_pos_emb"))
