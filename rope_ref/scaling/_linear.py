"""Position interpolation ("linear" scaling), Chen et al. 2023, arXiv 2306.15595."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING

from .._exact import context
from ._base import Scaling
from ._common import positive

if TYPE_CHECKING:
    from .._rope import Rope

__all__ = ["Linear"]


@dataclass(frozen=True)
class Linear(Scaling):
    r"""Position interpolation: :math:`\theta'_j = \theta_j / s`.

    Equivalent to squeezing positions by ``factor`` (angle = position * frequency).
    Hugging Face ``rope_type="linear"``, parameter ``factor``. No attention factor.

    Parameters
    ----------
    factor : float
        The scale s > 0 (e.g. 4.0 for four times the trained context).

    Raises
    ------
    RopeTypeError
        A parameter of the wrong type (not a real number; a bool; not an integer where one
        is expected).
    RopeValueError
        ``factor`` not finite and > 0.

    Examples
    --------
    >>> import rope_ref as rr
    >>> rr.Rope(4, scaling=rr.scaling.Linear(4.0)).inv_freq().tolist()  # theta_j / 4
    [0.25, 0.0025]
    """

    factor: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "factor", positive("Linear", "factor", self.factor))

    def thetas(self, rope: Rope, seq_len: int | None) -> tuple[Decimal, ...]:
        ctx = context()
        s = Decimal(self.factor)
        return tuple(ctx.divide(t, s) for t in rope.unscaled_thetas())
