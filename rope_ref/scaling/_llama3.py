"""Llama 3.1 frequency scaling (Meta ``apply_scaling``; HF ``rope_type="llama3"``)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING

from .._errors import RopeValueError
from ._base import Scaling
from ._common import TWO_PI, ctx, dec, positive, positive_int

if TYPE_CHECKING:
    from .._rope import Rope

__all__ = ["Llama3"]


@dataclass(frozen=True)
class Llama3(Scaling):
    r"""Llama 3.1 band rule (also Llama 3.2 and Llama 4, whose high == low factor).

    With wavelength :math:`\lambda_j = 2\pi/\theta_j`, L = ``original_max_position_embeddings``,
    lf = ``low_freq_factor``, hf = ``high_freq_factor``:
    :math:`\theta'_j = \theta_j` if :math:`\lambda_j < L/hf` (high frequency),
    :math:`\theta_j / s` if :math:`\lambda_j > L/lf` (low frequency), else
    :math:`(1-\gamma_j)\theta_j/s + \gamma_j\theta_j` with
    :math:`\gamma_j = (L/\lambda_j - lf)/(hf - lf)`. No attention factor.

    When hf == lf (Llama 4 Scout: 1 and 1) the middle band is empty: a pair whose wavelength
    equals L/lf exactly (which the exact arithmetic can decide) keeps its frequency, where
    Hugging Face's vectorised form divides 0 by 0 and masks the NaN.

    Parameters
    ----------
    factor : float
        The scale s > 0 applied to low frequencies (8.0 for Llama 3.1).
    low_freq_factor : float
        lf > 0: wavelengths above L/lf are divided by s (1.0 for Llama 3.1).
    high_freq_factor : float
        hf >= lf: wavelengths below L/hf are kept (4.0 for Llama 3.1).
    original_max_position_embeddings : int
        The trained context L (a positive integer; 8192 for Llama 3.1).

    Raises
    ------
    RopeTypeError
        A parameter of the wrong type (not a real number; a bool; not an integer where one
        is expected).
    RopeValueError
        A factor not finite and > 0, ``original_max_position_embeddings`` < 1, or
        ``high_freq_factor < low_freq_factor``.
    """

    factor: float
    low_freq_factor: float
    high_freq_factor: float
    original_max_position_embeddings: int

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "factor", positive("Llama3", "factor", self.factor))
        set_(self, "low_freq_factor", positive("Llama3", "low_freq_factor", self.low_freq_factor))
        set_(
            self, "high_freq_factor", positive("Llama3", "high_freq_factor", self.high_freq_factor)
        )
        set_(
            self,
            "original_max_position_embeddings",
            positive_int(
                "Llama3", "original_max_position_embeddings", self.original_max_position_embeddings
            ),
        )
        if self.high_freq_factor < self.low_freq_factor:
            raise RopeValueError(
                f"Llama3.high_freq_factor ({self.high_freq_factor}) must be >= "
                f"low_freq_factor ({self.low_freq_factor})"
            )

    def thetas(self, rope: Rope, seq_len: int | None) -> tuple[Decimal, ...]:
        c = ctx()
        s = dec(self.factor)
        lf, hf = dec(self.low_freq_factor), dec(self.high_freq_factor)
        big_l = Decimal(self.original_max_position_embeddings)
        hi_wave = c.divide(big_l, hf)
        lo_wave = c.divide(big_l, lf)
        out = []
        for t in rope.unscaled_thetas():
            wave = c.divide(TWO_PI, t)
            if wave <= hi_wave if hf == lf else wave < hi_wave:
                out.append(t)
            elif wave > lo_wave:
                out.append(c.divide(t, s))
            else:
                gamma = c.divide(c.subtract(c.divide(big_l, wave), lf), c.subtract(hf, lf))
                out.append(
                    c.add(c.multiply(c.subtract(1, gamma), c.divide(t, s)), c.multiply(gamma, t))
                )
        return tuple(out)
