"""LongRoPE as shipped by Phi-3 (Ding et al., arXiv 2402.13753; HF ``rope_type="longrope"``)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from .._errors import RopeTypeError, RopeValueError
from ._base import Scaling
from ._common import ctx, dec, positive, positive_int

if TYPE_CHECKING:
    from .._rope import Rope

__all__ = ["LongRoPE"]


def _factors(name: str, values: Any) -> tuple[float, ...]:
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise RopeTypeError(f"LongRoPE.{name} must be a sequence of numbers, got {values!r}")
    out = tuple(positive("LongRoPE", f"{name}[{i}]", v) for i, v in enumerate(values))
    return out


@dataclass(frozen=True)
class LongRoPE(Scaling):
    r"""Per-pair rescale factors, a short list and a long list (Phi-3, Phi-3.5, Phi-4-mini).

    :math:`\theta'_j = \theta_j / \lambda_j` with :math:`\lambda` = ``long_factor`` when the
    sequence length exceeds L = ``original_max_position_embeddings`` and ``short_factor``
    otherwise (Hugging Face switches at run time on max(position) + 1; pass ``seq_len`` to
    choose, e.g. vLLM uses the long list for every position when the served length exceeds
    L). Attention factor (on cos and sin, both lists): ``attention_factor`` if given, else
    :math:`\sqrt{1 + \ln s / \ln L}` for s = ``factor`` > 1 (1 otherwise).

    Parameters
    ----------
    short_factor : sequence of float
        The rescale factors lambda_j (> 0) for lengths up to L, one per pair
        (``rotary_dim // 2`` values, checked when the ``Rope`` is built).
    long_factor : sequence of float
        The rescale factors for lengths above L; as many as ``short_factor``.
    original_max_position_embeddings : int
        The trained context L (a positive integer; >= 2 when ``factor`` > 1 and no
        ``attention_factor`` is given).
    factor : float
        The context extension ratio s > 0; sets the default attention factor.
    attention_factor : float, optional
        The attention factor (> 0); default :math:`\sqrt{1 + \ln s / \ln L}` for s > 1,
        else 1.

    Raises
    ------
    RopeTypeError
        A factor list that is not a sequence of real numbers, or a parameter of the wrong
        type.
    RopeValueError
        A factor not finite and > 0, lists of different lengths,
        ``original_max_position_embeddings`` < 1 (or < 2 when the default attention factor
        needs its logarithm), or, when the ``Rope`` is built, lists whose length is not
        ``rotary_dim // 2``.
    """

    short_factor: tuple[float, ...]
    long_factor: tuple[float, ...]
    original_max_position_embeddings: int
    factor: float = 1.0
    attention_factor: float | None = None

    dynamic = True

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "short_factor", _factors("short_factor", self.short_factor))
        set_(self, "long_factor", _factors("long_factor", self.long_factor))
        if len(self.short_factor) != len(self.long_factor):
            raise RopeValueError(
                f"LongRoPE.short_factor has {len(self.short_factor)} values but long_factor has "
                f"{len(self.long_factor)}"
            )
        set_(
            self,
            "original_max_position_embeddings",
            positive_int(
                "LongRoPE",
                "original_max_position_embeddings",
                self.original_max_position_embeddings,
            ),
        )
        set_(self, "factor", positive("LongRoPE", "factor", self.factor))
        if self.attention_factor is not None:
            set_(
                self,
                "attention_factor",
                positive("LongRoPE", "attention_factor", self.attention_factor),
            )
        elif self.factor > 1 and self.original_max_position_embeddings < 2:
            raise RopeValueError(
                "LongRoPE.original_max_position_embeddings must be >= 2 when factor > 1 and "
                "attention_factor is not given (the default attention factor "
                "sqrt(1 + ln(factor) / ln(original_max_position_embeddings)) divides by its "
                f"logarithm), got {self.original_max_position_embeddings}"
            )

    def check(self, rope: Rope) -> None:
        if len(self.short_factor) != rope.n_pairs:
            raise RopeValueError(
                f"LongRoPE factor lists have {len(self.short_factor)} values; rotary_dim="
                f"{rope.rotary_dim} needs rotary_dim // 2 = {rope.n_pairs}"
            )

    def uses_long(self, seq_len: int | None) -> bool:
        """Whether the long factor list applies at this length.

        Parameters
        ----------
        seq_len : int or None
            The sequence length; ``None`` (unknown) selects the short list.

        Returns
        -------
        bool
            ``seq_len > original_max_position_embeddings``.
        """
        return seq_len is not None and seq_len > self.original_max_position_embeddings

    def thetas(self, rope: Rope, seq_len: int | None) -> tuple[Decimal, ...]:
        c = ctx()
        lam = self.long_factor if self.uses_long(seq_len) else self.short_factor
        return tuple(c.divide(t, dec(f)) for t, f in zip(rope.unscaled_thetas(), lam, strict=True))

    def attention_scaling(self, rope: Rope, seq_len: int | None) -> float:
        if self.attention_factor is not None:
            return self.attention_factor
        s = dec(self.factor)
        if s <= 1:
            return 1.0
        c = ctx()
        l0 = Decimal(self.original_max_position_embeddings)
        return float(c.sqrt(c.add(1, c.divide(c.ln(s), c.ln(l0)))))
