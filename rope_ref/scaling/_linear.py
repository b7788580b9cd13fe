"""Position interpolation ("linear" scaling), Chen et al. 2023, arXiv 2306.15595."""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING

from .._errors import RopeTypeError, RopeValueError
from .._exact import context
from ._base import Scaling

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
        if isinstance(self.factor, bool) or not isinstance(self.factor, (int, float)):
            raise RopeTypeError(f"Linear.factor must be a real number, got {self.factor!r}")
        if not math.isfinite(self.factor) or self.factor <= 0:
            raise RopeValueError(f"Linear.factor must be finite and > 0, got {self.factor!r}")
        object.__setattr__(self, "factor", float(self.factor))

    def thetas(self, rope: Rope, seq_len: int | None) -> tuple[Decimal, ...]:
        ctx = context()
        s = Decimal(self.factor)
        return tuple(ctx.divide(t, s) for t in rope.unscaled_thetas())
