"""The long-term decay bound of RoFormer section 3.4.3 (eqs. 35-37, Figure 2)."""

from __future__ import annotations

from . import _compat, _positions, _validate
from ._rope import Rope
from ._typing import Array

__all__ = ["relative_upper_bound"]


def relative_upper_bound(
    distances: Array, /, *, head_dim: int = 128, base: float = 10_000.0
) -> Array:
    r"""The paper's relative upper bound of the RoPE score at relative distance r:

    .. math:: B(r) = \frac{1}{d/2} \sum_{j=1}^{d/2} |S_j(r)|, \qquad
              S_j(r) = \sum_{l=0}^{j-1} e^{\mathrm{i} r \theta_l},

    the content-independent factor of eq. (37) that Figure 2 plots for d = 128, b = 10 000
    and r from 0 to 256. B(0) = (d/2 + 1) / 2 and B is even in r. It bounds ``abs(q^T R k)`` for
    given q, k up to a content factor; it is the paper's motivation, not a guarantee that
    trained models' scores decay.

    Parameters
    ----------
    distances : array, number or list
        Relative distances r: an array (any namespace) or a number / list (NumPy); integer
        or real, ``abs(r) < 2**53``.
    head_dim : int
        The head size d: even, >= 2.
    base : float
        The base b of theta_j = b ** (-2j / d).

    Returns
    -------
    array
        B(r) with the shape of ``distances``, in float64 where available, computed from the
        exact angles of ``Rope.cos_sin``.

    Raises
    ------
    RopeTypeError
        ``head_dim`` not an integer, ``base`` not real, or distances bool or complex.
    RopeValueError
        ``head_dim`` < 2 or odd, ``base`` not finite and > 0, or distances NaN, infinite or
        ``abs(r) >= 2**53``.

    Examples
    --------
    >>> import rope_ref as rr
    >>> float(rr.relative_upper_bound(0, head_dim=8))  # B(0) = (d/2 + 1) / 2
    2.5
    """
    rope = Rope(_validate.check_int("head_dim", head_dim, minimum=2), base=base)
    xp = _compat.array_namespace(distances=distances)
    distances = _positions.to_positions(distances, xp, None, name="distances")
    cos, sin = rope.cos_sin(distances)
    xp = _compat.array_namespace(distances=distances)
    c = xp.cumulative_sum(cos, axis=-1)  # Re S_j, j = 1 .. d/2
    s = xp.cumulative_sum(sin, axis=-1)
    return xp.mean(xp.sqrt(c * c + s * s), axis=-1)
