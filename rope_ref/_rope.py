"""The ``Rope`` specification: head size, base, rotary part, layout, schedule, axis scheme.

A ``Rope`` fixes the frequencies theta_j = base ** (-2j / rotary_dim) (RoFormer eq. 15, indexed
from 0) after its scaling, exactly: they are real numbers carried as ``Decimal`` with 90 digits,
and the tables built from them (``cos_sin``) are within one ulp of exact mathematics.

This module holds the specification only: its fields, their validation, the config and preset
readers, and which positions a token takes (``token_shape``, ``ROLES``). The numbers are built
by :mod:`rope_ref._tables` (frequencies, cos and sin, blocks, cache), to which ``thetas``,
``inv_freq``, ``cos_sin`` and ``attention_factor`` delegate.
"""

from __future__ import annotations

import math
from dataclasses import KW_ONLY, dataclass, field
from decimal import Decimal
from typing import Any, Literal

from . import _exact, _tables, _validate
from ._errors import RopeTypeError, RopeValueError
from .scaling import Scaling

__all__ = ["LAYOUTS", "MAX_HEAD_DIM", "Rope"]

#: The largest head_dim a Rope accepts (real models use at most a few hundred channels).
MAX_HEAD_DIM = 2**16

Layout = Literal["half", "interleaved"]
#: The accepted channel layouts.
LAYOUTS: tuple[str, ...] = ("half", "interleaved")


#: The two sides of attention: xPos scales queries up and keys down (every other schedule
#: treats them alike).
ROLES: tuple[str, ...] = ("query", "key")


def check_role(role: Any) -> str:
    """``role`` if it is one of :data:`ROLES`, else a RopeValueError naming it."""
    if not isinstance(role, str) or role not in ROLES:
        raise RopeValueError(f"role must be one of {ROLES}, got {role!r}")
    return role


