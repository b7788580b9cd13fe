"""The paper's q/k/v formulation (RoFormer eq. 1) and the additive sinusoidal encoding."""

from __future__ import annotations

from typing import Any

from . import _compat, _positions, _validate
from ._apply import apply_rope
from ._errors import RopeTypeError, RopeValueError
from ._rope import MAX_HEAD_DIM, Rope
from ._typing import Array

__all__ = ["qkv", "sinusoidal_embedding"]


def qkv(
    x: Array, positions: Array, w_q: Array, w_k: Array, w_v: Array, /, *, rope: Rope
) -> tuple[Any, Any, Any]:
    """q_m = f_q(x_m, m), k_n = f_k(x_n, n), v_n = f_v(x_n, n) as in RoFormer eqs. (1), (14).

    Row-vector convention: ``x`` is (..., seq, d_model), weights are (d_model, head_dim)
    (``w_v`` may have its own width) and q = R_m (x @ w_q), k = R_n (x @ w_k), v = x @ w_v:
    values are not rotated. The same function of (x_i, i) makes all three; the letters m
    and n only name the roles in the score q_m . k_n, which depends on n - m alone.

    Products and rotations run in the widest float dtype and are rounded once to the result
    dtype of ``x`` and the weights.

    Parameters
    ----------
    x : array (..., seq, d_model)
        Token representations; a real floating array with at least two axes.
    positions : array or number
        Positions of the tokens, broadcastable to ``x.shape[:-1]`` without growing it (as in
        :func:`apply_rope`).
    w_q : array (d_model, head_dim)
        Query projection.
    w_k : array (d_model, head_dim)
        Key projection.
    w_v : array (d_model, d_v)
        Value projection (any width ``d_v``).
    rope : Rope
        The specification applied to queries and keys.

    Returns
    -------
    q, k, v : tuple of arrays
        Shapes ``x.shape[:-1] + (head_dim,)`` (q, k) and ``x.shape[:-1] + (d_v,)`` (v), in
        the result dtype of ``x`` and the weights.

    Raises
    ------
    RopeTypeError
        ``rope`` is not a ``Rope``, an input is not an array or not real floating, or the
        positions are bool or complex.
    RopeValueError
        ``x`` has fewer than two axes, a weight has the wrong shape, or the positions do not
        broadcast or are out of range (see :func:`apply_rope`).
    """
    if not isinstance(rope, Rope):
        raise RopeTypeError(f"rope must be a rope_ref.Rope, got {type(rope).__name__}")
    named = {"x": x, "w_q": w_q, "w_k": w_k, "w_v": w_v}
    for name, arr in named.items():
        if not _compat.is_array(arr):
            raise RopeTypeError(f"{name} must be an array, got {type(arr).__name__}")
    xp = _compat.array_namespace(**named)
    _compat.check_same_device(**named)
    for name, arr in named.items():
        if not _compat.is_real_floating(xp, arr.dtype):
            raise RopeTypeError(f"{name} must have a real floating dtype, got {arr.dtype}")
    if x.ndim < 2:
        raise RopeValueError(f"x must be (..., seq, d_model), got shape {tuple(x.shape)}")
    d_model = x.shape[-1]
    for name, arr, width in (("w_q", w_q, rope.head_dim), ("w_k", w_k, rope.head_dim)):
        if tuple(arr.shape) != (d_model, width):
            raise RopeValueError(
                f"{name} must have shape (d_model, head_dim) = ({d_model}, {width}), "
                f"got {tuple(arr.shape)}"
            )
    if w_v.ndim != 2 or w_v.shape[0] != d_model:
        raise RopeValueError(
            f"w_v must have shape (d_model={d_model}, d_v), got {tuple(w_v.shape)}"
        )
    out_dtype = xp.result_type(x, w_q, w_k, w_v)
    wd = _compat.work_dtype(xp, _compat.device_of(x))
    xw = xp.astype(x, wd)
    q = apply_rope(xp.matmul(xw, xp.astype(w_q, wd)), positions, rope)
    k = apply_rope(xp.matmul(xw, xp.astype(w_k, wd)), positions, rope)
    v = xp.matmul(xw, xp.astype(w_v, wd))
    q, k, v = (xp.astype(t, out_dtype) if t.dtype != out_dtype else t for t in (q, k, v))
    return q, k, v


def sinusoidal_embedding(
    positions: Array, /, dim: int, *, base: float = 10_000.0, dtype: Any = None
) -> Any:
    """The additive absolute encoding of Vaswani et al. (RoFormer eq. 4).

    p[..., 2t] = sin(i / base ** (2t / dim)) and p[..., 2t + 1] = cos(i / base ** (2t / dim)),
    shape ``positions.shape + (dim,)``, with the same exact angles as the rotary tables:
    RoPE uses this frequency ladder but multiplies by the sinusoids instead of adding them.

    Parameters
    ----------
    positions : array or number
        Integer or real positions i (``abs(i) < 2**53``).
    dim : int
        Width of the encoding: even, in ``[2, 2**16]``.
    base : float
        The base of the frequency ladder (> 0).
    dtype : dtype, optional
        A real floating dtype to round the result to; default the working dtype (float64
        where the namespace has it).

    Returns
    -------
    array
        Shape ``positions.shape + (dim,)``, in the positions' namespace (NumPy for Python
        numbers and lists).

    Raises
    ------
    RopeTypeError
        ``dim`` not an integer, ``base`` not a real number, positions bool or complex, or
        ``dtype`` not a real floating dtype.
    RopeValueError
        ``dim`` odd, < 2 or > 2**16, ``base`` not finite and > 0, or positions NaN, infinite
        or ``abs(i) >= 2**53``.

    Examples
    --------
    >>> import rope_ref as rr
    >>> rr.sinusoidal_embedding([0], 4).tolist()  # sin 0, cos 0 in each pair
    [[0.0, 1.0, 0.0, 1.0]]
    """
    dim = _validate.check_int("dim", dim, minimum=2)
    if dim % 2:
        raise RopeValueError(f"dim must be even, got {dim}")
    if dim > MAX_HEAD_DIM:
        raise RopeValueError(f"dim must be <= {MAX_HEAD_DIM} (2**16), got {dim}")
    rope = Rope(dim, base=base, layout="interleaved")
    xp = _compat.array_namespace(positions=positions)
    positions = _positions.to_positions(positions, xp, None)
    cos, sin = rope.cos_sin(positions, dtype=dtype)
    xp = _compat.array_namespace(positions=positions)
    return xp.reshape(xp.stack([sin, cos], axis=-1), (*sin.shape[:-1], dim))
