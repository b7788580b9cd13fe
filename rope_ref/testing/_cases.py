"""A named, deterministic battery of RoPE cases; each case is rebuilt from its name alone.

Quantized cases ("rotary then quantize", ``Case(quant="float8_e4m3fn")``): the kernel takes x
in ``dtype``, rotates it, divides by the case's per-tensor scale (:meth:`Case.scale`), clamps
to the float8 range and casts. :meth:`Case.expected` is then that result computed exactly and
rounded once: ``round_to_nearest_even(clamp(y / scale, -fmax, fmax))`` in float8 values (held
in float64), y the exact rotation. Two scale forms: ``"amax"`` (max|y| / fmax rounded up to
float32: nothing saturates) and ``"sat"`` (the 98th percentile of |y| over fmax, rounded to
float32: about 2% of the values saturate, so that a kernel that does not clamp is caught).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import _compat
from .._apply import apply_rope
from .._errors import RopeTypeError, RopeValueError
from .._presets import preset_layer_types as _preset_layer_types
from .._presets import presets as _preset_names
from .._rope import Rope
from .._validate import as_bool
from ._diagnose import bf16 as _bf16
from ._error_model import FLOAT8, round_float8

__all__ = ["Case", "case", "cases"]

# shape families: the axes of x, and where the sequence and heads live
FAMILIES = ("bshd", "bhsd", "thd")
POSITION_FORMS = ("arange", "offset", "perseq", "random", "large")
#: position forms just below 2**24 (where float32 positions stop being exact integers) and
#: just below 2**31 (the int32 limit; rope_ref's tables are exact to 2**53): valid in any
#: Case, in ``cases()`` with ``far_positions=True``
FAR_POSITION_FORMS = ("2p24", "2p31")
#: the first position of each form near a power of two: positions start in
#: [2**k - 4096, 2**k - seq), so that the last one is below 2**k
_NEAR = {"large": 2**20, "2p24": 2**24, "2p31": 2**31}
#: the float8 formats of quantized cases, and how their per-tensor scale is chosen
QUANT_FORMATS = ("float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz")
SCALE_FORMS = ("amax", "sat")
DTYPES = ("float32", "float16", "bfloat16", "float64")
LAYOUTS = ("half", "interleaved")
ROLES = ("query", "key")
#: The most elements (batch * seq * heads * head_dim) a case may have: its data is built in
#: float64 on the host, so 2**26 elements is 512 MiB per array.
MAX_CASE_ELEMENTS = 2**26
#: The longest name ``case`` parses.
MAX_NAME_LENGTH = 300


@dataclass(frozen=True)
class Case:
    """One battery case. ``name`` encodes every field; ``case(name)`` rebuilds it.

    Parameters
    ----------
    family : {"bshd", "bhsd", "thd"}
        Axes of x: (batch, seq, heads, head_dim), (batch, heads, seq, head_dim), or packed
        (total tokens, heads, head_dim) with ``cu_seqlens``.
    batch : int
        Sequences (>= 1).
    seq : int
        Tokens per sequence (>= 1; below 4096 for ``positions="large"``).
    heads : int
        Heads (>= 1).
    head_dim : int
        Channels per head (>= 1; must match the preset's head size when ``preset`` is set).
    layout : {"half", "interleaved"}
        The channel layout (ignored with a ``preset``).
    rotary_dim : int, optional
        Rotating channels; default ``head_dim`` (ignored with a ``preset``).
    base : float
        The RoPE base (ignored with a ``preset``).
    positions : {"arange", "offset", "perseq", "random", "large", "2p24", "2p31"}
        How positions are formed: 0..seq-1, shifted by 1000, shifted per sequence, random
        below 8192, or just below 2**20, 2**24 or 2**31 (one start per sequence).
    dtype : {"float32", "float16", "bfloat16", "float64"}
        The dtype of x.
    preset : str, optional
        A preset name (``rope_ref.presets()``): the case's ``Rope`` is that model's.
    quant : str, optional
        A float8 format (``"float8_e4m3fn"``, ``"float8_e5m2"``, or a fnuz variant): the
        output is the rotation quantized to it with :meth:`scale` ("rotary then quantize");
        x stays in ``dtype``.
    scale_form : {"amax", "sat"}
        How a quantized case's scale is chosen (see the module docstring); only with
        ``quant`` (a case without it keeps the default "amax", which its name leaves out).

    Raises
    ------
    RopeValueError
        A size not an integer >= 1, more than ``MAX_CASE_ELEMENTS`` elements, or a
        ``family``, ``positions``, ``dtype``, ``layout``, ``quant`` or ``scale_form`` not
        among those listed.

    Examples
    --------
    >>> from rope_ref.testing import Case, case
    >>> c = Case(seq=8, head_dim=64)
    >>> c.name
    'bshd-b2-s8-h4-d64-half-r64-base=10000-pos=arange-float32'
    >>> case(c.name) == c
    True
    >>> c.x_shape()
    (2, 8, 4, 64)
    """

    family: str = "bshd"
    batch: int = 2
    seq: int = 16
    heads: int = 4
    head_dim: int = 128
    layout: str = "half"
    rotary_dim: int | None = None
    base: float = 10_000.0
    positions: str = "arange"
    dtype: str = "float32"
    preset: str | None = None
    quant: str | None = None
    scale_form: str = "amax"

    def __post_init__(self) -> None:
        for fname in ("batch", "seq", "heads", "head_dim"):
            v = getattr(self, fname)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise RopeValueError(f"Case.{fname} must be an integer >= 1, got {v!r}")
        n = self.batch * self.seq * self.heads * self.head_dim
        if n > MAX_CASE_ELEMENTS:
            raise RopeValueError(
                f"a case has batch * seq * heads * head_dim = {n} elements, more than the limit "
                f"of {MAX_CASE_ELEMENTS} (2**26): its float64 data would not fit a test run"
            )
        if self.family not in FAMILIES:
            raise RopeValueError(f"Case.family must be one of {FAMILIES}, got {self.family!r}")
        if self.positions not in POSITION_FORMS + FAR_POSITION_FORMS:
            raise RopeValueError(
                f"Case.positions must be one of {POSITION_FORMS + FAR_POSITION_FORMS}, got "
                f"{self.positions!r}"
            )
        if self.dtype not in DTYPES:
            raise RopeValueError(f"Case.dtype must be one of {DTYPES}, got {self.dtype!r}")
        if self.layout not in LAYOUTS:
            raise RopeValueError(f"Case.layout must be one of {LAYOUTS}, got {self.layout!r}")
        if self.positions in _NEAR and self.seq >= 4096:
            k = round(np.log2(_NEAR[self.positions]))
            raise RopeValueError(
                f"Case.seq must be below 4096 for positions={self.positions!r} (they start "
                f"below 2**{k} - seq), got {self.seq}"
            )
        self._check_quant()

    def _check_quant(self) -> None:
        if self.quant is not None and not isinstance(self.quant, str):
            raise RopeTypeError(
                f"Case.quant must be None or a float8 format name (a str, one of "
                f"{QUANT_FORMATS}), got {type(self.quant).__name__} {self.quant!r}"
            )
        if self.quant is not None and self.quant not in QUANT_FORMATS:
            raise RopeValueError(f"Case.quant must be one of {QUANT_FORMATS}, got {self.quant!r}")
        if not isinstance(self.scale_form, str):
            raise RopeTypeError(
                f"Case.scale_form must be a str, one of {SCALE_FORMS}, got "
                f"{type(self.scale_form).__name__} {self.scale_form!r}"
            )
        if self.scale_form not in SCALE_FORMS:
            raise RopeValueError(
                f"Case.scale_form must be one of {SCALE_FORMS}, got {self.scale_form!r}"
            )
        if self.quant is None and self.scale_form != "amax":
            raise RopeValueError(
                f"Case.scale_form={self.scale_form!r} describes a quantized case, but quant is "
                "None; expected quant= (a float8 format) with it, or the default scale_form"
            )

    @property
    def name(self) -> str:
        """The case's name, encoding every field (``case(name)`` rebuilds the case)."""
        parts = [
            self.family,
            f"b{self.batch}",
            f"s{self.seq}",
            f"h{self.heads}",
            f"d{self.head_dim}",
        ]
        if self.preset is not None:
            parts.append(f"preset={self.preset}")
        else:
            parts += [self.layout, f"r{self.rotary_dim or self.head_dim}", f"base={self.base:g}"]
        parts += [f"pos={self.positions}", self.dtype]
        if self.quant is not None:
            parts += [f"q={self.quant}", f"scale={self.scale_form}"]
        return "-".join(parts)

    def rope(self) -> Rope:
        """The case's specification: the preset's ``Rope`` (Gemma 3: its full-attention
        layers), else ``Rope(head_dim, base=base, rotary_dim=rotary_dim, layout=layout)``.

        Returns
        -------
        Rope
            The specification.

        Raises
        ------
        RopeValueError
            The fields do not make a valid ``Rope`` (e.g. an odd ``rotary_dim``).
        """
        if self.preset is not None:
            return Rope.preset(self.preset)  # a per-layer preset: its default layer type
        kw: dict[str, Any] = {"rotary_dim": self.rotary_dim, "layout": self.layout}
        return Rope(self.head_dim, base=self.base, **kw)

    @property
    def seed(self) -> int:
        """The random seed of the case's data: the first 4 bytes of the SHA-256 of ``name``."""
        return int.from_bytes(hashlib.sha256(self.name.encode()).digest()[:4], "little")

    # ------------------------------------------------------------------ host data
    def x_shape(self) -> tuple[int, ...]:
        """The shape of x, from ``family`` and the rope's head size.

        Returns
        -------
        tuple of int
            (batch, seq, heads, head_dim), (batch, heads, seq, head_dim), or (batch * seq,
            heads, head_dim) for packed cases.
        """
        d = self.rope().head_dim
        if self.family == "bshd":
            return (self.batch, self.seq, self.heads, d)
        if self.family == "bhsd":
            return (self.batch, self.heads, self.seq, d)
        return (self.batch * self.seq, self.heads, d)  # thd: packed, cu_seqlens below

    def cu_seqlens(self) -> np.ndarray | None:
        """Packed (thd) cases: sequences of unequal lengths summing to batch * seq.

        Returns
        -------
        numpy.ndarray or None
            int64 offsets of shape (batch + 1,), from 0 to ``batch * seq``, strictly
            increasing (random cut points from ``seed``); None for other families.
        """
        if self.family != "thd":
            return None
        total = self.batch * self.seq
        rng = np.random.default_rng(self.seed)
        cuts = np.sort(rng.choice(np.arange(1, total), size=self.batch - 1, replace=False))
        return np.concatenate([[0], cuts, [total]]).astype(np.int64)

    def token_positions(self) -> np.ndarray:
        """Positions per token: (batch, seq), or (total,) for packed cases.

        Returns
        -------
        numpy.ndarray
            int64 positions of the form ``positions`` (packed cases restart at 0 in each
            sequence).
        """
        rng = np.random.default_rng(self.seed + 1)
        b, s = self.batch, self.seq
        if self.family == "thd":
            cu = self.cu_seqlens()
            assert cu is not None
            pos = np.concatenate([np.arange(cu[i + 1] - cu[i]) for i in range(len(cu) - 1)])
            if self.positions == "perseq":
                starts = rng.integers(0, 4096, size=len(cu) - 1)
                pos = pos + np.repeat(starts, np.diff(cu))
            elif self.positions != "arange":
                pos = self._form(rng, pos[None, :])[0]
            return pos.astype(np.int64)
        base = np.broadcast_to(np.arange(s), (b, s))
        return self._form(rng, base).astype(np.int64)

    def _form(self, rng: np.random.Generator, base: np.ndarray) -> np.ndarray:
        b = base.shape[0]
        if self.positions == "arange":
            return base
        if self.positions == "offset":
            return base + 1000
        if self.positions == "perseq":
            return base + rng.integers(0, 4096, size=(b, 1))
        if self.positions == "random":
            return rng.integers(0, 8192, size=base.shape)
        if self.positions in _NEAR:
            top = _NEAR[self.positions]
            return base + rng.integers(top - 4096, top - base.shape[1], size=(b, 1))
        raise RopeValueError(f"unknown position form {self.positions!r}")

    def positions_for(self, rope: Rope) -> np.ndarray:
        """Positions shaped to broadcast against x.shape[:-1] (multi-axis schemes: text
        tokens, every axis the same).

        Parameters
        ----------
        rope : Rope
            The specification (its multi-axis scheme decides the per-axis axis).

        Returns
        -------
        numpy.ndarray
            int64 positions: (batch, seq, 1), (batch, 1, seq) or (total, 1) by family,
            with a leading (M-RoPE) or trailing (axial) axis of equal positions for
            multi-axis schemes.
        """
        return positions_like(self.family, self.token_positions(), rope)

    def x(self, *, role: str = "query") -> np.ndarray:
        """The input in float64 holding values exactly representable in ``dtype``.

        ``role="key"`` gives the keys: independent data of the same shape (so that a kernel
        that swaps or reuses q and k is caught).

        Parameters
        ----------
        role : {"query", "key"}
            Which input: queries or keys.

        Returns
        -------
        numpy.ndarray
            float64 standard normal values of shape ``x_shape()``, rounded to ``dtype``.

        Raises
        ------
        RopeValueError
            ``role`` not "query" or "key".
        """
        if role not in ROLES:
            raise RopeValueError(f"role must be one of {ROLES}, got {role!r}")
        rng = np.random.default_rng(self.seed + (2 if role == "query" else 3))
        x = rng.standard_normal(self.x_shape())
        if self.dtype == "bfloat16":
            return _bf16(x.astype(np.float32)).astype(np.float64)
        return x.astype(self.dtype).astype(np.float64)

    def data(
        self, xp: Any = None, device: Any = None, *, rope: Rope | None = None, role: str = "query"
    ) -> tuple[Any, Any, Rope]:
        """(x, positions, rope) in namespace ``xp`` (NumPy by default): x in ``dtype``.

        ``rope`` replaces the case's own specification (e.g. one read from a config.json;
        its head_dim must equal the case's); ``role="key"`` gives the keys' data.

        Parameters
        ----------
        xp : array namespace or module, optional
            The library to put x and positions in (``torch``, ``jax.numpy``, ...); default
            NumPy.
        device : device, optional
            The device of the arrays (with ``xp``).
        rope : Rope, optional
            A specification replacing the case's own (same head_dim).
        role : {"query", "key"}
            Queries' or keys' data.

        Returns
        -------
        x, positions, rope : tuple
            x in ``dtype``, positions as :meth:`positions_for`, and the specification used.

        Raises
        ------
        RopeValueError
            ``dtype`` is bfloat16 without ``xp`` (NumPy has none), ``role`` is not "query"
            or "key", or ``rope``'s head_dim differs from the case's.
        RopeTypeError
            ``rope`` is not a ``Rope``.
        """
        rope = self._rope(rope)
        x, pos = self.x(role=role), self.positions_for(rope)
        if xp is None:
            if self.dtype == "bfloat16":
                raise RopeValueError("NumPy has no bfloat16: pass xp= of a library that has it")
            return x.astype(self.dtype), pos, rope
        xp = _compat.namespace_for(xp)
        xa = xp.asarray(x, device=device)
        return xp.astype(xa, getattr(xp, self.dtype)), xp.asarray(pos, device=device), rope

    def _rope(self, rope: Rope | None) -> Rope:
        if rope is None:
            return self.rope()
        if not isinstance(rope, Rope):
            raise RopeTypeError(
                f"rope must be a rope_ref.Rope or None, got {type(rope).__name__} {rope!r:.80}"
            )
        if rope.head_dim != self.x_shape()[-1]:
            raise RopeValueError(
                f"rope.head_dim = {rope.head_dim} differs from the case's head_dim "
                f"{self.x_shape()[-1]}"
            )
        return rope

    def expected(self, *, rope: Rope | None = None, role: str = "query") -> np.ndarray:
        """The exact result rounded once to ``dtype`` (float64 array; bfloat16 values exact);
        for a quantized case the exactly rounded float8 values.

        ``rope`` and ``role`` as in :meth:`data`. A quantized case (``quant``) gives
        ``round(clamp(y / scale, -fmax, fmax))`` to nearest (ties to even) in the float8
        format, y the exact rotation and scale :meth:`scale`: the values of the float8
        tensor (multiply by the scale to dequantize). It is correctly rounded except where
        y / scale lies within about 2**-51 (relative) of a rounding boundary.

        Parameters
        ----------
        rope : Rope, optional
            A specification replacing the case's own (same head_dim).
        role : {"query", "key"}
            Queries or keys.

        Returns
        -------
        numpy.ndarray
            ``apply_rope`` of :meth:`x` in float64 (correct to within an ulp), rounded once
            to ``dtype`` (or quantized, see above) and held in float64.

        Raises
        ------
        RopeValueError
            ``role`` is not "query" or "key", or ``rope``'s head_dim differs from the case's.
        RopeTypeError
            ``rope`` is not a ``Rope``.
        """

        rope = self._rope(rope)
        y = apply_rope(self.x(role=role), self.positions_for(rope), rope, role=role)
        if self.quant is not None:
            return round_float8(y / self._scale_of(y), FLOAT8[self.quant])
        if self.dtype == "bfloat16":
            # float64 -> float32 -> bfloat16 may double-round in rare ties: far inside any
            # bfloat16 tolerance
            return _bf16(y.astype(np.float32)).astype(np.float64)
        out: np.ndarray = y.astype(self.dtype).astype(np.float64)
        return out

    def scale(self, *, rope: Rope | None = None, role: str = "query") -> float:
        """A quantized case's per-tensor scale (a float32 value, as kernels store it): the
        float8 values times it approximate the rotation.

        Parameters
        ----------
        rope : Rope, optional
            A specification replacing the case's own (same head_dim).
        role : {"query", "key"}
            Queries or keys (each has its own scale, as vLLM's q and k scales).

        Returns
        -------
        float
            ``"amax"``: ``max|y| / fmax`` rounded up to float32 (no value saturates);
            ``"sat"``: the 98th percentile of ``|y|`` over fmax, rounded to float32 (about 2% of
            the values saturate). y is the exact rotation; 1.0 if it is all zero.

        Raises
        ------
        RopeValueError
            The case is not quantized (``quant`` is None), or as :meth:`expected`.
        RopeTypeError
            ``rope`` is not a ``Rope``.
        """

        if self.quant is None:
            raise RopeValueError(
                f"Case.scale: the case {self.name!r} is not quantized (quant is None)"
            )
        rope = self._rope(rope)
        y = apply_rope(self.x(role=role), self.positions_for(rope), rope, role=role)
        return self._scale_of(y)

    def _scale_of(self, y: np.ndarray) -> float:
        assert self.quant is not None
        fmax = FLOAT8[self.quant].fmax
        mag = np.abs(y).ravel()
        if self.scale_form == "amax":
            big = float(np.max(mag)) if mag.size else 0.0
            s = np.float32(big / fmax)
            if float(s) * fmax < big:  # rounded down: one float32 step up
                s = np.nextafter(s, np.float32(np.inf))
        else:
            s = np.float32(np.quantile(mag, 0.98) / fmax) if mag.size else np.float32(0)
        return float(s) if s > 0 else 1.0


def positions_like(family: str, tok: np.ndarray, rope: Rope) -> np.ndarray:
    """Token positions ``tok`` ((batch, seq), or (total,) for thd) shaped to broadcast
    against x of ``family`` without its last axis; multi-axis schemes get every axis equal
    (text tokens), on the leading or trailing axis the scheme reads."""
    if family == "bshd":
        p = tok[:, :, None]
    elif family == "bhsd":
        p = tok[:, None, :]
    else:
        p = tok[:, None]
    return with_axes(p, rope)


def with_axes(p: np.ndarray, rope: Rope) -> np.ndarray:
    """Per-token positions ``p`` with the per-axis axis a multi-axis ``rope`` reads (every
    axis the same: text tokens); ``p`` itself for one-axis schemes."""
    scheme = axis_scheme(rope)
    if scheme is not None and scheme.axis_position == "leading":
        return np.stack([p] * scheme.n_axes)
    if scheme is not None and scheme.axis_position == "trailing":
        return np.stack([p] * scheme.n_axes, axis=-1)
    return p


def axis_scheme(rope: Rope) -> Any:
    """The multi-axis scheme (``Rope.axis_scheme``: ``axes=``, or ``scaling=MRope(...)`` /
    ``Axial``), or None for one position per token."""
    scheme = getattr(rope, "axis_scheme", None)
    if scheme is not None or hasattr(rope, "axis_scheme"):
        return scheme
    sc = rope.scaling
    return sc if sc is not None and sc.axis_position is not None else None


def case(name: str) -> Case:
    """Rebuild a case from its name (the inverse of ``Case.name``).

    Parameters
    ----------
    name : str
        A case name, as ``Case.name`` writes it (at most ``MAX_NAME_LENGTH`` characters).

    Returns
    -------
    Case
        The case with that name.

    Raises
    ------
    RopeTypeError
        ``name`` is not a string.
    RopeValueError
        ``name`` is too long, does not parse, names an unknown preset, is not the canonical
        spelling (the message suggests it), or gives fields that make no valid ``Case`` or
        ``Rope``.
    """
    if not isinstance(name, str):
        raise RopeTypeError(f"name must be a string, got {type(name).__name__} {name!r:.80}")
    if len(name) > MAX_NAME_LENGTH:
        raise RopeValueError(
            f"not a case name: {len(name)} characters, more than the limit of "
            f"{MAX_NAME_LENGTH} (a name starting {name[:40]!r})"
        )
    fields: dict[str, Any] = {}
    tokens = name.split("-")
    # preset names contain dashes: rejoin the preset=... token with its tail
    joined: list[str] = []
    for tok in tokens:
        if (
            joined
            and joined[-1].startswith("preset=")
            and not (tok.startswith("pos=") or tok in DTYPES)
        ):
            joined[-1] += "-" + tok
        else:
            joined.append(tok)
    try:
        fields["family"] = joined[0]
        fields["batch"] = int(joined[1][1:])
        fields["seq"] = int(joined[2][1:])
        fields["heads"] = int(joined[3][1:])
        fields["head_dim"] = int(joined[4][1:])
        rest = joined[5:]
        if rest[0].startswith("preset="):
            fields["preset"] = rest[0][len("preset=") :]
            rest = rest[1:]
        else:
            fields["layout"] = rest[0]
            r = int(rest[1][1:])
            fields["rotary_dim"] = None if r == fields["head_dim"] else r
            fields["base"] = float(rest[2][len("base=") :])
            rest = rest[3:]
        fields["positions"] = rest[0][len("pos=") :]
        fields["dtype"] = rest[1]
        if len(rest) == 4 and rest[2].startswith("q=") and rest[3].startswith("scale="):
            fields["quant"] = rest[2][len("q=") :]
            fields["scale_form"] = rest[3][len("scale=") :]
        elif len(rest) != 2:
            raise ValueError
    except (IndexError, ValueError):
        raise RopeValueError(f"not a case name: {name!r}") from None
    if fields.get("preset") is not None and fields["preset"] not in _preset_names():
        raise RopeValueError(f"not a case name: {name!r} (no preset {fields['preset']!r})")
    try:
        c = Case(**fields)
    except RopeValueError as exc:
        raise RopeValueError(f"not a case name: {name!r} ({exc})") from None
    if c.name != name:
        raise RopeValueError(f"not a case name: {name!r} (did you mean {c.name!r}?)")
    try:
        c.rope()  # the rope must be constructible (rotary_dim, base)
    except RopeValueError as exc:
        raise RopeValueError(f"not a case name: {name!r} ({exc})") from None
    return c


def cases(
    *,
    dtypes: tuple[str, ...] = ("float32", "float16", "bfloat16", "float64"),
    presets: bool | None = None,
    xp: Any = None,
    far_positions: bool = False,
    quant: tuple[str, ...] = (),
) -> list[Case]:
    """The battery: shapes, position forms, layouts, partial rotary, head sizes, every preset's
    schedule and the dtypes, each varied around a base case. With ``xp``, dtypes the
    namespace lacks are left out (NumPy has no bfloat16).

    With ``quant`` (float8 formats) the result is the "rotary then quantize" battery
    instead: for each format and each of ``dtypes`` (x's dtype), scales that saturate
    nothing and about 2% of the values, packed and decode shapes, the interleaved layout,
    partial rotary and large positions; ``far_positions`` adds the far forms (bshd and thd,
    saturating scale). It has no preset cases: ``presets=True`` with ``quant`` is an error.

    Parameters
    ----------
    dtypes : tuple of str
        The dtypes to vary over (of ``"float32"``, ``"float16"``, ``"bfloat16"``,
        ``"float64"``).
    presets : bool, optional
        Include two float32 cases (positions "arange" and "large") per preset (the default,
        without ``quant``).
    xp : array namespace or module, optional
        Leave out the dtypes this library lacks.
    far_positions : bool
        Also the position forms ``"2p24"`` and ``"2p31"`` (just below 2**24 and 2**31),
        bshd and thd, per dtype.
    quant : tuple of str
        Float8 formats (of ``QUANT_FORMATS``): return the quantized battery for them.

    Returns
    -------
    list of Case
        The cases, each name once, in a fixed order.

    Raises
    ------
    RopeValueError
        A dtype in ``dtypes`` that is not one of the four above, a format in ``quant``
        not in ``QUANT_FORMATS``, or ``presets=True`` with ``quant``.
    """
    if xp is not None:
        dtypes = tuple(d for d in dtypes if hasattr(xp, d))
    if isinstance(quant, str) or not isinstance(quant, tuple | list):
        raise RopeTypeError(f"quant must be a tuple of float8 format names, got {quant!r:.80}")
    if quant:
        if presets:
            raise RopeValueError(
                "presets=True: the quantized battery (quant=) has no preset cases; expected "
                "presets left out (or False) with quant="
            )
        return _unique(_quant_cases(tuple(quant), dtypes, as_bool(far_positions, "far_positions")))
    presets = True if presets is None else presets
    out: list[Case] = []
    for dtype in dtypes:
        base = Case(dtype=dtype)
        out.append(base)
        for fam in ("bhsd", "thd"):
            out.append(Case(family=fam, dtype=dtype))
        out.append(Case(batch=4, seq=1, positions="perseq", dtype=dtype))  # decode, batch > 1
        out.append(Case(heads=1, dtype=dtype))  # one kv head
        out.append(Case(heads=3, batch=1, dtype=dtype))  # odd head count
        for d in (72, 80, 96, 100, 256):
            out.append(Case(head_dim=d, dtype=dtype))
        for form in POSITION_FORMS[1:]:
            out.append(Case(positions=form, dtype=dtype))
            out.append(Case(family="thd", positions=form, dtype=dtype))
        out.append(Case(layout="interleaved", dtype=dtype))
        out.append(Case(layout="interleaved", rotary_dim=64, head_dim=256, dtype=dtype))  # GPT-J
        out.append(Case(rotary_dim=32, head_dim=128, base=5e5, dtype=dtype))  # partial 0.25
        out.append(Case(rotary_dim=64, positions="large", base=1e6, dtype=dtype))
        if far_positions:
            for form in FAR_POSITION_FORMS:
                out.append(Case(positions=form, dtype=dtype))
                out.append(Case(family="thd", positions=form, dtype=dtype))
    if presets:
        for name in _preset_names():
            if len(_preset_layer_types(name)) > 1:
                continue  # a per-layer model is listed by one preset per layer type
            for form in ("arange", "large"):
                out.append(
                    Case(preset=name, positions=form, head_dim=_preset_dim(name), dtype="float32")
                )
    return _unique(out)


def _unique(out: list[Case]) -> list[Case]:
    seen: set[str] = set()
    unique = []
    for c in out:
        if c.name not in seen:
            seen.add(c.name)
            unique.append(c)
    return unique


def _quant_cases(formats: tuple[str, ...], dtypes: tuple[str, ...], far: bool) -> list[Case]:
    """The "rotary then quantize" battery: per format and input dtype, seven cases (and
    four far-position cases with ``far``)."""
    for f in formats:
        if f not in QUANT_FORMATS:
            raise RopeValueError(f"quant formats must be among {QUANT_FORMATS}, got {f!r}")
    out = []
    for f in formats:
        for dt in dtypes:
            q: dict[str, Any] = {"quant": f, "dtype": dt}
            out += [
                Case(**q),
                Case(**q, scale_form="sat"),
                Case(family="thd", positions="random", scale_form="sat", **q),
                Case(batch=4, seq=1, positions="perseq", scale_form="sat", **q),  # decode
                Case(layout="interleaved", head_dim=64, scale_form="sat", **q),
                Case(rotary_dim=32, head_dim=128, base=5e5, scale_form="sat", **q),  # partial
                Case(family="bhsd", positions="large", head_dim=64, scale_form="sat", **q),
            ]
            if far:
                for form in FAR_POSITION_FORMS:
                    out.append(Case(positions=form, scale_form="sat", **q))
                    out.append(Case(family="thd", positions=form, scale_form="sat", **q))
    return out


def _preset_dim(name: str) -> int:
    return Rope.preset(name).head_dim
