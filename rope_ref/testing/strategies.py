"""Hypothesis strategies for property tests of RoPE code.

``ropes()`` draws valid :class:`rope_ref.Rope` objects (every frequency schedule and axis
scheme, and the real-model presets), ``positions()`` position arrays (arange, offsets, packed
sequences, large and real-valued positions), ``rope_inputs()`` whole inputs ``(x, positions,
rope)`` in the shapes and layouts kernels take, and ``hf_configs()`` Hugging Face
``config.json`` dicts for every rope type. Every draw is valid by construction (nothing is
filtered out), so ``Rope(...)`` and ``rope_ref.apply_rope`` accept it.

This is the only module of rope_ref that imports hypothesis (a test dependency).

Examples
--------
>>> from hypothesis import given, settings
>>> import numpy as np, rope_ref as rr
>>> from rope_ref.testing import strategies as st_rope
>>> @settings(max_examples=5, deadline=None, derandomize=True)
... @given(st_rope.rope_inputs(dtypes=("float64",)))
... def test_norm_is_kept(inp):
...     y = rr.apply_rope(inp.x, inp.positions, inp.rope)
...     assert y.shape == inp.x.shape
>>> test_norm_is_kept()
"""

from __future__ import annotations

import itertools
import math
from typing import Any, NamedTuple

import numpy as np
from hypothesis import strategies as st

from .. import scaling as S
from .._errors import RopeValueError
from .._presets import presets as _preset_names
from .._rope import Rope

__all__ = [
    "POSITION_KINDS",
    "ROPE_TYPES",
    "SCHEDULES",
    "RopeInput",
    "hf_configs",
    "positions",
    "rope_inputs",
    "ropes",
]

#: schedule names that ``ropes(schedules=...)`` accepts (None: plain RoPE)
SCHEDULES = (
    "none",
    "linear",
    "ntk",
    "dynamic",
    "yarn",
    "llama3",
    "longrope",
    "proportional",
    "xpos",
    "mrope",
    "axial",
)
#: position kinds of ``positions(kinds=...)``
POSITION_KINDS = ("arange", "offset", "packed", "large", "float")
#: rope types of ``hf_configs(rope_types=...)``
ROPE_TYPES = ("default", "linear", "dynamic", "yarn", "longrope", "su", "llama3", "mrope")

_FAMILIES = ("bshd", "bhsd", "thd", "sd")


class RopeInput(NamedTuple):
    """One draw of :func:`rope_inputs`: ``apply_rope(x, positions, rope, role=role)`` is valid."""

    x: np.ndarray
    positions: np.ndarray
    rope: Rope
    family: str
    role: str


def _check_names(arg: str, given: tuple[str, ...], allowed: tuple[str, ...]) -> tuple[str, ...]:
    given = tuple(given)
    bad = [g for g in given if g not in allowed]
    if bad or not given:
        raise RopeValueError(
            f"{arg} must be a non-empty sequence of names from {allowed}, got {given!r}"
        )
    return given


_factor = st.floats(1.0, 64.0, allow_nan=False, allow_infinity=False)
_orig = st.sampled_from([512, 2048, 4096, 8192, 32768])


