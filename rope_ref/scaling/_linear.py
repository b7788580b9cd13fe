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
    """

    factor: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "factor", positive("Linear", "factor", self.factor))

    def thetas(self, rope: Rope, seq_len: int | None) -> tuple[Decimal, ...]:
        ctx = context()
        s = Decimal(self.factor)
        return tuple(ctx.divide(t, s) for t in rope.unscaled_thetas())
