"""A named, deterministic battery of RoPE cases; each case is rebuilt from its name alone."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import _compat
from .._errors import RopeValueError
from .._presets import presets as _preset_names
from .._rope import Rope

__all__ = ["Case", "case", "cases"]

# shape families: the axes of x, and where the sequence and heads live
FAMILIES = ("bshd", "bhsd", "thd")
POSITION_FORMS = ("arange", "offset", "perseq", "random", "large")
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
    positions : {"arange", "offset", "perseq", "random", "large"}
        How positions are formed: 0..seq-1, shifted by 1000, shifted per sequence, random
        below 8192, or just below 2**20.
    dtype : {"float32", "float16", "bfloat16", "float64"}
        The dtype of x.
    preset : str, optional
        A preset name (``rope_ref.presets()``): the case's ``Rope`` is that model's.

    Raises
    ------
    RopeValueError
        A size not an integer >= 1, more than ``MAX_CASE_ELEMENTS`` elements, or a
        ``family``, ``positions``, ``dtype`` or ``layout`` not among those listed.

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
        if self.positions not in POSITION_FORMS:
            raise RopeValueError(
                f"Case.positions must be one of {POSITION_FORMS}, got {self.positions!r}"
            )
        if self.dtype not in DTYPES:
            raise RopeValueError(f"Case.dtype must be one of {DTYPES}, got {self.dtype!r}")
        if self.layout not in LAYOUTS:
            raise RopeValueError(f"Case.layout must be one of {LAYOUTS}, got {self.layout!r}")
        if self.positions == "large" and self.seq >= 4096:
            raise RopeValueError(
                f"Case.seq must be below 4096 for positions='large' (they start below 2**20 - "
                f"seq), got {self.seq}"
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
            layer = "full_attention" if self.preset == "gemma-3" else None
            return Rope.preset(self.preset, layer_type=layer)
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
        if self.positions == "large":
            return base + rng.integers(2**20 - 4096, 2**20 - base.shape[1], size=(b, 1))
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
            from ._diagnose import bf16 as _bf16

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
            or "key", ``rope`` is not a ``Rope`` (raised as a value error), or its head_dim
            differs from the case's.
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
            raise RopeValueError(f"rope must be a rope_ref.Rope or None, got {rope!r}")
        if rope.head_dim != self.x_shape()[-1]:
            raise RopeValueError(
                f"rope.head_dim = {rope.head_dim} differs from the case's head_dim "
                f"{self.x_shape()[-1]}"
            )
        return rope

    def expected(self, *, rope: Rope | None = None, role: str = "query") -> np.ndarray:
        """The exact result rounded once to ``dtype`` (float64 array; bfloat16 values exact).

        ``rope`` and ``role`` as in :meth:`data`.

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
            to ``dtype`` and held in float64.

        Raises
        ------
        RopeValueError
            ``role`` is not "query" or "key", ``rope`` is not a ``Rope``, or its head_dim
            differs from the case's.
        """
        from .._apply import apply_rope

        rope = self._rope(rope)
        y = apply_rope(self.x(role=role), self.positions_for(rope), rope, role=role)
        if self.dtype == "bfloat16":
            from ._diagnose import bf16 as _bf16

            # float64 -> float32 -> bfloat16 may double-round in rare ties: far inside any
            # bfloat16 tolerance
            return _bf16(y.astype(np.float32)).astype(np.float64)
        out: np.ndarray = y.astype(self.dtype).astype(np.float64)
        return out


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
    RopeValueError
        ``name`` is not a string (raised as a value error), too long, does not parse, names
        an unknown preset, is not the canonical spelling (the message suggests it), or
        gives fields that make no valid ``Case`` or ``Rope``.
    """
    if not isinstance(name, str):
        raise RopeValueError(f"name must be a string, got {name!r}")
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
        if len(rest) != 2:
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
    presets: bool = True,
    xp: Any = None,
) -> list[Case]:
    """The battery: shapes, position forms, layouts, partial rotary, head sizes, every preset's
    schedule and the dtypes, each varied around a base case. With ``xp``, dtypes the
    namespace lacks are left out (NumPy has no bfloat16).

    Parameters
    ----------
    dtypes : tuple of str
        The dtypes to vary over (of ``"float32"``, ``"float16"``, ``"bfloat16"``,
        ``"float64"``).
    presets : bool
        Include two float32 cases (positions "arange" and "large") per preset.
    xp : array namespace or module, optional
        Leave out the dtypes this library lacks.

    Returns
    -------
    list of Case
        The cases, each name once, in a fixed order.

    Raises
    ------
    RopeValueError
        A dtype in ``dtypes`` that is not one of the four above.
    """
    if xp is not None:
        dtypes = tuple(d for d in dtypes if hasattr(xp, d))
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
    if presets:
        for name in _preset_names():
            if name == "gemma-3":
                continue  # gemma-3-global / gemma-3-local carry its two layer types
            for form in ("arange", "large"):
                out.append(
                    Case(preset=name, positions=form, head_dim=_preset_dim(name), dtype="float32")
                )
    seen: set[str] = set()
    unique = []
    for c in out:
        if c.name not in seen:
            seen.add(c.name)
            unique.append(c)
    return unique


def _preset_dim(name: str) -> int:
    layer = "full_attention" if name == "gemma-3" else None
    return Rope.preset(name, layer_type=layer).head_dim
