"""The interface every frequency schedule implements."""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar

from .._exact import context

if TYPE_CHECKING:
    from .._rope import Rope

__all__ = ["Scaling", "power_thetas"]


def power_thetas(ln_base: Decimal, d: int, count: int | None = None) -> tuple[Decimal, ...]:
    """theta_j = exp(-(2j / d) * ln_base) for j = 0 .. count - 1 (count defaults to d // 2)."""
    c = context()
    n = d // 2 if count is None else count
    dd = Decimal(d)
    return tuple(c.exp(c.multiply(c.divide(Decimal(-2 * j), dd), ln_base)) for j in range(n))


class Scaling:
    """Base class of the objects accepted by ``Rope(scaling=...)``.

    A schedule maps the unscaled frequencies theta_j = base ** (-2j / rotary_dim) to the
    frequencies a model really uses. It works on exact real numbers (``Decimal`` with
    ``rope_ref._exact.DECIMAL_PREC`` digits), so the rotation angles built from it stay
    exact to the last bit at every position (see ``rope_ref._exact``).

    Subclasses are frozen dataclasses (hashable: tables are cached per schedule) and override
    what their method changes:

    * :meth:`thetas` - the frequencies (``seq_len`` matters when :attr:`dynamic` is true);
    * :meth:`attention_scaling` - the factor on cos and sin (YaRN, LongRoPE);
    * :meth:`pair_axes` - multi-axis schemes: which position axis drives each pair;
    * :meth:`magnitude` - per-position, per-pair factors on cos and sin (xPos).

    ``Rope`` checks what a subclass returns: ``thetas`` n_pairs real numbers >= 0 (Decimals;
    ints and floats are taken at their exact value), at most 2**16; ``attention_scaling`` a
    real number > 0; ``magnitude`` None, a real number or an array of the positions' library
    that broadcasts to the tables; ``pair_axes`` None or one axis index per pair. Anything
    else is a ``RopeTypeError`` / ``RopeValueError`` naming the method.
    """

    #: True when the frequencies depend on the sequence length (``seq_len``).
    dynamic: ClassVar[bool] = False
    #: Multi-axis schemes: None (1-D positions), "leading" (positions have a leading axis of
    #: size n_axes, M-RoPE) or "trailing" (a trailing axis of size n_axes, axial RoPE).
    axis_position: ClassVar[str | None] = None

    def check(self, rope: Rope) -> None:
        """Raise if this schedule cannot serve ``rope`` (called by ``Rope`` at construction).

        The base class accepts every ``rope``; subclasses raise ``RopeValueError`` naming
        the parameter that does not fit.

        Parameters
        ----------
        rope : Rope
            The specification being built or evaluated (its head size, base, rotary_dim).
        """

    def thetas(self, rope: Rope, seq_len: int | None) -> tuple[Decimal, ...]:
        """The scaled frequencies theta'_j, j = 0 .. rotary_dim/2 - 1, as exact Decimals.

        Parameters
        ----------
        rope : Rope
            The specification being built or evaluated (its head size, base, rotary_dim).
        seq_len : int or None
            The sequence length, for schedules that depend on it (``dynamic``); ``None``
            when not known (the schedule's default).

        Returns
        -------
        tuple of decimal.Decimal
            ``rope.n_pairs`` frequencies >= 0; the base class returns
            ``rope.unscaled_thetas()``.
        """
        return rope.unscaled_thetas()

    def attention_scaling(self, rope: Rope, seq_len: int | None) -> float:
        """The factor multiplying both cos and sin (Hugging Face's ``attention_scaling``).

        Parameters
        ----------
        rope : Rope
            The specification being built or evaluated (its head size, base, rotary_dim).
        seq_len : int or None
            The sequence length, for schedules that depend on it (``dynamic``); ``None``
            when not known (the schedule's default).

        Returns
        -------
        float
            A real number > 0; 1.0 in the base class.
        """
        return 1.0

    @property
    def n_axes(self) -> int:
        """Number of position axes: 1, or the axes of a multi-axis scheme."""
        return 1

    def pair_axes(self, rope: Rope) -> tuple[int, ...] | None:
        """For multi-axis schemes, the position axis used by each pair; None otherwise.

        Parameters
        ----------
        rope : Rope
            The specification being built or evaluated (its head size, base, rotary_dim).

        Returns
        -------
        tuple of int or None
            One axis index in ``[0, n_axes)`` per pair; ``None`` in the base class.
        """
        return None

    def magnitude(
        self, xp: Any, m: Any, rope: Rope, *, role: str, seq_len: int | None, dtype: Any
    ) -> Any:
        """Per-position, per-pair factor on cos and sin (shape m.shape + (n_pairs,)), or None.

        Parameters
        ----------
        xp : array namespace
            The positions' array library.
        m : array
            The positions, in the working dtype ``dtype``.
        rope : Rope
            The specification being built or evaluated (its head size, base, rotary_dim).
        role : {"query", "key"}
            Which side the tables are for (xPos scales queries up and keys down).
        seq_len : int or None
            The sequence length, for schedules that depend on it (``dynamic``); ``None``
            when not known (the schedule's default).
        dtype : dtype
            The working dtype of the tables.

        Returns
        -------
        array, float or None
            A factor that broadcasts to ``m.shape + (n_pairs,)`` without growing it, or
            ``None`` (the base class) for no magnitude scaling.
        """
        return None

    # ------------------------------------------------ multi-axis schemes given as Rope(axes=)
    def check_schedule(self, rope: Rope) -> None:
        """Multi-axis schemes: raise if ``rope.scaling`` cannot serve this scheme (``Rope``
        calls it at construction when ``axes`` is given).

        The base class runs the schedule's own :meth:`check`.

        Parameters
        ----------
        rope : Rope
            The specification being built or evaluated (its head size, base, rotary_dim).
        """
        if rope.scaling is not None:
            rope.scaling.check(rope)

    def composed_thetas(self, rope: Rope, seq_len: int | None) -> tuple[Decimal, ...]:
        """Multi-axis schemes: the frequencies of ``rope`` (which has ``axes=self``) under its
        schedule ``rope.scaling``. By default the schedule's frequencies over the whole
        rotary_dim (M-RoPE, as transformers builds Qwen-VL's inv_freq).

        Parameters
        ----------
        rope : Rope
            The specification being built or evaluated (its head size, base, rotary_dim).
        seq_len : int or None
            The sequence length, for schedules that depend on it (``dynamic``); ``None``
            when not known (the schedule's default).

        Returns
        -------
        tuple of decimal.Decimal
            ``rope.n_pairs`` frequencies.
        """
        if rope.scaling is None:
            return rope.unscaled_thetas()
        return rope.scaling.thetas(rope, seq_len)
