"""The interface every frequency schedule implements."""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from .._rope import Rope

__all__ = ["Scaling"]


class Scaling:
    """Base class of the objects accepted by ``Rope(scaling=...)``.

    A schedule maps the unscaled frequencies theta_j = base ** (-2j / rotary_dim) to the
    frequencies a model really uses. It works on exact real numbers (``Decimal`` with
    ``rope_ref._exact.DECIMAL_PREC`` digits), so the rotation angles built from it stay
    exact to the last bit at every position (see ``rope_ref._exact``).

    Subclasses are frozen dataclasses (hashable: tables are cached per schedule) and override
    :meth:`thetas` and, where the method has one, :meth:`attention_factor`.
    """

    #: True when the frequencies depend on the sequence length (``seq_len``).
    dynamic: ClassVar[bool] = False

    def thetas(self, rope: Rope, seq_len: int | None) -> tuple[Decimal, ...]:
        """The scaled frequencies theta'_j, j = 0 .. rotary_dim/2 - 1, as exact Decimals."""
        return rope.unscaled_thetas()

    def attention_factor(self, rope: Rope, seq_len: int | None) -> float:
        """The factor multiplying both cos and sin (Hugging Face's ``attention_scaling``)."""
        return 1.0
