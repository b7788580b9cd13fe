"""Multi-axis RoPE: M-RoPE (Qwen2-VL, Qwen3-VL) and axial N-D RoPE for vision."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING

from .._errors import RopeTypeError, RopeValueError
from .._validate import as_bool, as_int
from ._base import Scaling, power_thetas
from ._common import ctx, dec

if TYPE_CHECKING:
    from .._rope import Rope

__all__ = ["Axial", "MRope"]


@dataclass(frozen=True)
class MRope(Scaling):
    r"""Multimodal RoPE: pair j turns by :math:`p^{a(j)}_m \theta_j` for one of several axes.

    Positions carry a leading axis of size ``len(sections)`` (temporal, height, width for
    Qwen-VL): shape (3, ...) for tokens of shape (...). The frequencies are the ordinary
    :math:`\theta_j = b^{-2j/d}` over the full rotary_dim. ``interleaved=False`` (Qwen2-VL,
    Qwen2.5-VL; HF ``apply_multimodal_rotary_pos_emb``): consecutive sections, pairs
    [0, s_0) use axis 0, the next s_1 axis 1, and so on. ``interleaved=True`` (Qwen3-VL;
    HF ``apply_interleaved_mrope``): axis k >= 1 takes the pairs j with j mod n = k and
    j < n * s_k, axis 0 the rest. This interleaves *frequencies* between axes; it is unrelated
    to the channel layout, which stays ``Rope.layout`` (half for Qwen). Text tokens have equal
    positions on every axis, where M-RoPE is ordinary RoPE.

    Given as ``Rope(..., scaling=S, axes=MRope(...))``, the frequencies are the schedule S's
    over the full rotary_dim (as transformers builds them for Qwen2.5-VL / Qwen3-VL configs
    with a ``rope_type`` and an ``mrope_section``), then split between the axes as above.

    Parameters
    ----------
    sections : sequence of int
        Pairs per axis (integers >= 0, at least one; they must sum to ``rotary_dim // 2``,
        checked when the ``Rope`` is built). Default Qwen2-VL's ``(16, 24, 24)``.
    interleaved : bool
        Qwen3-VL's interleaved assignment of pairs to axes instead of consecutive sections.

    Raises
    ------
    RopeTypeError
        ``sections`` is not a sequence of integers, or ``interleaved`` is not a bool.
    RopeValueError
        ``sections`` is empty or has a negative entry, or (when the ``Rope`` is built) does
        not sum to ``rotary_dim // 2``.
    """

    sections: tuple[int, ...] = (16, 24, 24)
    interleaved: bool = False

    axis_position = "leading"

    def __post_init__(self) -> None:
        secs = self.sections
        if isinstance(secs, (str, bytes)) or not hasattr(secs, "__iter__"):
            raise RopeTypeError(f"MRope.sections must be a sequence of integers, got {secs!r}")
        out = []
        for i, s in enumerate(secs):
            out.append(as_int(s, f"MRope.sections[{i}]", minimum=0))
        if len(out) < 1:
            raise RopeValueError("MRope.sections must not be empty")
        object.__setattr__(self, "sections", tuple(out))
        object.__setattr__(self, "interleaved", as_bool(self.interleaved, "MRope.interleaved"))

    @property
    def n_axes(self) -> int:
        """Number of position axes, ``len(sections)``."""
        return len(self.sections)

    def check(self, rope: Rope) -> None:
        if sum(self.sections) != rope.n_pairs:
            raise RopeValueError(
                f"MRope.sections {self.sections} sum to {sum(self.sections)}; rotary_dim="
                f"{rope.rotary_dim} has rotary_dim // 2 = {rope.n_pairs} pairs"
            )

    def pair_axes(self, rope: Rope) -> tuple[int, ...]:
        n = self.n_axes
        if not self.interleaved:
            return tuple(k for k, s in enumerate(self.sections) for _ in range(s))
        axes = []
        for j in range(rope.n_pairs):
            k = j % n
            axes.append(k if k >= 1 and j < n * self.sections[k] else 0)
        return tuple(axes)


@dataclass(frozen=True)
class Axial(Scaling):
    r"""Axial N-D RoPE for vision: each axis gets its own block of pairs and its own ladder.

    Positions carry a trailing axis of size ``n_axes`` (e.g. (..., 2) for row, column).
    With g = rotary_dim / (2 n_axes) pairs per axis, pair j = k g + t (axis k, t < g) turns by
    :math:`p^{(k)} \theta_t` with :math:`\theta_t = b^{-2t/(rotary\_dim / n\_axes)}`: the 1-D
    ladder of a head of size rotary_dim / n_axes, repeated per axis (Qwen2-VL's vision tower,
    rope-vit "RoPE-Axial", torchtune's vision RoPE; their position conventions, such as
    1-based or class-token rows, are the caller's positions).

    Given as ``Rope(..., scaling=S, axes=Axial(n))``, each axis is the 1-D RoPE of
    ``rotary_dim / n`` channels under the schedule S (e.g. ``Linear(f)`` divides every
    axis' ladder by f).

    Parameters
    ----------
    n_axes : int
        Number of position axes (>= 1; 2 for images); ``rotary_dim // 2`` must be a multiple
        of it (checked when the ``Rope`` is built).

    Raises
    ------
    RopeTypeError
        ``n_axes`` is not an integer.
    RopeValueError
        ``n_axes`` < 1, or (when the ``Rope`` is built) ``rotary_dim // 2`` is not a multiple
        of ``n_axes``.
    """

    n_axes: int = 2

    axis_position = "trailing"

    def __post_init__(self) -> None:
        object.__setattr__(self, "n_axes", as_int(self.n_axes, "Axial.n_axes", minimum=1))

    def check(self, rope: Rope) -> None:
        if rope.n_pairs % self.n_axes:
            raise RopeValueError(
                f"Axial(n_axes={self.n_axes}) needs rotary_dim // 2 = {rope.n_pairs} to be a "
                "multiple of n_axes"
            )

    def _axis_rope(self, rope: Rope) -> Rope:
        """One axis: a 1-D RoPE of rotary_dim / n_axes channels under rope's schedule."""
        from .._rope import Rope

        return Rope(rope.rotary_dim // self.n_axes, base=rope.base, scaling=rope.scaling)

    def check_schedule(self, rope: Rope) -> None:
        self._axis_rope(rope)  # the schedule checks itself against one axis' rope

    def composed_thetas(self, rope: Rope, seq_len: int | None) -> tuple[Decimal, ...]:
        return self._axis_rope(rope).thetas(seq_len=seq_len) * self.n_axes

    def thetas(self, rope: Rope, seq_len: int | None) -> tuple[Decimal, ...]:
        per_axis = rope.rotary_dim // self.n_axes
        ladder = power_thetas(ctx().ln(dec(rope.base)), per_axis, rope.n_pairs // self.n_axes)
        return ladder * self.n_axes

    def pair_axes(self, rope: Rope) -> tuple[int, ...]:
        g = rope.n_pairs // self.n_axes
        return tuple(j // g for j in range(rope.n_pairs))
