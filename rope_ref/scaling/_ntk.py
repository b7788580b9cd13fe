"""NTK-aware base change, static (bloc97, 2023; YaRN paper eqs. 14-16)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING

from ._base import Scaling, power_thetas
from ._common import ctx, dec, positive

if TYPE_CHECKING:
    from .._rope import Rope

__all__ = ["NTK"]


@dataclass(frozen=True)
class NTK(Scaling):
    r"""Static NTK-aware scaling: the base grows to :math:`b' = b\,s^{d/(d-2)}`.

    :math:`\theta'_j = b'^{-2j/d}` with d = rotary_dim: the highest frequency is unchanged
    and the lowest is divided by s, like position interpolation. Not a Hugging Face rope type
    (their "dynamic" type recomputes s from the length: :class:`DynamicNTK`); this is
    lucidrains' ``theta_rescale_factor`` and vLLM's ``dynamic`` with ``alpha``.

    Parameters
    ----------
    factor : float
        The scale s > 0.

    Raises
    ------
    RopeTypeError
        A parameter of the wrong type (not a real number; a bool; not an integer where one
        is expected).
    RopeValueError
        ``factor`` not finite and > 0.
    """

    factor: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "factor", positive("NTK", "factor", self.factor))

    def thetas(self, rope: Rope, seq_len: int | None) -> tuple[Decimal, ...]:
        return power_thetas(ntk_log_base(rope, dec(self.factor)), rope.rotary_dim)


def ntk_log_base(rope: Rope, scale: Decimal) -> Decimal:
    """ln b' = ln b + d/(d-2) ln s (exact; d = rotary_dim; d = 2 leaves the base alone)."""
    c = ctx()
    d = rope.rotary_dim
    ln_b = c.ln(dec(rope.base))
    if d <= 2 or scale == 1:
        return ln_b
    return c.add(ln_b, c.multiply(c.divide(Decimal(d), Decimal(d - 2)), c.ln(scale)))
