"""Dynamic NTK: the NTK base recomputed from the current length (HF ``rope_type="dynamic"``)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING

from .._errors import RopeValueError
from ._base import Scaling, power_thetas
from ._common import ctx, dec, positive, positive_int
from ._ntk import ntk_log_base

if TYPE_CHECKING:
    from .._rope import Rope

__all__ = ["DynamicNTK"]

VARIANTS = ("hf", "vllm")


@dataclass(frozen=True)
class DynamicNTK(Scaling):
    r"""Dynamic NTK scaling.

    ``variant="hf"`` (default; Hugging Face ``_compute_dynamic_ntk_parameters``): with
    :math:`L = \max(\ell, L_{max})` for the current length :math:`\ell` (``seq_len``, else
    max(position) + 1) and :math:`L_{max}` = ``max_position_embeddings``,

    .. math:: b' = b\,\big(\alpha L / L_{max} - (\alpha - 1)\big)^{d/(d-2)},

    so the base never drops below the original and ``factor`` (alpha) is a slope, not the
    target ratio. ``variant="vllm"`` evaluates the same formula once at
    :math:`L = \alpha L_{max}` (vLLM's ``DynamicNTKScalingRotaryEmbedding``), giving the
    static base :math:`b (\alpha^2 - \alpha + 1)^{d/(d-2)}` for every length.

    Parameters
    ----------
    factor : float
        The slope alpha > 0 (Hugging Face's ``factor``).
    max_position_embeddings : int
        The trained context :math:`L_{max}` (a positive integer; an integral float such as
        8192.0 is accepted).
    variant : {"hf", "vllm"}
        Recompute the base from each length (``"hf"``, dynamic) or once at
        :math:`\alpha L_{max}` (``"vllm"``, static).

    Raises
    ------
    RopeTypeError
        A parameter of the wrong type (not a real number; a bool; not an integer where one
        is expected).
    RopeValueError
        ``factor`` not finite and > 0, ``max_position_embeddings`` < 1, or
        ``variant`` not "hf" or "vllm".
    """

    factor: float
    max_position_embeddings: int
    variant: str = "hf"

    def __post_init__(self) -> None:
        object.__setattr__(self, "factor", positive("DynamicNTK", "factor", self.factor))
        object.__setattr__(
            self,
            "max_position_embeddings",
            positive_int("DynamicNTK", "max_position_embeddings", self.max_position_embeddings),
        )
        if self.variant not in VARIANTS:
            raise RopeValueError(
                f"DynamicNTK.variant must be one of {VARIANTS}, got {self.variant!r}"
            )

    @property
    def dynamic(self) -> bool:  # type: ignore[override]
        return self.variant == "hf"

    def effective_scale(self, seq_len: int | None) -> Decimal:
        """The NTK scale alpha * L / L_max - (alpha - 1) for this length (exact).

        Parameters
        ----------
        seq_len : int or None
            The current length l; ``L = max(l, L_max)`` (``L_max`` when None). Ignored by
            ``variant="vllm"``, which uses ``L = alpha * L_max``.

        Returns
        -------
        decimal.Decimal
            The scale s of the NTK base change ``b' = b * s ** (d / (d - 2))``; >= 1 for
            ``variant="hf"``.
        """
        c = ctx()
        lmax = Decimal(self.max_position_embeddings)
        if self.variant == "vllm":
            length = c.multiply(dec(self.factor), lmax)
        else:
            length = lmax if seq_len is None else max(Decimal(seq_len), lmax)
        alpha = dec(self.factor)
        return c.subtract(c.multiply(alpha, c.divide(length, lmax)), c.subtract(alpha, 1))

    def thetas(self, rope: Rope, seq_len: int | None) -> tuple[Decimal, ...]:
        return power_thetas(ntk_log_base(rope, self.effective_scale(seq_len)), rope.rotary_dim)
