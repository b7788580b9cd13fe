"""Signature twins: the calling conventions of popular RoPE implementations, exact numerics.

Each function here takes the arguments of a well-known implementation (flash-attn's
``apply_rotary_emb``, Hugging Face's ``apply_rotary_pos_emb`` and ``RotaryEmbedding.forward``,
vLLM's ``RotaryEmbedding.forward``, MLX's ``mx.fast.rope``) and computes the same mathematical
result the way rope_ref does: every input widened to float64 (the widest float dtype of the
namespace), one multiply-add per output element, and a single rounding to the input dtype. A
test that checks a kernel against one of those libraries can switch to the reference by
changing one import, keeping its shapes and arguments::

    # from flash_attn.layers.rotary import apply_rotary_emb
    from rope_ref.testing import flash_apply_rotary_emb as apply_rotary_emb

Twins that receive caller-built cos/sin tables (flash-attn, Hugging Face, vLLM) use those
tables, gathered at the right positions, so that the only difference from the library is the
arithmetic; feed them rope_ref's exact tables (``Rope.cos_sin``, :func:`hf_cos_sin`,
:func:`vllm_cos_sin_cache`) to get the golden result. Twins that build their own angles (MLX)
use rope_ref's exact tables. Nothing is ever written into an input.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any, Literal

from .. import _compat, _exact, _validate
from .._apply import apply_rope
from .._errors import RopeTypeError, RopeValueError
from .._rope import Rope
from ._positions import _from_offsets, _offsets_array, positions_from_cu_seqlens

__all__ = [
    "flash_apply_rotary_emb",
    "hf_apply_rotary_pos_emb",
    "hf_cos_sin",
    "mlx_rope",
    "vllm_cos_sin_cache",
    "vllm_rotary",
]


# ---------------------------------------------------------------------------- shared pieces
def _check_float_array(xp: Any, a: Any, name: str) -> None:
    if not _compat.is_array(a):
        raise RopeTypeError(f"{name} must be an array, got {type(a).__name__}")
    if not _compat.is_real_floating(xp, a.dtype):
        raise RopeTypeError(f"{name} must have a real floating dtype, got {a.dtype}")


def _check_tables(xp: Any, cos: Any, sin: Any) -> None:
    _check_float_array(xp, cos, "cos")
    _check_float_array(xp, sin, "sin")
    if tuple(cos.shape) != tuple(sin.shape):
        raise RopeValueError(
            f"cos and sin must have the same shape, got {tuple(cos.shape)} and {tuple(sin.shape)}"
        )


def _rotate(xp: Any, xw: Any, cos: Any, sin: Any, r: int, interleaved: bool) -> Any:
    """Rotate channels [0, r) of the float64 array ``xw`` by per-pair tables (n pairs = r/2).

    Half layout pairs (i, i + r/2), interleaved pairs (2i, 2i + 1); the arithmetic is that of
    :func:`rope_ref.apply_rope`, so equal tables give equal bits.
    """
    h = r // 2
    if not interleaved:
        x1, x2 = xw[..., :h], xw[..., h:r]
        return xp.concat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    x1, x2 = xw[..., 0:r:2], xw[..., 1:r:2]
    y1 = x1 * cos - x2 * sin
    y2 = x2 * cos + x1 * sin
    return xp.reshape(xp.stack([y1, y2], axis=-1), (*y1.shape[:-1], r))


def _finish(xp: Any, x: Any, xw: Any, y_rot: Any, r: int) -> Any:
    """Append the pass-through channels (copied, exact) and round once to ``x.dtype``."""
    if r != x.shape[-1]:
        y_rot = xp.concat([y_rot, xw[..., r:]], axis=-1)
    if y_rot.dtype != x.dtype:
        y_rot = xp.astype(y_rot, x.dtype)
    return y_rot


def _gather_rows(xp: Any, table: Any, idx: Any) -> Any:
    """``table[idx]`` along axis 0 for an integer array ``idx`` of any shape."""
    n = math.prod(idx.shape)
    rows = xp.take(table, xp.reshape(idx, (n,)), axis=0)
    return xp.reshape(rows, (*idx.shape, *table.shape[1:]))


def _concrete(*arrays: Any) -> bool:
    return all(not _compat.is_array(a) or _compat.is_concrete(a) for a in arrays)


# ---------------------------------------------------------------------------- flash-attn
def flash_apply_rotary_emb(
    x: Any,
    cos: Any,
    sin: Any,
    interleaved: bool = False,
    inplace: bool = False,
    seqlen_offsets: Any = 0,
    cu_seqlens: Any = None,
    max_seqlen: int | None = None,
) -> Any:
    """flash-attn's ``flash_attn.layers.rotary.apply_rotary_emb``, computed exactly.

    Parameters
    ----------
    x : array (batch, seqlen, nheads, headdim), or (total, nheads, headdim) with cu_seqlens
        Queries or keys, sequence before heads (flash-attn's layout).
    cos, sin : arrays (seqlen_ro, rotary_dim / 2)
        Per-position, per-pair tables (no duplication); row p is used at position p. Any
        real floating dtype, widened exactly (flash-attn requires x's dtype; float64 tables
        such as ``Rope.cos_sin(arange(seqlen_ro))`` are accepted and give the golden result).
    interleaved : bool
        True: pairs (x0, x1), (x2, x3), ... (GPT-J). False: pairs (x_i, x_{i + rotary_dim/2})
        (GPT-NeoX).
    inplace : bool
        Must be False: rope_ref never writes to its inputs (raises otherwise).
    seqlen_offsets : int or integer array (batch,)
        Position of each sequence's first token (KV-cache decoding).
    cu_seqlens : integer array (batch + 1,), optional
        Cumulative sequence lengths of packed sequences; positions restart at each sequence
        start (plus its offset). Must be concrete.
    max_seqlen : int
        Required with ``cu_seqlens`` (as in flash-attn); no sequence may be longer.

    Returns
    -------
    array of ``x.shape`` and ``x.dtype``: channels [0, rotary_dim) rotated, the rest copied.

    Raises
    ------
    RopeValueError
        When a position falls outside the table: flash-attn asserts
        ``seqlen_offsets + seqlen <= seqlen_ro`` for an int offset (and its kernel silently
        leaves such tokens unrotated for tensor offsets); here any position outside
        [0, seqlen_ro) is an error when the values can be read. For lazy or traced inputs no
        values are read and such tokens are left unrotated, as flash-attn's kernel does.
    """
    if not isinstance(inplace, bool):
        raise RopeTypeError(f"inplace must be a bool, got {inplace!r}")
    if inplace:
        raise RopeValueError(
            "inplace=True is not supported: rope_ref never writes to its inputs; call with "
            "inplace=False and use the returned array (flash-attn's in-place result equals it)"
        )
    if not isinstance(interleaved, bool):
        raise RopeTypeError(f"interleaved must be a bool, got {interleaved!r}")
    if not _compat.is_array(x):
        raise RopeTypeError(f"x must be an array, got {type(x).__name__}")
    xp = _compat.array_namespace(
        x=x, cos=cos, sin=sin, seqlen_offsets=seqlen_offsets, cu_seqlens=cu_seqlens
    )
    _check_float_array(xp, x, "x")
    _check_tables(xp, cos, sin)
    device = _compat.check_same_device(
        x=x, cos=cos, sin=sin, seqlen_offsets=seqlen_offsets, cu_seqlens=cu_seqlens
    )
    if cos.ndim != 2:
        raise RopeValueError(
            f"cos and sin must have shape (seqlen_ro, rotary_dim / 2), got {tuple(cos.shape)}"
        )
    seqlen_ro, n_pairs = int(cos.shape[0]), int(cos.shape[1])
    r = 2 * n_pairs
    headdim = int(x.shape[-1]) if x.ndim else 0
    if n_pairs < 1 or r > headdim:
        raise RopeValueError(
            f"rotary_dim = 2 * cos.shape[-1] = {r} must be between 2 and headdim = {headdim} "
            f"(x of shape {tuple(x.shape)})"
        )

    if cu_seqlens is None:
        if x.ndim != 4:
            raise RopeValueError(
                f"x must have shape (batch, seqlen, nheads, headdim) without cu_seqlens, got "
                f"{tuple(x.shape)}"
            )
        batch, seqlen = int(x.shape[0]), int(x.shape[1])
    else:
        if x.ndim != 3:
            raise RopeValueError(
                f"x must have shape (total, nheads, headdim) with cu_seqlens, got {tuple(x.shape)}"
            )
        if max_seqlen is None:
            raise RopeValueError("max_seqlen is required with cu_seqlens (as in flash-attn)")
        seqlen = _validate.check_int("max_seqlen", max_seqlen, minimum=0)
        if not _compat.is_array(cu_seqlens):
            raise RopeTypeError(f"cu_seqlens must be an array, got {type(cu_seqlens).__name__}")
        if cu_seqlens.ndim != 1 or cu_seqlens.shape[0] < 1:
            raise RopeValueError(
                f"cu_seqlens must be 1-D of length batch + 1, got shape {tuple(cu_seqlens.shape)}"
            )
        batch = int(cu_seqlens.shape[0]) - 1
    if seqlen > seqlen_ro:
        raise RopeValueError(
            f"cos/sin have seqlen_ro = {seqlen_ro} rows but the sequences are up to {seqlen} "
            "tokens long (flash-attn requires seqlen_ro >= seqlen)"
        )
    offsets = _offsets_array(xp, seqlen_offsets, batch, device, name="seqlen_offsets")
    if not _compat.is_array(offsets) and (offsets < 0 or offsets + seqlen > seqlen_ro):
        raise RopeValueError(
            f"seqlen_offsets + seqlen = {offsets} + {seqlen} must lie in [0, seqlen_ro = "
            f"{seqlen_ro}] (flash-attn asserts seqlen_offsets + seqlen <= seqlen_ro)"
        )

    if cu_seqlens is None:
        pos = _from_offsets(xp, device, seqlen, offsets)  # (batch or 1, seqlen)
        pos = pos[:, :, None]  # broadcast over heads
    else:
        pos = positions_from_cu_seqlens(cu_seqlens, offsets)  # (total,); checks cu_seqlens
        if int(cu_seqlens[-1]) != int(x.shape[0]):
            raise RopeValueError(
                f"cu_seqlens[-1] = {int(cu_seqlens[-1])} must equal the total number of "
                f"tokens x.shape[0] = {int(x.shape[0])}"
            )
        if batch > 0:
            longest = int(xp.max(cu_seqlens[1:] - cu_seqlens[:-1]))
            if longest > seqlen:
                raise RopeValueError(
                    f"a sequence has {longest} tokens, more than max_seqlen = {seqlen} "
                    "(flash-attn would leave the extra tokens unwritten)"
                )
        pos = pos[:, None]  # broadcast over heads

    inside = None
    if _concrete(offsets, pos) and math.prod(pos.shape) > 0:
        lo, hi = int(xp.min(pos)), int(xp.max(pos))
        if lo < 0 or hi >= seqlen_ro:
            raise RopeValueError(
                f"seqlen_offsets put tokens at positions [{lo}, {hi}] but cos/sin have rows for "
                f"[0, {seqlen_ro}) only (flash-attn requires seqlen_offsets + seqlen <= "
                "seqlen_ro)"
            )
    elif _compat.is_array(offsets):
        # Values unreadable (lazy/traced): keep the gather in bounds and leave out-of-table
        # tokens unrotated, which is what flash-attn's kernel does (masked loads of 1 and 0).
        inside = (pos >= 0) & (pos < seqlen_ro)
        pos = xp.where(inside, pos, xp.zeros_like(pos))

    wd = _compat.work_dtype(xp, device)
    c = _gather_rows(xp, xp.astype(cos, wd), pos)
    s = _gather_rows(xp, xp.astype(sin, wd), pos)
    if inside is not None:
        c = xp.where(inside[..., None], c, xp.ones_like(c))
        s = xp.where(inside[..., None], s, xp.zeros_like(s))
    xw = xp.astype(x, wd)
    return _finish(xp, x, xw, _rotate(xp, xw, c, s, r, interleaved), r)


# ---------------------------------------------------------------------------- Hugging Face
def _hf_one(xp: Any, t: Any, cos: Any, sin: Any, r: int, wd: Any) -> Any:
    """``t * cos + rotate_half(t) * sin`` on the first r channels, channel by channel."""
    tw = xp.astype(t, wd)
    h = r // 2
    rot = tw[..., :r]
    rotated_half = xp.concat([-tw[..., h:r], tw[..., :h]], axis=-1)
    return _finish(xp, t, tw, rot * cos + rotated_half * sin, r)


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


# ---------------------------------------------------------------------------- vLLM
def _vllm_view(t: Any, name: str, pshape: tuple[int, ...], head_size: int) -> int:
    """Validate one of query/key against the positions; return its number of heads."""
    p = len(pshape)
    if t.ndim < p + 1 or tuple(t.shape[:p]) != pshape:
        raise RopeValueError(
            f"{name} must have shape positions.shape + (num_heads * head_size,) or + "
            f"(num_heads, head_size); positions {pshape}, {name} {tuple(t.shape)}"
        )
    rest = tuple(int(s) for s in t.shape[p:])
    if len(rest) == 1 and rest[0] % head_size == 0:
        return rest[0] // head_size
    if len(rest) == 2 and rest[1] == head_size:
        return rest[0]
    raise RopeValueError(
        f"{name} of shape {tuple(t.shape)} does not split into heads of head_size={head_size} "
        f"(expected positions.shape + (num_heads * {head_size},) or + (num_heads, {head_size}))"
    )


def vllm_rotary(
    positions: Any,
    query: Any,
    key: Any,
    *,
    head_size: int,
    cos_sin_cache: Any,
    is_neox_style: bool = True,
) -> tuple[Any, Any]:
    """vLLM's ``RotaryEmbedding.forward(positions, query, key)`` (``forward_native``), exact.

    Parameters
    ----------
    positions : integer array (num_tokens,)
        Position of each token (any shape P; query and key then start with P).
    query : array (num_tokens, num_heads * head_size) or (num_tokens, num_heads, head_size)
    key : array like query (its own number of heads), or None
    head_size : int
        Channels per head.
    cos_sin_cache : array (max_position, rotary_dim)
        Row p is ``[cos(p theta_j) for j] + [sin(p theta_j) for j]`` (halves, not
        duplicated), e.g. from :func:`vllm_cos_sin_cache`. Any real floating dtype, widened
        exactly (vLLM casts it to the query dtype first).
    is_neox_style : bool
        True: pairs (x_i, x_{i + rotary_dim/2}); False: pairs (x0, x1), (x2, x3), ... (GPT-J).

    Returns
    -------
    (query, key) : new arrays of the shapes and dtypes given (key None when None). Channels
    [rotary_dim, head_size) of each head pass through.
    """
    head_size = _validate.check_int("head_size", head_size, minimum=1)
    if not isinstance(is_neox_style, bool):
        raise RopeTypeError(f"is_neox_style must be a bool, got {is_neox_style!r}")
    for name, a in (("positions", positions), ("query", query), ("cos_sin_cache", cos_sin_cache)):
        if not _compat.is_array(a):
            raise RopeTypeError(f"{name} must be an array, got {type(a).__name__}")
    if key is not None and not _compat.is_array(key):
        raise RopeTypeError(f"key must be an array or None, got {type(key).__name__}")
    xp = _compat.array_namespace(
        positions=positions, query=query, key=key, cos_sin_cache=cos_sin_cache
    )
    device = _compat.check_same_device(
        positions=positions, query=query, key=key, cos_sin_cache=cos_sin_cache
    )
    _check_float_array(xp, query, "query")
    if key is not None:
        _check_float_array(xp, key, "key")
    _check_float_array(xp, cos_sin_cache, "cos_sin_cache")
    if not _compat.is_integral(xp, positions.dtype):
        raise RopeTypeError(f"positions must have an integer dtype, got {positions.dtype}")
    if cos_sin_cache.ndim != 2:
        raise RopeValueError(
            f"cos_sin_cache must have shape (max_position, rotary_dim), got "
            f"{tuple(cos_sin_cache.shape)}"
        )
    max_position, r = int(cos_sin_cache.shape[0]), int(cos_sin_cache.shape[1])
    if r < 2 or r % 2 or r > head_size:
        raise RopeValueError(
            f"cos_sin_cache.shape[1] (rotary_dim) must be even, >= 2 and <= head_size="
            f"{head_size}, got {r}"
        )
    pshape = tuple(int(s) for s in positions.shape)
    n = math.prod(pshape)
    heads = {"query": _vllm_view(query, "query", pshape, head_size)}
    if key is not None:
        heads["key"] = _vllm_view(key, "key", pshape, head_size)
    if _concrete(positions) and n > 0:
        lo, hi = int(xp.min(positions)), int(xp.max(positions))
        if lo < 0 or hi >= max_position:
            raise RopeValueError(
                f"positions span [{lo}, {hi}] but cos_sin_cache has rows for "
                f"[0, {max_position}) only"
            )
    wd = _compat.work_dtype(xp, device)
    rows = xp.take(xp.astype(cos_sin_cache, wd), xp.reshape(positions, (n,)), axis=0)
    h = r // 2
    cos = rows[:, None, :h]  # (num_tokens, 1, rotary_dim / 2): broadcast over heads
    sin = rows[:, None, h:]

    def one(t: Any, nh: int) -> Any:
        tw = xp.reshape(xp.astype(t, wd), (n, nh, head_size))
        y = _rotate(xp, tw, cos, sin, r, not is_neox_style)
        if r != head_size:
            y = xp.concat([y, tw[..., r:]], axis=-1)
        y = xp.reshape(y, tuple(t.shape))
        return y if y.dtype == t.dtype else xp.astype(y, t.dtype)

    return one(query, heads["query"]), None if key is None else one(key, heads["key"])


def vllm_cos_sin_cache(
    rope: Rope,
    max_position: int,
    dtype: Any = None,
    xp: Any = None,
    *,
    device: Any = None,
) -> Any:
    """The exact ``cos_sin_cache`` of vLLM's ``RotaryEmbedding`` for ``rope``.

    Row p is ``concat([cos(p theta_j)], [sin(p theta_j)])`` over the ``rotary_dim // 2`` pairs,
    times the attention factor (vLLM's ``mscale`` for YaRN), for p in [0, max_position).
    The layout is the same for both pairings (``is_neox_style`` only changes which channels
    pair up). Positions past the original context use ``seq_len = max_position`` for dynamic
    schedules.

    Parameters
    ----------
    rope : Rope
        A one-axis specification (M-RoPE and axial RoPE have no such cache).
    max_position : int
        Rows of the cache (vLLM's ``max_position_embeddings``, >= 1).
    dtype : optional
        Rounded once to this real floating dtype; float64 (the work dtype) by default.
    xp : optional
        Namespace (a module such as ``numpy``, ``torch``); NumPy by default.
    device : optional
        Device of the result.

    Returns
    -------
    array (max_position, rotary_dim)
    """
    from ._positions import _namespace_for

    if not isinstance(rope, Rope):
        raise RopeTypeError(f"rope must be a rope_ref.Rope, got {type(rope).__name__}")
    if rope.scaling is not None and rope.scaling.axis_position is not None:
        raise RopeValueError(
            f"vllm_cos_sin_cache needs a one-axis Rope; {type(rope.scaling).__name__} takes "
            "several positions per token"
        )
    max_position = _validate.check_int("max_position", max_position, minimum=1)
    xp = _namespace_for(xp)
    if dtype is not None and not _compat.is_real_floating(xp, dtype):
        raise RopeTypeError(f"dtype must be a real floating dtype, got {dtype}")
    positions = xp.arange(max_position, device=device)
    cos, sin = rope.cos_sin(positions)
    cache = xp.concat([cos, sin], axis=-1)
    if dtype is not None and cache.dtype != dtype:
        cache = xp.astype(cache, dtype)
    return cache


# ---------------------------------------------------------------------------- MLX
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
    """
    if not _compat.is_array(x):
        raise RopeTypeError(f"x must be an array, got {type(x).__name__}")
    xp = _compat.array_namespace(x=x, offset=offset, freqs=freqs)
    _check_float_array(xp, x, "x")
    device = _compat.check_same_device(x=x, offset=offset, freqs=freqs)
    if x.ndim < 3:
        raise RopeValueError(
            f"x must have at least 3 axes (B, ..., T, D) as in MLX, got shape {tuple(x.shape)}"
        )
    dims = _validate.check_int("dims", dims, minimum=1)
    d = int(x.shape[-1])
    if dims % 2 or dims > d:
        raise RopeValueError(f"dims must be even and <= x.shape[-1] = {d}, got {dims}")
    if not isinstance(traditional, bool):
        raise RopeTypeError(f"traditional must be a bool, got {traditional!r}")
    scale = _real("scale", scale)
    if (base is None) == (freqs is None):
        raise RopeValueError(
            "exactly one of base and freqs must be given (the other None), as in MLX"
        )
    layout: Literal["half", "interleaved"] = "interleaved" if traditional else "half"

    # positions (offset + t) * scale, shaped to broadcast against x.shape[:-1]
    batch, t_len = int(x.shape[0]), int(x.shape[-2])
    wd = _compat.work_dtype(xp, device)
    t = xp.arange(t_len, dtype=wd, device=device)
    if _compat.is_array(offset):
        if not _compat.is_integral(xp, offset.dtype):
            raise RopeTypeError(f"offset must have an integer dtype, got {offset.dtype}")
        size = math.prod(offset.shape)
        if offset.ndim > 1 or size not in (1, batch):
            raise RopeValueError(
                f"offset must be a scalar or a vector of x.shape[0] = {batch} entries, got "
                f"shape {tuple(offset.shape)}"
            )
        off = xp.astype(offset, wd)
        if size == 1:
            off = xp.reshape(off, (1,))
        else:
            off = xp.reshape(off, (batch,) + (1,) * (x.ndim - 2))
        m = (off + t) * scale
    else:
        off_int = _validate.check_int("offset", offset)
        m = (t + float(off_int)) * scale

    if freqs is None:
        base = _real("base", base)
        rope = Rope(d, rotary_dim=dims, base=base, layout=layout)
        return apply_rope(x, m, rope)

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
    thetas = tuple(ctx.divide(Decimal(1), Decimal(f)) for f in periods)
    _validate.check_positions(xp, m)
    p = _compat.significand_bits(xp, wd)
    table = _exact.angle_table(thetas, p)
    cos, sin = _exact.exact_cos_sin_blocked(
        xp,
        m,
        table,
        dtype=wd,
        device=device,
        integral=False,
        blocks=_compat.prefers_blocks(x),
    )
    xw = xp.astype(x, wd)
    return _finish(xp, x, xw, _rotate(xp, xw, cos, sin, dims, traditional), dims)