@st.composite
def _scaling(draw: st.DrawFn, kind: str, rotary_dim: int, head_dim: int) -> S.Scaling | None:
    n_pairs = rotary_dim // 2
    if kind == "none":
        return None
    if kind == "linear":
        return S.Linear(draw(_factor))
    if kind == "ntk":
        return S.NTK(draw(_factor))
    if kind == "dynamic":
        return S.DynamicNTK(
            draw(_factor), draw(_orig), variant=draw(st.sampled_from(["hf", "vllm"]))
        )
    if kind == "yarn":
        beta_slow = draw(st.floats(0.5, 4.0))
        beta_fast = draw(st.floats(beta_slow, 64.0))
        kw: dict[str, Any] = {}
        if draw(st.booleans()):
            kw["mscale"] = draw(st.floats(0.5, 2.0))
            kw["mscale_all_dim"] = draw(st.floats(0.1, 2.0) | st.none())
        elif draw(st.booleans()):
            kw["attention_factor"] = draw(st.floats(0.5, 2.0))
        return S.YaRN(
            draw(_factor),
            draw(_orig),
            beta_fast=beta_fast,
            beta_slow=beta_slow,
            truncate=draw(st.booleans()),
            ramp=draw(st.sampled_from(["index", "ratio"])),
            **kw,
        )
    if kind == "llama3":
        low = draw(st.floats(0.5, 4.0))
        high = draw(st.floats(low * 1.01, 16.0))
        return S.Llama3(draw(_factor), low, high, draw(_orig))
    if kind == "longrope":
        f = st.floats(1.0, 64.0)
        short = draw(st.lists(f, min_size=n_pairs, max_size=n_pairs))
        long = draw(st.lists(f, min_size=n_pairs, max_size=n_pairs))
        return S.LongRoPE(tuple(short), tuple(long), draw(_orig), factor=draw(_factor))
    if kind == "proportional":
        return S.Proportional(
            partial_rotary_factor=draw(st.sampled_from([0.25, 0.5, 0.75, 1.0])),
            factor=draw(st.floats(1.0, 8.0)),
        )
    if kind == "xpos":
        return S.XPos(
            scale_base=draw(st.sampled_from([256.0, 512.0, 1024.0])),
            gamma=draw(st.floats(0.1, 0.8)),
            center=draw(st.booleans()),
        )
    if kind == "mrope":
        n_axes = draw(st.integers(1, 4))
        cuts = sorted(
            draw(st.lists(st.integers(0, n_pairs), min_size=n_axes - 1, max_size=n_axes - 1))
        )
        edges = [0, *cuts, n_pairs]
        sections = tuple(b - a for a, b in itertools.pairwise(edges))
        return S.MRope(sections=sections, interleaved=draw(st.booleans()))
    if kind == "axial":
        n = draw(st.sampled_from([k for k in (1, 2, 3, 4) if n_pairs % k == 0]))
        return S.Axial(n_axes=n)
    raise AssertionError(kind)  # guarded by _check_names