@dataclass(frozen=True)
class Rope:
    """Rotary position embedding of one attention head.

    Parameters
    ----------
    head_dim : int
        Channels per head (the last axis of q and k).
    base : float
        The base b of theta_j = b ** (-2j / rotary_dim); 10 000 in the paper.
    rotary_dim : int, optional
        Channels that rotate (even, at most ``head_dim``; defaults to ``head_dim``).
        Channels ``rotary_dim:`` pass through unchanged (partial rotary, GPT-NeoX, GPT-J).
    layout : {"half", "interleaved"}
        ``"interleaved"``: pairs (x0, x1), (x2, x3), ... (the paper, GPT-J, Meta's complex
        form). ``"half"``: pairs (x_i, x_{i + r/2}) (GPT-NeoX, Hugging Face ``rotate_half``).
    scaling : rope_ref.scaling.Scaling, optional
        A frequency schedule (context extension); ``None`` for plain RoPE. The multi-axis
        schemes ``MRope`` / ``Axial`` are also accepted here (the original spelling, kept as
        an alias of ``axes=`` without a schedule).
    rotary_offset : int, optional
        First rotated channel (default 0): channels ``[rotary_offset, rotary_offset +
        rotary_dim)`` rotate, the channels before and after pass through unchanged. DeepSeek's
        MLA rotates the trailing ``qk_rope_head_dim`` channels of a head of
        ``qk_nope_head_dim + qk_rope_head_dim``: ``Rope(192, rotary_dim=64,
        rotary_offset=128)``. With ``rotary_offset`` and no ``rotary_dim``, ``rotary_dim``
        defaults to ``head_dim - rotary_offset`` (the rest of the head).
    axes : rope_ref.scaling.MRope or rope_ref.scaling.Axial, optional
        A multi-axis scheme (which position axis drives each pair), composed with the
        frequency schedule ``scaling``: ``Rope(128, scaling=YaRN(4.0), axes=MRope((16, 24,
        24)))`` is Qwen2.5-VL's M-RoPE on YaRN's frequencies; with ``Axial(n)`` each axis is a
        1-D RoPE of ``rotary_dim / n`` channels under the schedule.
    report : object, optional
        What :meth:`from_hf_config` read from the config (the report :meth:`explain` prints);
        set by ``from_hf_config``, left ``None`` when constructing directly. Not part of the
        value: ignored by ``==``, ``hash`` and ``repr``.

    Raises
    ------
    RopeTypeError
        An argument of the wrong type: a non-integer ``head_dim``, ``rotary_dim`` or
        ``rotary_offset``, a non-real ``base``, a non-string ``layout``, a ``scaling`` that
        is not a ``rope_ref.scaling`` object, or ``axes`` that is not a multi-axis scheme.
    RopeValueError
        ``head_dim`` not in ``[1, MAX_HEAD_DIM]``; ``base`` not finite and > 0, or so small
        that some theta_j exceeds 2**16; ``rotary_offset`` not in ``[0, head_dim)``;
        ``rotary_dim`` odd, not positive or larger than ``head_dim - rotary_offset``; a
        ``layout`` not in ``LAYOUTS``; a multi-axis scheme given both as ``scaling`` and as
        ``axes``, or a magnitude schedule (xPos) combined with ``axes``; or parameters the
        schedule itself rejects (its ``check``).

    Examples
    --------
    >>> import rope_ref as rr
    >>> rope = rr.Rope(8)
    >>> rope
    Rope(head_dim=8, base=10000.0, rotary_dim=8, layout='half', scaling=None)
    >>> rope.n_pairs
    4
    >>> rope.inv_freq().tolist()  # theta_j = 10000 ** (-2j / 8), correctly rounded
    [1.0, 0.1, 0.01, 0.001]
    >>> rr.Rope(192, rotary_dim=64, rotary_offset=128).n_pairs  # DeepSeek MLA's rotary part
    32
    >>> rr.Rope(8, rotary_dim=3)
    Traceback (most recent call last):
        ...
    rope_ref._errors.RopeValueError: rotary_dim must be even, positive and <= head_dim=8, got 3
    """

    head_dim: int
    _: KW_ONLY
    base: float = 10_000.0
    rotary_dim: int = None  # type: ignore[assignment]  # None -> head_dim in __post_init__
    layout: Layout = "half"
    scaling: Scaling | None = None
    rotary_offset: int = 0
    axes: Scaling | None = None
    # what from_hf_config read (for explain()); not part of the value
    report: Any = field(default=None, compare=False, hash=False, repr=False)

    def __post_init__(self) -> None:
        head_dim = _validate.check_int("head_dim", self.head_dim)
        if head_dim <= 0:
            raise RopeValueError(f"head_dim must be a positive integer, got {head_dim}")
        if head_dim > MAX_HEAD_DIM:
            raise RopeValueError(
                f"head_dim must be <= {MAX_HEAD_DIM} (2**16; every frequency is computed "
                f"exactly on the host, one 90-digit exp per pair), got {head_dim}"
            )
        base = _validate.as_real(self.base, "base", positive=True)
        offset = _validate.check_int("rotary_offset", self.rotary_offset)
        if not 0 <= offset < head_dim:
            raise RopeValueError(
                f"rotary_offset must be an integer in [0, head_dim={head_dim}), got {offset}"
            )
        if self.rotary_dim is None:
            rotary_dim = head_dim - offset
            if rotary_dim % 2:
                what = (
                    f"head_dim - rotary_offset = {head_dim} - {offset} = {rotary_dim}"
                    if offset
                    else f"head_dim={head_dim}"
                )
                raise RopeValueError(
                    f"{what} is odd: give an even rotary_dim (the rotation acts on pairs of "
                    "channels; the channels past it pass through)"
                )
        else:
            rotary_dim = _validate.check_int("rotary_dim", self.rotary_dim)
            if rotary_dim <= 0 or rotary_dim % 2 or rotary_dim > head_dim - offset:
                room = (
                    f"head_dim - rotary_offset = {head_dim - offset}"
                    if offset
                    else (f"head_dim={head_dim}")
                )
                raise RopeValueError(
                    f"rotary_dim must be even, positive and <= {room}, got {rotary_dim}"
                )
        if not isinstance(self.layout, str):
            raise RopeTypeError(f"layout must be a string, got {type(self.layout).__name__}")
        if self.layout not in LAYOUTS:
            raise RopeValueError(f"layout must be one of {LAYOUTS}, got {self.layout!r}")
        if self.scaling is not None and not isinstance(self.scaling, Scaling):
            raise RopeTypeError(
                "scaling must be None or a rope_ref.scaling object (e.g. scaling.Linear(4.0)), "
                f"got {type(self.scaling).__name__}"
            )
        if base < 1.0 and rotary_dim > 2:
            # theta_j = base ** (-2j / r) grows with j when base < 1; the largest is j = r/2 - 1
            top = -math.log2(base) * (rotary_dim - 2) / rotary_dim
            if top > math.log2(_exact.MAX_THETA):
                lowest = 2.0 ** (-math.log2(_exact.MAX_THETA) * rotary_dim / (rotary_dim - 2))
                raise RopeValueError(
                    f"base={base!r} gives frequencies theta_j = base ** (-2j / {rotary_dim}) up "
                    f"to 2**{top:.4g}; the exact argument reduction covers theta_j <= 2**16, "
                    f"so base must be >= {lowest:.17g} for rotary_dim={rotary_dim}"
                )
        object.__setattr__(self, "head_dim", head_dim)
        object.__setattr__(self, "base", base)
        object.__setattr__(self, "rotary_dim", rotary_dim)
        object.__setattr__(self, "rotary_offset", offset)
        self._check_axes()
        if self.scaling is not None and self.axes is None:
            self.scaling.check(self)
        elif self.axes is not None:
            self.axes.check(self)
            self.axes.check_schedule(self)

    def _check_axes(self) -> None:
        axes = self.axes
        if axes is None:
            return
        if not isinstance(axes, Scaling) or axes.axis_position is None:
            raise RopeTypeError(
                "axes must be None or a multi-axis scheme (rope_ref.scaling.MRope or "
                f"rope_ref.scaling.Axial), got {type(axes).__name__}"
            )
        sc = self.scaling
        if sc is not None and sc.axis_position is not None:
            raise RopeValueError(
                f"scaling={type(sc).__name__}(...) is a multi-axis scheme and axes="
                f"{type(axes).__name__}(...) is given too: pass the scheme once, as axes=, "
                "and a frequency schedule (or None) as scaling="
            )
        if sc is not None and type(sc).magnitude is not Scaling.magnitude:
            raise RopeValueError(
                f"scaling={type(sc).__name__}(...) scales magnitudes per position and does not "
                f"compose with axes={type(axes).__name__}(...)"
            )

    @property
    def axis_scheme(self) -> Scaling | None:
        """The multi-axis scheme (``axes``, or the older ``scaling=MRope(...)`` spelling), or
        None for 1-D positions."""
        if self.axes is not None:
            return self.axes
        if self.scaling is not None and self.scaling.axis_position is not None:
            return self.scaling
        return None

    @property
    def schedule(self) -> Scaling | None:
        """The frequency schedule: ``scaling`` unless that is a multi-axis scheme (None)."""
        if self.scaling is not None and self.scaling.axis_position is not None:
            return None
        return self.scaling

    def __repr__(self) -> str:
        parts = [
            f"head_dim={self.head_dim!r}",
            f"base={self.base!r}",
            f"rotary_dim={self.rotary_dim!r}",
            f"layout={self.layout!r}",
            f"scaling={self.scaling!r}",
        ]
        if self.rotary_offset:
            parts.append(f"rotary_offset={self.rotary_offset!r}")
        if self.axes is not None:
            parts.append(f"axes={self.axes!r}")
        return f"Rope({', '.join(parts)})"

    # ---------------------------------------------------------------- configs and presets
    @classmethod
    def from_hf_config(
        cls,
        config: Any,
        *,
        layer_type: str | None = None,
        layout: str | None = None,
        dynamic_variant: str = "hf",
    ) -> Rope:
        """A ``Rope`` from a Hugging Face ``config.json`` (a dict, or an object with attributes).

        Reads transformers v4 (``rope_theta``, ``rope_scaling`` with ``type`` or
        ``rope_type``) and v5 (``rope_parameters``, also per layer type: then pass
        ``layer_type``, e.g. ``"sliding_attention"``) configs, multimodal configs with a
        ``text_config``, ``partial_rotary_factor`` / ``rotary_pct`` / ``rotary_dim``,
        ``head_dim`` or ``qk_rope_head_dim`` or ``hidden_size // num_attention_heads``, and
        ``max_position_embeddings`` / ``original_max_position_embeddings``. The layout is
        "half" (``rotate_half``) except for model types whose code rotates interleaved pairs
        (GPT-J, Llama 4, DeepSeek with ``rope_interleave``); ``layout=`` overrides it.
        Unknown rope types and missing or invalid parameters raise an error naming the key;
        keys present but unused are listed by :meth:`explain`.

        Parameters
        ----------
        config : dict or object
            A parsed ``config.json``, a transformers config object, or any object whose
            attributes are the config keys.
        layer_type : str, optional
            Which layer type, for configs with a RoPE per layer type (v5 ``rope_parameters``
            keyed by layer type, Gemma 3's ``rope_local_base_freq``), e.g.
            ``"sliding_attention"``.
        layout : {"half", "interleaved"}, optional
            Overrides the layout inferred from ``model_type``.
        dynamic_variant : {"hf", "vllm"}
            For ``rope_type`` "dynamic": which dynamic-NTK variant (see
            ``rope_ref.scaling.DynamicNTK``).

        Returns
        -------
        Rope
            The specification, with the report of what was read (see :meth:`explain`).

        Raises
        ------
        RopeTypeError
            A value of the wrong type, named as written in the config (e.g.
            ``rope_scaling must be a dict or null``), or a ``layer_type`` that is not a string.
        RopeValueError
            An unknown rope type, a missing or invalid parameter (named as written, e.g.
            ``text_config.rope_scaling.factor``), a ``layer_type`` the config does not have,
            a ``dynamic_variant`` not in ``("hf", "vllm")``, or values the resulting
            ``Rope`` rejects.

        Examples
        --------
        >>> import rope_ref as rr
        >>> config = {
        ...     "model_type": "llama", "hidden_size": 4096, "num_attention_heads": 32,
        ...     "rope_theta": 500000.0, "max_position_embeddings": 131072,
        ...     "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
        ...                      "high_freq_factor": 4.0,
        ...                      "original_max_position_embeddings": 8192},
        ... }
        >>> rope = rr.Rope.from_hf_config(config)
        >>> rope.head_dim, rope.base, rope.layout
        (128, 500000.0, 'half')
        >>> type(rope.scaling).__name__
        'Llama3'
        >>> rope == rr.Rope.preset("llama-3.1-8b")
        True
        >>> rr.Rope.from_hf_config({**config, "rope_scaling": {"rope_type": "llama9"}})
        Traceback (most recent call last):
            ...
        rope_ref._errors.RopeValueError: ...
        """
        from ._hf import from_hf_config

        kwargs, report = from_hf_config(
            config, layer_type=layer_type, layout=layout, dynamic_variant=dynamic_variant
        )
        head_dim = kwargs.pop("head_dim")
        return cls(head_dim, report=report, **kwargs)

    @classmethod
    def preset(cls, name: str, *, layer_type: str | None = None) -> Rope:
        """The RoPE of a real model, from its published config values (``rr.presets()``).

        Parameters
        ----------
        name : str
            A preset name, one of ``rope_ref.presets()`` (case-insensitive), e.g.
            ``"llama-3.1-8b"``.
        layer_type : str, optional
            For models with a RoPE per layer type: which one (checked against the preset's
            layer types); default the preset's own default layer type.

        Returns
        -------
        Rope
            ``Rope.from_hf_config`` of the preset's config.

        Raises
        ------
        RopeTypeError
            ``name`` is not a string.
        RopeValueError
            An unknown preset name, or a ``layer_type`` that is not one of the preset's.
        """
        from ._presets import load_preset

        config, layer = load_preset(name, layer_type=layer_type)
        return cls.from_hf_config(config, layer_type=layer)

    def explain(self) -> str:
        """What this Rope is and, for one read from a config, every key used, defaulted or
        present but unused.

        Returns
        -------
        str
            The text (``print(rope.explain())``): the ``repr`` and, for a Rope from
            :meth:`from_hf_config`, the keys used, defaulted and unused and the notes.
        """
        if self.report is None:
            return f"{self!r}\n(constructed directly, not from a config)"
        return str(self.report.text(self))

    # ---------------------------------------------------------------- exact frequencies
    @property
    def n_pairs(self) -> int:
        """Number of rotating pairs, rotary_dim // 2."""
        return self.rotary_dim // 2

    def unscaled_thetas(self) -> tuple[Decimal, ...]:
        """theta_j = base ** (-2j / rotary_dim) as exact Decimals (90 digits), no scaling.

        Returns
        -------
        tuple of decimal.Decimal
            ``rotary_dim // 2`` frequencies, ``theta_0 = 1``, correct to 90 significant
            digits.
        """
        return _tables.unscaled_thetas(self)

    def thetas(self, *, seq_len: int | None = None) -> tuple[Decimal, ...]:
        """The frequencies after scaling, as exact Decimals (90 significant digits).

        Parameters
        ----------
        seq_len : int, optional
            The sequence length, for schedules that depend on it (dynamic NTK, LongRoPE);
            ignored by the others.

        Returns
        -------
        tuple of decimal.Decimal
            ``rotary_dim // 2`` frequencies (the unscaled ones without a schedule).

        Raises
        ------
        RopeTypeError
            ``seq_len`` is not an integer, or a schedule's ``thetas`` returns something that
            is not a sequence of real numbers.
        RopeValueError
            ``seq_len`` < 1, or a schedule's ``thetas`` returns the wrong number of
            frequencies or one that is negative or not finite.
        """
        return _tables.thetas(self, seq_len)

    @property
    def attention_factor(self) -> float:
        """Factor multiplying cos and sin (YaRN/LongRoPE); 1.0 for other schedules."""
        return _tables.attention_factor(self, None)

    def _attention_factor(self, seq_len: int | None) -> float:
        """The attention factor at ``seq_len`` (internal; tests and twins use it)."""
        return _tables.attention_factor(self, seq_len)

    # ---------------------------------------------------------------- public tables
    def inv_freq(
        self,
        xp: Any = None,
        *,
        dtype: Any = None,
        device: Any = None,
        seq_len: int | None = None,
    ) -> Any:
        """The frequencies theta_j after scaling, shape ``(rotary_dim // 2,)``.

        Each entry is the exact theta_j correctly rounded to float64 (and, for ``dtype``
        float32, correctly rounded to float32 from the exact value, not double-rounded).
        Default namespace NumPy, default dtype float64.

        Parameters
        ----------
        xp : array namespace, optional
            The array library to build the result in (``numpy``, ``torch``, ``jax.numpy``,
            ...); default NumPy.
        dtype : dtype, optional
            A real floating dtype of ``xp``; default its float64 (float32 where the device
            has no float64).
        device : device, optional
            The device of the result; default ``xp``'s default device.
        seq_len : int, optional
            The sequence length, for schedules that depend on it (see :meth:`thetas`).

        Returns
        -------
        array
            Shape ``(rotary_dim // 2,)``, dtype ``dtype``.

        Raises
        ------
        RopeTypeError
            ``dtype`` is not a real floating dtype, or ``seq_len`` is not an integer.
        RopeValueError
            ``seq_len`` < 1.
        """
        return _tables.inv_freq(self, xp, dtype=dtype, device=device, seq_len=seq_len)

    def cos_sin(
        self,
        positions: Any,
        *,
        dtype: Any = None,
        seq_len: int | None = None,
        role: str = "query",
    ) -> tuple[Any, Any]:
        """cos(m * theta_j) and sin(m * theta_j) times the attention factor.

        Each of shape ``positions.shape + (rotary_dim // 2,)`` (for multi-axis schemes, the
        token shape: positions without their axis of per-axis positions), in the namespace
        and on the device of ``positions`` (a NumPy array for Python numbers and lists). The
        values are within one ulp of the exact result in float64 (see ``rope_ref._exact``);
        ``dtype`` rounds that result once. ``role`` matters only for xPos (queries scale up,
        keys down).

        Parameters
        ----------
        positions : array, int or sequence
            Token positions: integer or real, finite, ``|m| < 2**53`` (``2**24`` where the
            working dtype is float32). For multi-axis schemes, one position per axis along
            the scheme's axis (see :meth:`token_shape`).
        dtype : dtype, optional
            A real floating dtype to round the tables to; default the working dtype (float64,
            or float32 on a device without float64).
        seq_len : int, optional
            The sequence length, for schedules that depend on it; for a dynamic schedule it
            defaults to the largest position + 1 (and is required when positions are lazy or
            traced).
        role : {"query", "key"}
            Which side the tables are for; matters only for xPos.

        Returns
        -------
        cos, sin : tuple of arrays
            Each of shape ``token_shape(positions.shape) + (rotary_dim // 2,)``.

        Raises
        ------
        RopeTypeError
            ``positions`` not integer or real (bool, complex, not convertible to an array),
            or ``dtype`` not a real floating dtype.
        RopeValueError
            ``role`` not "query" or "key", positions not finite or too large, a positions
            shape that does not fit the multi-axis scheme, a ``seq_len`` < 1, or no
            ``seq_len`` for a dynamic schedule with lazy or traced positions.

        Examples
        --------
        >>> import numpy as np, rope_ref as rr
        >>> cos, sin = rr.Rope(head_dim=8).cos_sin(np.array([0, 2**31 - 1]))
        >>> cos.shape
        (2, 4)
        >>> float(cos[0, 0]), float(sin[0, 0])
        (1.0, 0.0)
        >>> plain = np.sin((2**31 - 1) * rr.Rope(head_dim=8).inv_freq())  # m * theta rounded
        >>> int(np.max(np.abs(plain - sin[1])) / np.spacing(1.0) ) > 1000
        True
        """
        role = check_role(role)
        return _tables.cos_sin(self, positions, dtype=dtype, seq_len=seq_len, role=role)

    def token_shape(
        self, positions_shape: tuple[int, ...], *, name: str = "positions"
    ) -> tuple[int, ...]:
        """The shape of the token grid that ``positions`` describes (validated).

        1-D schemes: the positions' own shape. Multi-axis schemes drop the axis that holds
        the per-axis positions (leading for M-RoPE, trailing for axial RoPE).

        Parameters
        ----------
        positions_shape : tuple of int
            The shape of the positions array.
        name : str
            The argument's name, for the error message.

        Returns
        -------
        tuple of int
            The token grid's shape.

        Raises
        ------
        RopeValueError
            For a multi-axis scheme, ``positions_shape`` lacks the leading (M-RoPE) or
            trailing (axial) axis of size ``n_axes``.
        """
        scheme = self.axis_scheme
        if scheme is None:
            return tuple(positions_shape)
        where = scheme.axis_position
        n = scheme.n_axes
        kind = type(scheme).__name__
        if where == "leading":
            if len(positions_shape) < 1 or positions_shape[0] != n:
                raise RopeValueError(
                    f"{name} must have a leading axis of size {n} for {kind} (one position "
                    f"per axis), got shape {tuple(positions_shape)}"
                )
            return tuple(positions_shape[1:])
        if len(positions_shape) < 1 or positions_shape[-1] != n:
            raise RopeValueError(
                f"{name} must have a trailing axis of size {n} for {kind} (one position per "
                f"axis), got shape {tuple(positions_shape)}"
            )
        return tuple(positions_shape[:-1])
