"""vLLM's ``RotaryEmbedding.forward`` and its ``cos_sin_cache``."""

from __future__ import annotations

import math
from typing import Any

from ... import _compat, _validate
from ..._deprecation import positional_keywords
from ..._errors import RopeTypeError, RopeValueError
from ..._rope import Rope
from ._common import _check_float_array, _concrete, _rotate

__all__ = ["vllm_cos_sin_cache", "vllm_rotary"]

#: vLLM's in-place custom op (writes query and key, returns None)
VLLM_OP = "vLLM's ops.rotary_embedding"
#: what None means for the vllm conventions
IN_PLACE = f"an in-place kernel such as {VLLM_OP} (query and key are read back)"


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

    Raises
    ------
    RopeTypeError
        ``head_size`` not an integer, ``is_neox_style`` not a bool, positions, query or
        ``cos_sin_cache`` not arrays (key not an array or None), query, key or the cache not
        real floating, or positions not of an integer dtype.
    RopeValueError
        ``head_size`` < 1, a cache that is not 2-D or whose width is odd, < 2 or above
        ``head_size``, query or key not shaped ``positions.shape + (num_heads * head_size,)``
        or ``+ (num_heads, head_size)``, or (where readable) positions outside the cache's
        rows.
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
        y = _rotate(xp, xp.reshape(t, (n, nh, head_size)), cos, sin, r, not is_neox_style, wd)
        return xp.reshape(y, tuple(t.shape))

    return one(query, heads["query"]), None if key is None else one(key, heads["key"])


@positional_keywords("xp")
def vllm_cos_sin_cache(
    rope: Rope,
    max_position: int,
    dtype: Any = None,
    *,
    xp: Any = None,
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
        Namespace (a module such as ``numpy``, ``torch``); NumPy by default. Keyword-only
        (passing it positionally, after ``dtype``, still works but is deprecated).
    device : optional
        Device of the result.

    Returns
    -------
    array (max_position, rotary_dim)

    Raises
    ------
    RopeValueError
        When ``max_position * rotary_dim`` exceeds 2**31 elements (checked before anything
        is allocated), for a multi-axis ``rope``, or a ``device`` the library refuses.
    """
    from .._positions import _check_size, _namespace_for

    if not isinstance(rope, Rope):
        raise RopeTypeError(f"rope must be a rope_ref.Rope, got {type(rope).__name__}")
    from .._cases import axis_scheme

    scheme = axis_scheme(rope)
    if scheme is not None:
        raise RopeValueError(
            f"vllm_cos_sin_cache needs a one-axis Rope; {type(scheme).__name__} takes "
            "several positions per token"
        )
    max_position = _validate.check_int("max_position", max_position, minimum=1)
    _check_size("max_position * rotary_dim", max_position * rope.rotary_dim)
    xp = _namespace_for(xp)
    if dtype is not None and not _compat.is_real_floating(xp, dtype):
        raise RopeTypeError(f"dtype must be a real floating dtype, got {dtype}")
    try:
        positions = xp.arange(max_position, device=device)
    except (RuntimeError, TypeError, ValueError) as exc:  # the library refuses the device
        raise RopeValueError(
            f"device {device!r} is not a device of {getattr(xp, '__name__', xp)}: {exc}"
        ) from None
    cos, sin = rope.cos_sin(positions)
    cache = xp.concat([cos, sin], axis=-1)
    if dtype is not None and cache.dtype != dtype:
        cache = xp.astype(cache, dtype)
    return cache


# ---------------------------------------------------------------------------- check adapter
def vllm_prepare(fn: Any, ci: Any) -> Any:
    """``fn(positions, query, key, head_size=..., cos_sin_cache=..., is_neox_style=...)``
    with flat tokens: positions (num_tokens,), query/key (num_tokens, num_heads * head_size),
    the cache (max_position, rotary_dim) in x's dtype; returns (query, key)."""
    from ._common import (
        Call,
        fresh_copy,
        in_place_result,
        rebased_cos_sin,
        require_1d,
        rows_note,
        swap_12,
        tuple_of,
    )

    who = "vLLM"
    require_1d(ci.rope, who)
    xp, dev = ci.xp, ci.device
    p0, p1, cos, sin = rebased_cos_sin(ci, who)
    cache = xp.concat([cos, sin], axis=-1)

    def flat(a: Any) -> Any:
        if ci.family == "bhsd":
            a = swap_12(xp, a)
        n = math.prod(a.shape[:-2])
        return xp.reshape(a, (n, int(a.shape[-2]) * int(a.shape[-1])))

    q, k = flat(ci.x), flat(ci.k)
    pos = xp.asarray(ci.tok.reshape(-1) - p0, dtype=xp.int64, device=dev)
    d = ci.rope.head_dim
    neox = ci.rope.layout == "half"

    def back(a: Any, like: Any) -> Any:
        if not _compat.is_array(a):
            raise TypeError(f"the target returned {type(a).__name__}, not an array")
        shape = tuple(like.shape)
        if ci.family == "bhsd":
            b, h, s, _ = shape
            return swap_12(xp, xp.reshape(a, (b, s, h, d)))
        return xp.reshape(a, shape)

    box: dict[str, Any] = {}

    def unpack(out: Any) -> dict[str, Any]:
        out = in_place_result(out, ci, box["qk"], "(query, key)", VLLM_OP)
        qo, ko = tuple_of(out, 2, "the target", "(query, key)", IN_PLACE)
        return {"q": back(qo, ci.x), "k": back(ko, ci.k)}

    def run() -> Any:  # fresh copies per call: an in-place kernel writes into them
        qc, kc = box["qk"] = (fresh_copy(xp, q), fresh_copy(xp, k))
        return fn(pos, qc, kc, head_size=d, cos_sin_cache=cache, is_neox_style=neox)

    return Call(run=run, unpack=unpack, note=rows_note(p0, p1))