@st.composite
def _synthetic_rope(draw: st.DrawFn, schedules: tuple[str, ...], max_head_dim: int) -> Rope:
    kind = draw(st.sampled_from(schedules))
    head_dim = 2 * draw(st.integers(1, max_head_dim // 2))
    # Proportional zeroes frequencies instead of slicing channels: rotary_dim == head_dim
    rotary_dim = head_dim if kind == "proportional" else 2 * draw(st.integers(1, head_dim // 2))
    if kind == "axial":  # a multiple of 2 pairs at least half the time, so n_axes > 1 occurs
        n_pairs = rotary_dim // 2
        if n_pairs % 2 and rotary_dim + 2 <= head_dim:
            rotary_dim += 2
    base = draw(st.sampled_from([100.0, 10_000.0, 500_000.0, 1e6]) | st.floats(2.0, 1e7))
    layout: Any = draw(st.sampled_from(["half", "interleaved"]))
    scaling = draw(_scaling(kind, rotary_dim, head_dim))
    return Rope(head_dim, base=base, rotary_dim=rotary_dim, layout=layout, scaling=scaling)


def _preset_rope(name: str) -> Rope:
    return Rope.preset(name)  # a per-layer preset builds its default layer type


def ropes(
    *,
    schedules: tuple[str, ...] = SCHEDULES,
    presets: bool = True,
    max_head_dim: int = 256,
) -> st.SearchStrategy[Rope]:
    """Valid :class:`rope_ref.Rope` objects.

    Parameters
    ----------
    schedules : tuple of str
        Names from :data:`SCHEDULES` ("none" is plain RoPE); each draw picks one, with random
        valid parameters, head_dim (even, up to ``max_head_dim``), rotary_dim, base and layout.
    presets : bool
        Also draw the real-model presets (``rope_ref.presets()``) as they are.
    max_head_dim : int
        Largest synthetic head_dim (even, at least 2).

    Returns
    -------
    hypothesis.strategies.SearchStrategy of Rope

    Raises
    ------
    rope_ref.RopeValueError
        An unknown schedule name, or ``max_head_dim`` < 2.
    """
    schedules = _check_names("schedules", schedules, SCHEDULES)
    if max_head_dim < 2:
        raise RopeValueError(f"max_head_dim must be at least 2, got {max_head_dim}")
    synth = _synthetic_rope(schedules, max_head_dim)
    if not presets:
        return synth
    return st.one_of(synth, st.sampled_from(_preset_names()).map(_preset_rope))


@st.composite
def _positions(draw: st.DrawFn, n: int, kinds: tuple[str, ...], max_position: int) -> np.ndarray:
    kind = draw(st.sampled_from(kinds))
    n = max(int(n), 1)
    base = np.arange(n, dtype=np.int64)
    if kind == "arange":
        return base
    if kind == "offset":
        return base + draw(st.integers(0, max(max_position - n, 0)))
    if kind == "packed":  # sequences of unequal lengths, each restarting at 0 (or at a start)
        n_seq = draw(st.integers(1, n))
        cuts = (
            sorted(draw(st.sets(st.integers(1, n - 1), min_size=n_seq - 1, max_size=n_seq - 1)))
            if n > 1
            else []
        )
        edges = [0, *cuts, n]
        out = np.empty(n, dtype=np.int64)
        for a, b in itertools.pairwise(edges):
            start = draw(st.integers(0, max(max_position - (b - a), 0)) | st.just(0))
            out[a:b] = np.arange(b - a) + start
        return out
    if kind == "large":  # near the top of the range, arange or scattered
        lo = max(max_position - 4 * n - 4096, 0)
        if draw(st.booleans()):
            return base + draw(st.integers(lo, max(max_position - n, 0)))
        vals = draw(st.lists(st.integers(lo, max_position), min_size=n, max_size=n))
        return np.asarray(vals, dtype=np.int64)
    if kind == "float":  # real positions (fractional strides, interpolated positions)
        reals = draw(
            st.lists(
                st.floats(0.0, float(max_position), allow_nan=False, allow_infinity=False),
                min_size=n,
                max_size=n,
            )
        )
        return np.asarray(reals, dtype=np.float64)
    raise AssertionError(kind)


def positions(
    n: int | st.SearchStrategy[int] = st.integers(1, 64),  # noqa: B008
    *,
    kinds: tuple[str, ...] = POSITION_KINDS,
    max_position: int = 2**24,
) -> st.SearchStrategy[np.ndarray]:
    """1-D position arrays of length ``n``.

    Parameters
    ----------
    n : int or strategy of int
        The number of tokens.
    kinds : tuple of str
        From :data:`POSITION_KINDS`: ``"arange"`` (0..n-1), ``"offset"`` (arange from a random
        start), ``"packed"`` (several sequences, each restarting, from 0 or a random start),
        ``"large"`` (near ``max_position``, contiguous or scattered), ``"float"`` (real
        positions in [0, max_position]). Integer kinds give int64, ``"float"`` float64.
    max_position : int
        Largest position drawn (default 2**24).

    Returns
    -------
    hypothesis.strategies.SearchStrategy of numpy.ndarray

    Raises
    ------
    rope_ref.RopeValueError
        An unknown kind, or ``max_position`` < 0.
    """
    kinds = _check_names("kinds", kinds, POSITION_KINDS)
    if max_position < 0:
        raise RopeValueError(f"max_position must be >= 0, got {max_position}")
    n_st = n if isinstance(n, st.SearchStrategy) else st.just(int(n))
    return n_st.flatmap(lambda k: _positions(k, kinds, max_position))


@st.composite
def _rope_input(
    draw: st.DrawFn,
    rope_st: st.SearchStrategy[Rope],
    dtypes: tuple[str, ...],
    families: tuple[str, ...],
    kinds: tuple[str, ...],
    max_position: int,
) -> RopeInput:
    rope = draw(rope_st)
    family = draw(st.sampled_from(families))
    dtype = draw(st.sampled_from(dtypes))
    b, h = draw(st.integers(1, 3)), draw(st.integers(1, 4))
    s = draw(st.integers(1, 24))
    scaling = rope.scaling
    if isinstance(scaling, S.XPos):
        # xPos scales pair j by zeta_j ** (+-m / scale_base): keep the factors within e**2 so
        # that float16 outputs stay finite (xPos models run on short windows)
        zeta0 = scaling.gamma / (1.0 + scaling.gamma)
        max_position = min(max_position, int(2.0 * scaling.scale_base / -math.log(zeta0)))
    # dynamic schedules read the length from max(position) + 1: integer positions there
    use = (
        tuple(k for k in kinds if k != "float")
        if scaling is not None and scaling.dynamic
        else kinds
    )
    use = use or ("arange",)
    scheme = rope.axis_scheme  # axes=MRope(...) or the older scaling=MRope(...)
    n_axes = 1 if scheme is None else scheme.n_axes
    if family == "thd":
        tok = [draw(_positions(b * s, use, max_position)) for _ in range(n_axes)]
        x_shape: tuple[int, ...] = (b * s, h, rope.head_dim)
        shaped = [t[:, None] for t in tok]
    elif family == "sd":
        tok = [draw(_positions(s, use, max_position)) for _ in range(n_axes)]
        x_shape = (s, rope.head_dim)
        shaped = tok
    else:
        tok = [
            np.stack([draw(_positions(s, use, max_position)) for _ in range(b)])
            for _ in range(n_axes)
        ]
        if family == "bshd":
            x_shape = (b, s, h, rope.head_dim)
            shaped = [t[:, :, None] for t in tok]
        else:
            x_shape = (b, h, s, rope.head_dim)
            shaped = [t[:, None, :] for t in tok]
    if scheme is not None and scheme.axis_position == "leading":
        pos = np.stack(shaped)
    elif scheme is not None and scheme.axis_position == "trailing":
        pos = np.stack(shaped, axis=-1)
    else:
        pos = shaped[0]
    seed = draw(st.integers(0, 2**32 - 1))
    scale = draw(st.sampled_from([1.0, 1e-3, 100.0]))
    x = (np.random.default_rng(seed).standard_normal(x_shape) * scale).astype(dtype)
    role = draw(st.sampled_from(["query", "key"]))
    return RopeInput(x, pos, rope, family, role)


def rope_inputs(
    *,
    rope: Rope | st.SearchStrategy[Rope] | None = None,
    dtypes: tuple[str, ...] = ("float16", "float32", "float64"),
    families: tuple[str, ...] = _FAMILIES,
    kinds: tuple[str, ...] = POSITION_KINDS,
    max_position: int = 2**24,
) -> st.SearchStrategy[RopeInput]:
    """Whole inputs of ``apply_rope``: :class:`RopeInput` ``(x, positions, rope, family,
    role)`` with NumPy ``x`` and positions broadcasting against ``x.shape[:-1]``.

    Parameters
    ----------
    rope : Rope or strategy of Rope, optional
        A fixed rotation, or a strategy (default :func:`ropes`).
    dtypes : tuple of str
        NumPy dtype names of ``x`` (convert to other libraries, or to bfloat16, yourself).
    families : tuple of str
        Shapes of ``x``: ``"bshd"`` (batch, seq, heads, dim) with positions (b, s, 1),
        ``"bhsd"`` with positions (b, 1, s), ``"thd"`` (packed tokens, heads, dim) with
        positions (t, 1), ``"sd"`` (seq, dim) with positions (s,). Multi-axis schemes get their
        axis (leading for M-RoPE, trailing for axial), each axis drawn independently.
    kinds : tuple of str
        Position kinds (see :func:`positions`); dynamic schedules use integer kinds only.
    max_position : int
        Largest position drawn.

    Returns
    -------
    hypothesis.strategies.SearchStrategy of RopeInput

    Raises
    ------
    rope_ref.RopeValueError
        An unknown family or position kind.
    """
    families = _check_names("families", families, _FAMILIES)
    kinds = _check_names("kinds", kinds, POSITION_KINDS)
    dtypes = _check_names("dtypes", dtypes, ("float16", "float32", "float64"))
    if rope is None:
        rope_st: st.SearchStrategy[Rope] = ropes()
    elif isinstance(rope, Rope):
        rope_st = st.just(rope)
    else:
        rope_st = rope
    return _rope_input(rope_st, dtypes, families, kinds, max_position)


@st.composite
def _hf_config(draw: st.DrawFn, rope_types: tuple[str, ...]) -> dict[str, Any]:
    rope_type = draw(st.sampled_from(rope_types))
    heads = draw(st.sampled_from([1, 4, 8, 32]))
    head_dim = 2 * draw(st.integers(4, 128))
    theta = draw(st.sampled_from([10_000.0, 500_000.0, 1_000_000.0]) | st.floats(100.0, 1e7))
    max_pos = draw(st.sampled_from([2048, 4096, 8192, 32768, 131072]))
    cfg: dict[str, Any] = {"max_position_embeddings": max_pos, "num_attention_heads": heads}
    if draw(st.booleans()):
        cfg["head_dim"] = head_dim
        cfg["hidden_size"] = heads * draw(st.integers(8, 256))  # unrelated when head_dim given
    else:
        cfg["hidden_size"] = heads * head_dim
    rotary_dim = head_dim
    if rope_type not in ("longrope", "su", "mrope") and draw(st.booleans()):
        partial = draw(st.sampled_from([0.25, 0.5, 0.75]))
        if int(head_dim * partial) % 2 == 0 and int(head_dim * partial) >= 2:
            cfg["partial_rotary_factor"] = partial
            rotary_dim = int(head_dim * partial)
    n_pairs = rotary_dim // 2
    params: dict[str, Any] = {}
    if rope_type == "linear" or rope_type == "dynamic":
        params["factor"] = draw(_factor)
    elif rope_type == "yarn":
        params["factor"] = draw(_factor)
        params["original_max_position_embeddings"] = draw(_orig)
        if draw(st.booleans()):
            beta_slow = draw(st.floats(0.5, 4.0))
            params["beta_slow"] = beta_slow
            params["beta_fast"] = draw(st.floats(beta_slow, 64.0))
        if draw(st.booleans()):
            params["attention_factor"] = draw(st.floats(0.5, 2.0))
    elif rope_type in ("longrope", "su"):
        f = st.floats(1.0, 64.0)
        params["short_factor"] = draw(st.lists(f, min_size=n_pairs, max_size=n_pairs))
        params["long_factor"] = draw(st.lists(f, min_size=n_pairs, max_size=n_pairs))
        params["original_max_position_embeddings"] = draw(_orig)
    elif rope_type == "llama3":
        low = draw(st.floats(0.5, 4.0))
        params.update(
            factor=draw(_factor),
            low_freq_factor=low,
            high_freq_factor=draw(st.floats(low * 1.01, 16.0)),
            original_max_position_embeddings=draw(_orig),
        )
    elif rope_type == "mrope":
        cut1 = draw(st.integers(0, n_pairs))
        cut2 = draw(st.integers(cut1, n_pairs))
        params["mrope_section"] = [cut1, cut2 - cut1, n_pairs - cut2]
    if draw(st.booleans()) and rope_type not in ("su", "mrope"):
        # transformers 5: rope_parameters carries rope_theta and rope_type
        cfg["rope_parameters"] = {"rope_type": rope_type, "rope_theta": theta, **params}
    else:
        cfg["rope_theta"] = theta
        if rope_type != "default" or draw(st.booleans()):
            key = "type" if rope_type in ("su", "mrope") or draw(st.booleans()) else "rope_type"
            cfg["rope_scaling"] = {key: rope_type, **params}
    return cfg


def hf_configs(*, rope_types: tuple[str, ...] = ROPE_TYPES) -> st.SearchStrategy[dict[str, Any]]:
    """Valid Hugging Face ``config.json`` dicts (RoPE keys and the sizes they depend on).

    Both spellings occur: transformers 4's ``rope_theta`` + ``rope_scaling`` (with ``type`` or
    ``rope_type``) and transformers 5's ``rope_parameters``; ``head_dim`` given or implied by
    ``hidden_size // num_attention_heads``; ``partial_rotary_factor`` sometimes.

    Parameters
    ----------
    rope_types : tuple of str
        From :data:`ROPE_TYPES` (``"su"`` is the old name of ``"longrope"``; ``"mrope"`` is
        Qwen2-VL's ``mrope_section``).

    Returns
    -------
    hypothesis.strategies.SearchStrategy of dict

    Raises
    ------
    rope_ref.RopeValueError
        An unknown rope type.
    """
    rope_types = _check_names("rope_types", rope_types, ROPE_TYPES)
    return _hf_config(rope_types)
