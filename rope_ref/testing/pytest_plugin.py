"""pytest plugin: the rope_ref battery and array namespaces as fixtures.

Installed with rope-ref (entry point ``pytest11``), or enabled explicitly with
``-p rope_ref.testing.pytest_plugin`` or ``pytest_plugins = ["rope_ref.testing.pytest_plugin"]``.

Fixtures
--------
``rope_case``
    A test that asks for it runs once per case of the battery (:func:`rope_ref.testing.cases`),
    with the case name as the test id, e.g.
    ``test_kernel[bshd-b2-s16-h4-d128-half-r128-base=10000-pos=arange-float32]``. Narrow it
    with the marker ``@pytest.mark.rope_ref(dtype=..., layout=..., positions=..., preset=...,
    family=...)`` (each a value or a sequence of values; ``preset=True`` keeps only the
    real-model presets, ``preset=False`` none of them) on the test, its class or its module,
    and from the command line with ``--rope-ref-cases PATTERN`` (a glob on the case name, or a
    plain substring; repeat the option to keep cases matching any of the patterns).
``xp``
    An Array-API namespace, once per library: NumPy, array-api-strict, PyTorch
    (``array_api_compat.torch``), JAX (``jax.numpy``, with ``jax_enable_x64`` turned on so
    float64 exists), Dask and CuPy. Libraries that are not installed (CuPy: or without a
    usable GPU) are skipped with the reason. ``--rope-ref-xp numpy,torch`` keeps only those.
    A test asking for both ``xp`` and ``rope_case`` is skipped for dtypes the namespace lacks
    (bfloat16 on NumPy, float16 on array-api-strict).

The plugin imports no array framework and not hypothesis when pytest loads it: the battery is
built only for tests that ask for ``rope_case``, and a framework is imported only when an
``xp`` parameter is set up. A project whose own conftest defines ``xp`` or ``rope_case``
keeps its own fixture; the plugin then leaves that name alone.

Examples
--------
A test module of a kernel project::

    import pytest
    import rope_ref as rr
    from rope_ref.testing import assert_close

    @pytest.mark.rope_ref(dtype="float32", layout="half")
    def test_my_kernel(rope_case):
        x, positions, rope = rope_case.data()
        assert_close(my_kernel(x, positions, rope), rr.apply_rope(x, positions, rope),
                     rope=rope, positions=positions, x=x)

    def test_any_library(xp, rope_case):
        x, positions, rope = rope_case.data(xp)
        ...
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from typing import Any

import pytest

__all__ = ["MARKER_KEYS", "XP_NAMES", "select_cases"]

#: keys the ``rope_ref`` marker accepts
MARKER_KEYS = ("dtype", "layout", "positions", "preset", "family")

#: namespaces the ``xp`` fixture runs over, in this order
XP_NAMES = ("numpy", "array_api_strict", "torch", "jax", "dask", "cupy")

_MARKER_DOC = (
    "rope_ref(dtype=..., layout=..., positions=..., preset=..., family=...): narrow the "
    "rope_case battery (each a value or a sequence of values; preset=True/False: only or no "
    "real-model presets)"
)


# --------------------------------------------------------------------------- hooks
def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("rope-ref", "rope_ref battery and array namespaces")
    group.addoption(
        "--rope-ref-cases",
        action="append",
        default=[],
        metavar="PATTERN",
        help="keep only rope_case cases whose name matches PATTERN (glob, or substring when "
        "PATTERN has no * ? [); repeat to keep cases matching any",
    )
    group.addoption(
        "--rope-ref-xp",
        default=None,
        metavar="NAMES",
        help="comma-separated namespaces for the xp fixture (default: all of "
        + ", ".join(XP_NAMES)
        + ")",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", _MARKER_DOC)


def _ours(metafunc: pytest.Metafunc, name: str) -> bool:
    """Whether ``name`` resolves to this plugin's fixture (not a project's own)."""
    defs = getattr(metafunc, "_arg2fixturedefs", {}).get(name)
    if not defs:
        return False
    func = getattr(defs[-1], "func", None)
    return getattr(func, "__module__", None) == __name__


def _marker_filters(metafunc: pytest.Metafunc) -> dict[str, Any]:
    """Marker keywords, the closest marker winning per key (function over class over module)."""
    merged: dict[str, Any] = {}
    for mark in metafunc.definition.iter_markers("rope_ref"):  # closest first
        if mark.args:
            raise pytest.UsageError(
                f"{metafunc.definition.nodeid}: @pytest.mark.rope_ref takes keywords only "
                f"({', '.join(MARKER_KEYS)}), got positional {mark.args!r}"
            )
        for key, value in mark.kwargs.items():
            if key not in MARKER_KEYS:
                raise pytest.UsageError(
                    f"{metafunc.definition.nodeid}: @pytest.mark.rope_ref got unknown keyword "
                    f"{key!r}; expected one of {', '.join(MARKER_KEYS)}"
                )
            merged.setdefault(key, value)
    return merged


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    names = metafunc.fixturenames
    if "rope_case" in names and _ours(metafunc, "rope_case"):
        filters = _marker_filters(metafunc)
        patterns = list(metafunc.config.getoption("rope_ref_cases") or [])
        try:
            chosen = select_cases(patterns=patterns, **filters)
        except ValueError as e:
            raise pytest.UsageError(f"{metafunc.definition.nodeid}: {e}") from None
        if chosen:
            metafunc.parametrize("rope_case", chosen, ids=[c.name for c in chosen], indirect=True)
        else:
            what = ", ".join(f"{k}={v!r}" for k, v in filters.items())
            if patterns:
                what = ", ".join([*([what] if what else []), f"--rope-ref-cases {patterns!r}"])
            metafunc.parametrize(
                "rope_case",
                [
                    pytest.param(
                        None, marks=pytest.mark.skip(reason=f"no battery case matches {what}")
                    )
                ],
                ids=["no-case"],
                indirect=True,
            )
    if "xp" in names and _ours(metafunc, "xp"):
        wanted = _xp_names(metafunc.config.getoption("rope_ref_xp"))
        metafunc.parametrize("xp", wanted, ids=wanted, indirect=True)


# --------------------------------------------------------------------------- fixtures
@pytest.fixture
def rope_case(request: pytest.FixtureRequest) -> Any:
    """One case of the rope_ref battery (a :class:`rope_ref.testing.Case`).

    ``case.data(xp)`` gives ``(x, positions, rope)``; ``case.expected()`` the exact result
    rounded to the case's dtype; ``case.name`` rebuilds it with ``rope_ref.testing.case``.
    """
    c = getattr(request, "param", None)
    if c is None:
        raise pytest.UsageError("rope_case is parametrized by the rope_ref plugin only")
    if "xp" in request.fixturenames:
        xp = request.getfixturevalue("xp")
        if not hasattr(xp, c.dtype):
            pytest.skip(f"{getattr(xp, '__name__', xp)} has no {c.dtype}")
    return c


@pytest.fixture
def xp(request: pytest.FixtureRequest) -> Any:
    """An Array-API namespace (one parameter per library; missing libraries are skipped)."""
    name = getattr(request, "param", None)
    if name is None:
        raise pytest.UsageError("xp is parametrized by the rope_ref plugin only")
    return _load_namespace(name)


# --------------------------------------------------------------------------- helpers
def _xp_names(option: str | None) -> list[str]:
    if not option:
        return list(XP_NAMES)
    wanted = [w.strip() for w in option.split(",") if w.strip()]
    unknown = [w for w in wanted if w not in XP_NAMES]
    if unknown:
        raise pytest.UsageError(
            f"--rope-ref-xp: unknown namespace(s) {', '.join(unknown)}; "
            f"expected names from {', '.join(XP_NAMES)}"
        )
    return wanted


def _load_namespace(name: str) -> Any:
    """Import the library named ``name`` now and return its Array-API namespace, or skip."""
    try:
        if name == "numpy":
            import numpy

            return numpy
        if name == "array_api_strict":
            import array_api_strict

            return array_api_strict
        if name == "torch":
            import array_api_compat.torch

            return array_api_compat.torch
        if name == "jax":
            import jax

            jax_config: Any = jax.config  # untyped in jax
            jax_config.update("jax_enable_x64", True)
            import jax.numpy

            return jax.numpy
        if name == "dask":
            import array_api_compat.dask.array

            return array_api_compat.dask.array
        if name == "cupy":
            import cupy

            try:
                n = cupy.cuda.runtime.getDeviceCount()
            except Exception as e:  # no driver, no device
                pytest.skip(f"cupy: no usable GPU ({type(e).__name__}: {e})")
            if n < 1:
                pytest.skip("cupy: no GPU")
            return cupy
    except ImportError as e:
        pytest.skip(f"{name} is not installed ({e})")
    raise pytest.UsageError(f"unknown namespace {name!r}")  # guarded by _xp_names


def _as_set(key: str, value: Any) -> set[Any]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        return {value}
    out = set(value)
    if not out:
        raise ValueError(f"@pytest.mark.rope_ref({key}=...) got an empty sequence")
    return out


def select_cases(
    *,
    patterns: Iterable[str] = (),
    dtype: Any = None,
    layout: Any = None,
    positions: Any = None,
    preset: Any = None,
    family: Any = None,
) -> list[Any]:
    """The battery cases that the plugin would run for these filters.

    Parameters
    ----------
    patterns : iterable of str
        Keep cases whose name matches any pattern: a glob (``fnmatch``) when the pattern holds
        ``*``, ``?`` or ``[``, else a substring. Empty: no name filter.
    dtype, layout, positions, family : str or sequence of str, optional
        Keep cases with these values (``layout`` is the rotation's layout, presets included).
        ``positions`` also takes the far forms ``"2p24"`` and ``"2p31"`` (positions just
        below 2**24 and 2**31), which the battery includes only when named here.
    preset : str, sequence of str, or bool, optional
        Preset names; ``True`` keeps only preset cases, ``False`` only the synthetic ones.

    Returns
    -------
    list of rope_ref.testing.Case

    Raises
    ------
    ValueError
        A filter value that no case can have (names the key, the value and the valid ones).
    """
    from ._cases import DTYPES, FAMILIES, FAR_POSITION_FORMS, POSITION_FORMS, cases

    valid: dict[str, tuple[Any, ...]] = {
        "dtype": DTYPES,
        "layout": ("half", "interleaved"),
        "positions": POSITION_FORMS + FAR_POSITION_FORMS,
        "family": FAMILIES,
    }
    want: dict[str, set[Any]] = {}
    for key, value in (
        ("dtype", dtype),
        ("layout", layout),
        ("positions", positions),
        ("family", family),
    ):
        if value is None:
            continue
        vals = _as_set(key, value)
        bad = sorted(str(v) for v in vals if v not in valid[key])
        if bad:
            raise ValueError(
                f"@pytest.mark.rope_ref({key}=...) got {', '.join(map(repr, bad))}; "
                f"expected one of {', '.join(valid[key])}"
            )
        want[key] = vals
    preset_set: set[str] | None = None
    if preset is not None and not isinstance(preset, bool):
        from .._presets import presets as preset_names

        preset_set = _as_set("preset", preset)
        known = preset_names()
        bad = sorted(str(p) for p in preset_set if p not in known)
        if bad:
            raise ValueError(
                f"@pytest.mark.rope_ref(preset=...) got {', '.join(map(repr, bad))}; "
                f"expected True, False, or preset names from {', '.join(known)}"
            )
    pats = list(patterns)
    # the far forms (just below 2**24 and 2**31) join the battery only when asked for by name
    far = bool(want.get("positions", set()) & set(FAR_POSITION_FORMS))
    out = []
    for c in cases(far_positions=far):
        if "dtype" in want and c.dtype not in want["dtype"]:
            continue
        if "positions" in want and c.positions not in want["positions"]:
            continue
        if "family" in want and c.family not in want["family"]:
            continue
        if preset is True and c.preset is None:
            continue
        if preset is False and c.preset is not None:
            continue
        if preset_set is not None and c.preset not in preset_set:
            continue
        if "layout" in want and c.rope().layout not in want["layout"]:
            continue
        if pats and not any(_matches(c.name, p) for p in pats):
            continue
        out.append(c)
    return out


def _matches(name: str, pattern: str) -> bool:
    if any(ch in pattern for ch in "*?["):
        return fnmatch.fnmatchcase(name, pattern)
    return pattern in name
