"""xPos: RoPE with an exponential decay in the score (Sun et al. 2022, arXiv 2212.10554)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import numpy as np

from .._errors import RopeValueError
from .._exact import (
    EXP_LIMIT,
    _const,
    _head_tail,
    _split_hi_lo,
    _two_prod_split,
    exp_dd,
    format_for_bits,
)
from .._validate import as_int
from ._base import Scaling
from ._common import ctx, dec, flag, positive

if TYPE_CHECKING:
    from .._rope import Rope

__all__ = ["XPos"]


@dataclass(frozen=True)
class XPos(Scaling):
    r"""xPos as in torchscale and lucidrains ``rotary-embedding-torch`` (``use_xpos``).

    Pair j gets the factor :math:`\zeta_j^{\pm (m - c)/B}` on both cos and sin, with
    :math:`\zeta_j = (2j/d + \gamma)/(1 + \gamma)` (d = rotary_dim, gamma = 0.4,
    B = ``scale_base`` = 512): the power is positive for queries (``role="query"``) and
    negative for keys (``role="key"``), so the pair's share of q_m . k_n decays like
    :math:`\zeta_j^{(m - n)/B}`. The offset c only keeps the powers in range (the score
    depends on m - n alone): 0 by default; ``center=True`` uses c = seq_len // 2 as lucidrains
    does (seq_len from the argument, else max(position) + 1). The power is formed with an
    error-free product, so each factor is within a few ulps of exact.

    Parameters
    ----------
    scale_base : float
        B > 0, the decay length (512 in torchscale and lucidrains).
    gamma : float
        gamma > 0 in zeta_j (0.4).
    center : bool
        Measure positions from c = seq_len // 2 instead of 0 (makes the schedule depend on
        the length).

    Raises
    ------
    RopeTypeError
        ``scale_base`` or ``gamma`` not a real number, or ``center`` not a bool.
    RopeValueError
        ``scale_base`` or ``gamma`` not finite and > 0; when tables are built, a readable
        ``|m - c|`` above :meth:`max_offset`.
    """

    scale_base: float = 512.0
    gamma: float = 0.4
    center: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "scale_base", positive("XPos", "scale_base", self.scale_base))
        object.__setattr__(self, "gamma", positive("XPos", "gamma", self.gamma))
        object.__setattr__(self, "center", flag("XPos", "center", self.center))

    @property
    def dynamic(self) -> bool:  # type: ignore[override]
        return self.center

    def zeta(self, rope: Rope) -> tuple[Decimal, ...]:
        """The per-pair decay bases zeta_j = (2j/d + gamma) / (1 + gamma), d = rotary_dim.

        Parameters
        ----------
        rope : Rope
            The specification (its ``rotary_dim``).

        Returns
        -------
        tuple of decimal.Decimal
            ``rope.n_pairs`` values in ``(0, 1)`` (for the default gamma), exact to 90
            digits.
        """
        c = ctx()
        d = Decimal(rope.rotary_dim)
        g = dec(self.gamma)
        return tuple(
            c.divide(c.add(c.divide(Decimal(2 * j), d), g), c.add(1, g))
            for j in range(rope.n_pairs)
        )

    def rates(self, rope: Rope) -> tuple[Decimal, ...]:
        """ln(zeta_j) / scale_base (exact Decimals): the query factor is exp(rate_j * (m - c)).

        Parameters
        ----------
        rope : Rope
            The specification (its ``rotary_dim``).

        Returns
        -------
        tuple of decimal.Decimal
            ``rope.n_pairs`` rates (negative where zeta_j < 1).
        """
        return _rates(self, rope)

    def max_offset(self, rope: Rope, p: int = 53) -> int:
        """The largest ``|m - c|`` accepted: exp(+-rate_j (m - c)) stays within e**+-EXP_LIMIT[p]
        (float64: 269,739 for the defaults), so the tables are finite normal numbers.

        Parameters
        ----------
        rope : Rope
            The specification (its ``rotary_dim``; 269,739 is for ``rotary_dim=128``).
        p : {53, 24}
            Significand bits of the working format: 53 (float64) or 24 (float32).

        Returns
        -------
        int
            The bound on ``|m - c|``; ``2**53`` when every rate is 0.

        Raises
        ------
        RopeTypeError
            ``p`` is not an integer.
        RopeValueError
            ``p`` is not one of the significand widths of ``EXP_LIMIT`` (53, 24).
        """
        p = as_int(p, "p")
        if p not in EXP_LIMIT:
            raise RopeValueError(
                f"p must be one of {tuple(EXP_LIMIT)} (significand bits of float64, float32), "
                f"got {p}"
            )
        top = max(abs(r) for r in self.rates(rope))
        if top == 0:
            return 2**53
        return int(ctx().divide(Decimal(EXP_LIMIT[p]), top))

    def magnitude(
        self, xp: Any, m: Any, rope: Rope, *, role: str, seq_len: int | None, dtype: Any
    ) -> Any:
        from .._compat import is_concrete, significand_bits

        bits = significand_bits(xp, dtype)
        fmt_bits = 53 if bits == 53 else 24
        veltkamp = format_for_bits(fmt_bits).veltkamp
        hi, lo, a, b = [], [], [], []
        for r in self.rates(rope):
            # the rate as head + tail in the working format, the head split for a two-product
            h, l_ = _split_hi_lo(r)
            if fmt_bits != 53:
                h = float(np.float32(h))
                l_ = float(np.float32(float(ctx().subtract(r, Decimal(h)))))
            hh, ht = _head_tail(h, fmt_bits - veltkamp)
            hi.append(h)
            lo.append(l_)
            a.append(hh)
            b.append(ht)
        device = None if not hasattr(m, "device") else _device(m)
        cst = [_const(xp, np.asarray(v), dtype, device) for v in (hi, lo, a, b)]
        shift = float(seq_len // 2) if (self.center and seq_len is not None) else 0.0
        mm = (m - shift)[..., None]
        if is_concrete(m) and all(int(n) > 0 for n in m.shape):
            top = float(xp.max(xp.abs(m - shift)))
            if top > self.max_offset(rope, fmt_bits):
                what = "position" if shift == 0.0 else f"position - {shift:g} (the centre)"
                raise RopeValueError(
                    f"XPos: |{what}| must be <= {self.max_offset(rope, fmt_bits)} for "
                    f"scale_base={self.scale_base!r}, gamma={self.gamma!r}, rotary_dim="
                    f"{rope.rotary_dim}: beyond it the key factor zeta_0 ** (-m / scale_base) "
                    "heads for overflow and the query factor for underflow (the limit keeps both, "
                    "times any cos/sin value, normal numbers of the working dtype); got "
                    f"max |{what}| = {top:g}. Use center=True or smaller offsets (scores depend "
                    "on m - n only)"
                )
        # Unchecked (traced, lazy) positions beyond the limit, or NaN: NaN in the whole row.
        inside = xp.abs(mm) <= float(self.max_offset(rope, fmt_bits))
        mm = xp.where(inside, mm, xp.zeros_like(mm))
        p, e = _two_prod_split(mm, cst[0], cst[2], cst[3], veltkamp)
        e = e + mm * cst[1]
        if role == "key":
            p, e = -p, -e
        out = exp_dd(xp, p, e, fmt_bits)
        return xp.where(inside, out, xp.asarray(float("nan"), dtype=out.dtype))


@functools.lru_cache(maxsize=64)
def _rates(xpos: XPos, rope: Rope) -> tuple[Decimal, ...]:
    c = ctx()
    return tuple(c.divide(c.ln(z), dec(xpos.scale_base)) for z in xpos.zeta(rope))


def _device(x: Any) -> Any:
    from .._compat import device_of

    return device_of(x)
