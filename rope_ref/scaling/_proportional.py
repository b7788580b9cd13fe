"""Proportional RoPE (Gemma 4; HF ``rope_type="proportional"``)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING

from .._errors import RopeValueError
from ._base import Scaling
from ._common import ctx, dec, positive

if TYPE_CHECKING:
    from .._rope import Rope

__all__ = ["Proportional"]


@dataclass(frozen=True)
class Proportional(Scaling):
    r"""Only the first R = int(rho * D // 2) pairs turn; the others have theta = 0.

    :math:`\theta_j = b^{-2j/D} / s` for j < R and 0 for R <= j < D/2, with D the full head
    (``Rope.rotary_dim`` must equal ``head_dim``) and rho = ``partial_rotary_factor``. The
    exponent's denominator is D, not the rotated width, and in the half layout the rotated
    channels are [0, R) and [D/2, D/2 + R): not a leading slice like ordinary partial rotary.

    Parameters
    ----------
    partial_rotary_factor : float
        rho in (0, 1]: the fraction of pairs that turn.
    factor : float
        The scale s > 0 dividing the turning frequencies.

    Raises
    ------
    RopeTypeError
        A parameter that is not a real number (or is a bool).
    RopeValueError
        A parameter not finite and > 0, ``partial_rotary_factor`` > 1, or (when the ``Rope``
        is built) ``rotary_dim != head_dim``.
    """

    partial_rotary_factor: float = 1.0
    factor: float = 1.0

    def __post_init__(self) -> None:
        rho = positive("Proportional", "partial_rotary_factor", self.partial_rotary_factor)
        if rho > 1:
            raise RopeValueError(f"Proportional.partial_rotary_factor must be <= 1, got {rho}")
        object.__setattr__(self, "partial_rotary_factor", rho)
        object.__setattr__(self, "factor", positive("Proportional", "factor", self.factor))

    def check(self, rope: Rope) -> None:
        if rope.rotary_dim != rope.head_dim:
            raise RopeValueError(
                "Proportional needs rotary_dim == head_dim (it zeroes frequencies instead); "
                f"got rotary_dim={rope.rotary_dim}, head_dim={rope.head_dim}"
            )

    def n_rotating(self, rope: Rope) -> int:
        """Number R of pairs that turn, ``int(partial_rotary_factor * head_dim // 2)``.

        Parameters
        ----------
        rope : Rope
            The specification (its ``head_dim``).

        Returns
        -------
        int
            R, in ``[0, head_dim // 2]``.
        """
        return int(self.partial_rotary_factor * rope.head_dim // 2)

    def thetas(self, rope: Rope, seq_len: int | None) -> tuple[Decimal, ...]:
        c = ctx()
        r = self.n_rotating(rope)
        s = dec(self.factor)
        return tuple(
            c.divide(t, s) if j < r else Decimal(0) for j, t in enumerate(rope.unscaled_thetas())
        )
