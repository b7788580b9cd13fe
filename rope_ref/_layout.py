"""Converting between the "interleaved" and "half" channel layouts.

Interleaved pair j is channels (2j, 2j+1); half-split pair j is channels (j, j + r/2). The
permutation P with (P x)_k = x_{sigma(k)}, sigma(k) = 2k for k < r/2 and 2(k - r/2) + 1 otherwise,
gathers even channels first and odd channels second, so

    RoPE_half(P x, m) = P RoPE_interleaved(x, m)

and, P being orthogonal, attention logits are unchanged when the output channels of W_q and
W_k are permuted by P in every head. This is what the Hugging Face conversion of Meta Llama
checkpoints (``convert_llama_weights_to_hf.py``, ``permute``) does.
"""

from __future__ import annotations

from typing import Any

from . import _compat, _validate
from ._errors import RopeTypeError, RopeValueError
from ._rope import LAYOUTS

__all__ = ["convert_layout", "layout_permutation", "permute_weights"]


def _check_layout(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise RopeTypeError(f"{name} must be a string, got {type(value).__name__}")
    if value not in LAYOUTS:
        raise RopeValueError(f"{name} must be one of {LAYOUTS}, got {value!r}")
    return value


def layout_permutation(
    head_dim: int,
    *,
    src: str = "interleaved",
    dst: str = "half",
    rotary_dim: int | None = None,
    rotary_offset: int = 0,
) -> tuple[int, ...]:
    """Channel permutation ``perm`` with ``x_dst = x_src[..., perm]`` for one head.

    Only the ``rotary_dim`` channels from ``rotary_offset`` (as in ``Rope``) move; the
    pass-through channels stay in place. ``src="interleaved", dst="half"`` is the Meta ->
    Hugging Face direction.

    Parameters
    ----------
    head_dim : int
        Channels per head (>= 1).
    src : {"interleaved", "half"}
        The layout the channels are in.
    dst : {"interleaved", "half"}
        The layout to put them in.
    rotary_dim : int, optional
        Channels that rotate (even, at most ``head_dim - rotary_offset``); default the rest
        of the head from ``rotary_offset``.
    rotary_offset : int
        First rotated channel, in ``[0, head_dim)``.

    Returns
    -------
    tuple of int
        ``head_dim`` channel indices; ``src == dst`` gives the identity.

    Raises
    ------
    RopeTypeError
        A non-string ``src`` / ``dst`` or a non-integer size.
    RopeValueError
        ``head_dim`` < 1, ``src`` / ``dst`` not in ``LAYOUTS``, ``rotary_offset`` outside
        ``[0, head_dim)``, or ``rotary_dim`` odd, not positive or larger than
        ``head_dim - rotary_offset``.

    Examples
    --------
    >>> import rope_ref as rr
    >>> rr.layout_permutation(8)  # interleaved -> half: even channels, then odd ones
    (0, 2, 4, 6, 1, 3, 5, 7)
    >>> rr.layout_permutation(8, src="half", dst="interleaved")
    (0, 4, 1, 5, 2, 6, 3, 7)
    """
    head_dim = _validate.check_int("head_dim", head_dim, minimum=1)
    src = _check_layout("src", src)
    dst = _check_layout("dst", dst)
    o = _validate.check_int("rotary_offset", rotary_offset, minimum=0)
    if o >= head_dim:
        raise RopeValueError(
            f"rotary_offset must be an integer in [0, head_dim={head_dim}), got {o}"
        )
    r = head_dim - o if rotary_dim is None else _validate.check_int("rotary_dim", rotary_dim)
    if r <= 0 or r % 2 or r > head_dim - o:
        raise RopeValueError(
            f"rotary_dim must be even, positive and <= head_dim - rotary_offset = "
            f"{head_dim - o}, got {r}"
        )
    h = r // 2
    if src == dst:
        rot = list(range(r))
    elif src == "interleaved":  # dst half: even channels, then odd channels
        rot = [2 * k if k < h else 2 * (k - h) + 1 for k in range(r)]
    else:  # half -> interleaved: channel 2j + c comes from c * h + j
        rot = [(k % 2) * h + k // 2 for k in range(r)]
    return tuple(list(range(o)) + [o + k for k in rot] + list(range(o + r, head_dim)))


def convert_layout(
    x: Any, /, *, src: str, dst: str, rotary_dim: int | None = None, rotary_offset: int = 0
) -> Any:
    """Reorder the last axis of ``x`` (one head of size x.shape[-1]) from ``src`` to ``dst``.

    Parameters
    ----------
    x : array (..., head_dim)
        Any array with at least one axis; the last axis holds one head's channels.
    src : {"interleaved", "half"}
        The layout the channels are in.
    dst : {"interleaved", "half"}
        The layout to put them in.
    rotary_dim : int, optional
        Channels that rotate (even, at most ``head_dim - rotary_offset``); default the rest
        of the head from ``rotary_offset``.
    rotary_offset : int
        First rotated channel, in ``[0, head_dim)``.

    Returns
    -------
    array
        ``x[..., layout_permutation(x.shape[-1], ...)]``: a new array of x's shape, dtype,
        namespace and device.

    Raises
    ------
    RopeTypeError
        ``x`` is not an array, a non-string ``src`` / ``dst`` or a non-integer size.
    RopeValueError
        ``x`` is 0-d, or as in :func:`layout_permutation`.

    Examples
    --------
    >>> import numpy as np, rope_ref as rr
    >>> rr.convert_layout(np.arange(8.0), src="interleaved", dst="half").tolist()
    [0.0, 2.0, 4.0, 6.0, 1.0, 3.0, 5.0, 7.0]
    """
    if not _compat.is_array(x):
        raise RopeTypeError(f"x must be an array, got {type(x).__name__}")
    xp = _compat.array_namespace(x=x)
    if x.ndim < 1:
        raise RopeValueError("x must have at least one axis (the head channels)")
    perm = layout_permutation(
        x.shape[-1], src=src, dst=dst, rotary_dim=rotary_dim, rotary_offset=rotary_offset
    )
    return xp.take(x, xp.asarray(list(perm), device=_compat.device_of(x)), axis=-1)


def permute_weights(
    w: Any,
    /,
    *,
    n_heads: int,
    src: str = "interleaved",
    dst: str = "half",
    rotary_dim: int | None = None,
    axis: int = -1,
    rotary_offset: int = 0,
) -> Any:
    """Permute the output channels of a q or k projection, head by head.

    ``w`` holds ``n_heads`` heads of ``head_dim`` channels along ``axis``: -1 for rope_ref's
    row-vector convention ``q = x @ w`` with w of shape (d_model, n_heads * head_dim); 0 for
    a PyTorch ``nn.Linear`` weight of shape (n_heads * head_dim, d_model) as in Meta's and
    Hugging Face's checkpoints (under grouped-query attention pass the key/value head count
    for W_k). Biases are 1-D: pass them with axis=0.

    Parameters
    ----------
    w : array
        A q or k projection weight (or bias) holding ``n_heads * head_dim`` output channels
        along ``axis``.
    n_heads : int
        Heads along ``axis`` (>= 1; the key/value head count for W_k under GQA).
    src : {"interleaved", "half"}
        The layout the channels are in.
    dst : {"interleaved", "half"}
        The layout to put them in.
    rotary_dim : int, optional
        Channels that rotate (even, at most ``head_dim - rotary_offset``); default the rest
        of the head (``w.shape[axis] // n_heads``) from ``rotary_offset``.
    rotary_offset : int
        First rotated channel, in ``[0, head_dim)``.
    axis : int
        The axis of the output channels (-1 for ``x @ w``, 0 for an ``nn.Linear`` weight).

    Returns
    -------
    array
        ``w`` with each head's channels along ``axis`` permuted by
        :func:`layout_permutation`; same shape, dtype, namespace and device.

    Raises
    ------
    RopeTypeError
        ``w`` is not an array, a non-integer ``n_heads`` / ``axis`` / size, or a non-string
        ``src`` / ``dst``.
    RopeValueError
        ``n_heads`` < 1, ``axis`` out of range for ``w``, ``w.shape[axis]`` not a multiple of
        ``n_heads``, or as in :func:`layout_permutation`.
    """
    if not _compat.is_array(w):
        raise RopeTypeError(f"w must be an array, got {type(w).__name__}")
    xp = _compat.array_namespace(w=w)
    n_heads = _validate.check_int("n_heads", n_heads, minimum=1)
    axis = _validate.check_int("axis", axis)
    if not -w.ndim <= axis < w.ndim:
        raise RopeValueError(f"axis={axis} is out of range for w of shape {tuple(w.shape)}")
    size = w.shape[axis]
    if size % n_heads:
        raise RopeValueError(
            f"w has {size} channels along axis {axis}, not a multiple of n_heads={n_heads}"
        )
    head_dim = size // n_heads
    perm = layout_permutation(
        head_dim, src=src, dst=dst, rotary_dim=rotary_dim, rotary_offset=rotary_offset
    )
    full = [h * head_dim + p for h in range(n_heads) for p in perm]
    return xp.take(w, xp.asarray(full, device=_compat.device_of(w)), axis=axis)
