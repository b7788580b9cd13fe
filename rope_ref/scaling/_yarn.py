"""YaRN: NTK-by-parts interpolation and an attention temperature (arXiv 2309.00071)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import TYPE_CHECKING

from .._errors import RopeValueError
from ._base import Scaling
from ._common import TWO_PI, ctx, dec, flag, g_mscale, positive, positive_int

if TYPE_CHECKING:
    from .._rope import Rope

__all__ = ["YaRN"]

RAMPS = ("index", "ratio")


@dataclass(frozen=True)
class YaRN(Scaling):
    r"""YaRN as Hugging Face ``_compute_yarn_parameters`` and the official code compute it.

    With s = ``factor``, :math:`L_0` = ``original_max_position_embeddings``, d = rotary_dim
    and b the base, the pair index where pair j completes r turns inside :math:`L_0` is
    :math:`c(r) = d \ln(L_0 / 2\pi r) / (2 \ln b)`. ``ramp="index"`` (default, HF and the
    official code): lo = c(beta_fast), hi = c(beta_slow), floored/ceiled when ``truncate``
    (HF default True), clamped to [0, d - 1]; hi += 0.001 if lo == hi;
    :math:`\rho_j = \mathrm{clip}((j - lo)/(hi - lo), 0, 1)` and
    :math:`\theta'_j = \theta_j (1 - \rho_j) + (\theta_j / s) \rho_j`.
    ``ramp="ratio"`` is the paper's eq. 17-20: the ramp is linear in
    :math:`r_j = L_0 \theta_j / 2\pi` between beta_slow (alpha) and beta_fast (beta); it
    differs from the code inside the ramp (up to 3x in theta for d=128, s=16).

    Attention factor (multiplies cos and sin, HF ``attention_scaling``): ``attention_factor``
    if given; else g(s, mscale) / g(s, mscale_all_dim) when both are given and non-zero
    (DeepSeek-V3); else g(s, 1) = 0.1 ln s + 1, with g = 1 for s <= 1. DeepSeek's extra
    softmax scale is :meth:`softmax_scale_multiplier`.

    Parameters
    ----------
    factor : float
        The context extension ratio s > 0.
    original_max_position_embeddings : int
        The trained context :math:`L_0` (a positive integer).
    beta_fast : float
        Turns inside :math:`L_0` above which pairs keep their frequency (> 0, >=
        ``beta_slow``; 32).
    beta_slow : float
        Turns inside :math:`L_0` below which pairs are fully interpolated (> 0; 1).
    mscale : float, optional
        DeepSeek's ``mscale`` (> 0), used with ``mscale_all_dim`` for the attention factor.
    mscale_all_dim : float, optional
        DeepSeek's ``mscale_all_dim`` (> 0); also sets :meth:`softmax_scale_multiplier`.
    attention_factor : float, optional
        The attention factor (> 0), overriding the computed one.
    truncate : bool
        Floor / ceil the index ramp's ends (Hugging Face's default True).
    ramp : {"index", "ratio"}
        The code's ramp over pair indices, or the paper's ramp over turn ratios.

    Raises
    ------
    RopeTypeError
        A parameter of the wrong type (not a real number, not an integer, ``truncate`` not a
        bool).
    RopeValueError
        A parameter not finite and > 0, ``original_max_position_embeddings`` < 1, ``ramp``
        not "index" or "ratio", or ``beta_fast < beta_slow``.

    Examples
    --------
    >>> import rope_ref as rr
    >>> yarn = rr.scaling.YaRN(4.0, 4096)
    >>> yarn.correction_range(rr.Rope(64))  # the pair indices where the ramp starts and ends
    (Decimal('10'), Decimal('23'))
    """

    factor: float
    original_max_position_embeddings: int
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    mscale: float | None = None
    mscale_all_dim: float | None = None
    attention_factor: float | None = None
    truncate: bool = True
    ramp: str = "index"

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "factor", positive("YaRN", "factor", self.factor))
        set_(
            self,
            "original_max_position_embeddings",
            positive_int(
                "YaRN", "original_max_position_embeddings", self.original_max_position_embeddings
            ),
        )
        set_(self, "beta_fast", positive("YaRN", "beta_fast", self.beta_fast))
        set_(self, "beta_slow", positive("YaRN", "beta_slow", self.beta_slow))
        for name in ("mscale", "mscale_all_dim"):
            v = getattr(self, name)
            if v is not None:
                set_(self, name, positive("YaRN", name, v))
        if self.attention_factor is not None:
            set_(
                self,
                "attention_factor",
                positive("YaRN", "attention_factor", self.attention_factor),
            )
        set_(self, "truncate", flag("YaRN", "truncate", self.truncate))
        if self.ramp not in RAMPS:
            raise RopeValueError(f"YaRN.ramp must be one of {RAMPS}, got {self.ramp!r}")
        if self.beta_fast < self.beta_slow:
            raise RopeValueError(
                f"YaRN.beta_fast ({self.beta_fast}) must be >= beta_slow ({self.beta_slow})"
            )

    def correction_range(self, rope: Rope) -> tuple[Decimal, Decimal]:
        """(lo, hi) of the index ramp, exactly as HF computes them (after truncate/clamp).

        Parameters
        ----------
        rope : Rope
            The specification (its ``rotary_dim`` and ``base``).

        Returns
        -------
        lo, hi : tuple of decimal.Decimal
            The ramp's ends in pair-index units: ``lo`` clamped to >= 0, ``hi`` to
            <= ``rotary_dim - 1``, and ``hi`` raised by 0.001 where it equals ``lo``.
        """
        c = ctx()
        d = Decimal(rope.rotary_dim)
        ln_b = c.ln(dec(rope.base))
        l0 = Decimal(self.original_max_position_embeddings)

        def dim(r: float) -> Decimal:
            return c.divide(
                c.multiply(d, c.ln(c.divide(l0, c.multiply(TWO_PI, dec(r))))), c.multiply(2, ln_b)
            )

        lo, hi = dim(self.beta_fast), dim(self.beta_slow)
        if self.truncate:
            lo = lo.to_integral_value(rounding=ROUND_FLOOR)
            hi = hi.to_integral_value(rounding=ROUND_CEILING)
        lo = max(lo, Decimal(0))
        hi = min(hi, d - 1)
        if lo == hi:
            hi = c.add(hi, Decimal("0.001"))
        return lo, hi

    def thetas(self, rope: Rope, seq_len: int | None) -> tuple[Decimal, ...]:
        c = ctx()
        s = dec(self.factor)
        base = rope.unscaled_thetas()
        weights = []  # weight of the interpolated theta / s in the blend
        if self.ramp == "index":
            lo, hi = self.correction_range(rope)
            for j in range(len(base)):
                rho = c.divide(c.subtract(Decimal(j), lo), c.subtract(hi, lo))
                weights.append(min(max(rho, Decimal(0)), Decimal(1)))
        else:
            alpha, beta = dec(self.beta_slow), dec(self.beta_fast)
            l0 = Decimal(self.original_max_position_embeddings)
            for t in base:
                r = c.divide(c.multiply(l0, t), TWO_PI)
                gamma = min(
                    max(
                        c.divide(c.subtract(r, alpha), c.subtract(beta, alpha))
                        if beta != alpha
                        else Decimal(r > alpha),
                        Decimal(0),
                    ),
                    Decimal(1),
                )
                weights.append(c.subtract(1, gamma))
        return tuple(
            c.add(c.multiply(t, c.subtract(1, w)), c.multiply(c.divide(t, s), w))
            for t, w in zip(base, weights, strict=True)
        )

    def attention_factor_exact(self) -> Decimal:
        """The attention factor on cos and sin, exactly (see the class description).

        Returns
        -------
        decimal.Decimal
            ``attention_factor`` if given; else g(s, mscale) / g(s, mscale_all_dim) when both
            are given; else 0.1 ln s + 1 (1 for s <= 1).
        """
        s = dec(self.factor)
        if self.attention_factor is not None:
            return dec(self.attention_factor)
        if self.mscale and self.mscale_all_dim:
            return ctx().divide(
                g_mscale(s, dec(self.mscale)), g_mscale(s, dec(self.mscale_all_dim))
            )
        return g_mscale(s, Decimal(1))

    def attention_scaling(self, rope: Rope, seq_len: int | None) -> float:
        return float(self.attention_factor_exact())

    def softmax_scale_multiplier(self) -> float:
        """DeepSeek-V3's extra softmax scale g(s, mscale_all_dim)**2 (1.0 without it).

        Returns
        -------
        float
            The factor DeepSeek-V3 multiplies its softmax scale (``1 / sqrt(head_dim)``)
            by.
        """
        if not self.mscale_all_dim:
            return 1.0
        g = g_mscale(dec(self.factor), dec(self.mscale_all_dim))
        return float(ctx().multiply(g, g))
