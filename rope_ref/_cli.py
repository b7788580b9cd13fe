"""The ``rope-ref`` command line: ``info``, ``demo``, ``vectors``, ``check`` and ``decay``.

Exit codes (every subcommand): 0 success (``check``: every case that ran passed); 1 test
failures (``check``: a case failed, raised or timed out); 2 usage errors (bad options, files
that cannot be read or written, a target that cannot be loaded, ``check`` with no case run),
printed as one line on stderr; 3 an internal error of rope_ref (one line; set
``ROPE_REF_DEBUG=1`` for the traceback); 130 interrupted.

``rope-ref check`` calls the target in one of the conventions of
``rope_ref.testing._twins._conventions`` (``rope-ref check --help`` prints each signature),
runs each call in a worker thread under ``--timeout``, and judges every output (q and k)
with ``rope_ref.testing.compare``. A target (function or class) can declare what it
supports, so that the cases outside it are skipped with that reason instead of failing::

    def my_rope(x, positions, rope): ...

    my_rope.rope_ref_supports = {
        "dtypes": ("float32", "bfloat16"),  # battery dtypes it takes
        "layouts": ("half",),               # "half" and/or "interleaved" pairs
        "families": ("bshd", "bhsd"),       # x shapes: "bshd", "bhsd", "thd" (packed)
        "positions": "1d",                  # "1d": no multi-axis (M-RoPE, axial) cases
        "forms": ("arange", "offset"),      # arange, offset, perseq, random, large
        "max_position": 65535,              # the largest position it takes
        "scaling": ("none", "Linear"),      # schedule class names; "none": plain RoPE
        "partial": False,                   # rotary_dim < head_dim
        "backend": "torch",                 # the array library to run it on
    }

Every key is optional; an unknown key or a value of the wrong kind is a usage error.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import importlib.util
import inspect
import json
import math
import os
import platform
import sys
import textwrap
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import array_api_compat
import numpy as np

from .testing._assert import to_numpy

__all__ = ["main"]

EXIT_OK, EXIT_FAILURES, EXIT_USAGE, EXIT_INTERNAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
#: The most points ``rope-ref decay`` computes (about a minute of exact tables).
DECAY_MAX_POINTS = 1_000_000
_DECAY_CHUNK = 1 << 14
_MAX_CONFIG_BYTES = 16 << 20


class _UsageError(Exception):
    """A usage error: printed as one line on stderr, exit code 2."""

    def __init__(self, message: str, *, formatted: bool = False) -> None:
        super().__init__(message)
        self.formatted = formatted


class _Exit(Exception):
    """argparse asked to exit (``--help``): the code to return."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class _Parser(argparse.ArgumentParser):
    """argparse without ``sys.exit`` and with one-line errors."""

    def error(self, message: str) -> Any:
        raise _UsageError(f"{self.prog}: error: {message} (see {self.prog} --help)", formatted=True)

    def exit(self, status: int = 0, message: str | None = None) -> Any:
        if message:
            print(message.rstrip("\n"), file=sys.stderr)
        raise _Exit(status)


# (import name, distribution name, what it provides)
_LIBRARIES = (
    ("numpy", "numpy", "NumPy (the default namespace)"),
    ("array_api_compat", "array-api-compat", "Array-API wrappers (required)"),
    ("array_api_strict", "array-api-strict", "array-api-strict (the purity check)"),
    ("torch", "torch", "PyTorch"),
    ("jax", "jax", "JAX"),
    ("dask", "dask", "Dask (dask.array)"),
    ("cupy", "cupy", "CuPy"),
    ("mpmath", "mpmath", "mpmath (reference values in tests)"),
)


def _version(module: str, dist: str) -> str | None:
    if importlib.util.find_spec(module) is None:
        return None
    for name in (dist, f"{dist}-cuda12x", f"{dist}-cuda13x", f"{dist}-cuda11x"):
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "unknown version"


def _info(_: argparse.Namespace) -> int:
    import rope_ref

    print(f"rope_ref {rope_ref.__version__} (Python {platform.python_version()})")
    print("array libraries (found without importing them):")
    width = max(len(m) for m, _, _ in _LIBRARIES)
    for module, dist, what in _LIBRARIES:
        v = _version(module, dist)
        state = v if v is not None else "not installed"
        print(f"  {module:<{width}}  {state:<16}  {what}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    """Rotate one vector at a large position three ways and show how far plain float64 is."""
    import numpy as np

    import rope_ref as rr

    rope = rr.Rope(args.head_dim, base=args.base)
    m = np.asarray([args.position])
    cos, _sin = rope.cos_sin(m)
    theta = rope.inv_freq()
    naive = np.cos(m[:, None] * theta)  # what float64 code usually does
    x = np.random.default_rng(0).standard_normal((1, args.head_dim))
    y = rr.apply_rope(x, m, rope)
    routes = [rr.apply_rope_complex(x, m, rope), rr.apply_rope_matrix(x, m, rope)]
    j = int(np.argmax(np.abs(naive - cos)[0]))
    print(f"Rope(head_dim={args.head_dim}, base={args.base:g}) at position m = {args.position}")
    print(f"  pair j={j}: theta_j = {float(theta[j])!r}")
    print(f"  cos(m theta_j), rope_ref (within 1 ulp of exact): {float(cos[0, j])!r}")
    print(f"  cos(m theta_j), plain float64 m*theta then cos:   {float(naive[0, j])!r}")
    ulp = float(np.spacing(abs(cos[0, j])))
    print(f"  plain float64 is off by {abs(naive[0, j] - cos[0, j]) / ulp:.3g} ulp")
    print(f"  |R x| - |x| = {float(np.linalg.norm(y) - np.linalg.norm(x)):.3g} (norm preserved)")
    for name, other in zip(("complex form", "matrix form"), routes, strict=True):
        print(f"  elementwise vs {name}: max |diff| = {float(np.max(np.abs(other - y))):.3g}")
    return 0


def _battery_selection(args: argparse.Namespace) -> list[Any]:
    """Cases for ``vectors``: by name, one preset's, or the battery."""
    from ._errors import RopeError
    from .testing._cases import Case, case, cases

    dtypes = tuple(args.dtype) if args.dtype else ("float32",)
    if args.cases:
        try:
            return [case(n) for n in args.cases]
        except RopeError as exc:
            raise _UsageError(f"--cases: {_one_line(exc)}") from None
    if args.preset:
        _check_preset(args.preset)
        d = _preset_head_dim(args.preset)
        return [
            Case(preset=args.preset, positions=f, head_dim=d, dtype=dt)
            for dt in dtypes
            for f in ("arange", "large")
        ]
    return cases(dtypes=dtypes, presets=not args.no_presets)


def _out_dir(path: str) -> Path:
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise _UsageError(f"--out {path}: is a file, not a directory")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _UsageError(f"--out {path}: cannot create it ({exc.strerror})") from None
    if not os.access(p, os.W_OK):
        raise _UsageError(f"--out {path}: not writable")
    return p


def _vectors(args: argparse.Namespace) -> int:
    from .testing._cases import Case
    from .testing._dask_vectors import reject_dask_options, run_vectors_dask
    from .testing._vectors import write_vectors

    if args.backend == "dask":
        return run_vectors_dask(args)
    reject_dask_options(args)
    if args.hf_config and (args.cases or args.preset):
        raise _UsageError("give --hf-config or --cases/--preset, not both")
    if args.hf_config:
        config = _load_config(args.hf_config)
        rope = _config_rope(config, f"--hf-config {args.hf_config}", args.layer_type)
        dtypes = tuple(args.dtype) if args.dtype else ("float32",)
        selected = [
            Case(head_dim=rope.head_dim, positions=f, dtype=dt)
            for dt in dtypes
            for f in ("arange", "large")
        ]
        out = _out_dir(args.out)
        manifest = write_vectors(selected, out, rope=rope, config=config)
    else:
        selected = _battery_selection(args)
        out = _out_dir(args.out)
        manifest = write_vectors(selected, out)
    print(f"wrote {len(manifest['cases'])} cases to {args.out} (manifest.json, .safetensors, .npz)")
    return 0


def _writable_file(option: str, path: str | None) -> None:
    if path is None:
        return
    p = Path(path)
    if p.is_dir():
        raise _UsageError(f"{option} {path}: is a directory")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise _UsageError(f"{option} {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise _UsageError(f"{option} {path}: not writable")


def _decay(args: argparse.Namespace) -> int:
    from ._decay import relative_upper_bound

    step, top = args.step, args.max
    if not (math.isfinite(step) and step > 0):
        raise _UsageError(f"--step must be a positive finite number, got {step:g}")
    if not (math.isfinite(top) and top >= 0):
        raise _UsageError(f"--max must be a finite number >= 0, got {top:g}")
    if args.head_dim < 2 or args.head_dim % 2:
        raise _UsageError(f"--head-dim must be an even integer >= 2, got {args.head_dim}")
    if not (math.isfinite(args.base) and args.base > 0):
        raise _UsageError(f"--base must be a positive finite number, got {args.base:g}")
    n = math.floor(top / step + 0.5) + 1  # r = 0, step, 2 step, ... up to max
    if n > DECAY_MAX_POINTS:
        raise _UsageError(
            f"--max {top:g} with --step {step:g} asks for {n} points, more than the limit of "
            f"{DECAY_MAX_POINTS}: raise --step or lower --max"
        )
    _writable_file("--csv", args.csv)
    _writable_file("--png", args.png)
    plt = None
    if args.png:
        try:
            mpl = importlib.import_module("matplotlib")
            mpl.use("Agg")
            plt = importlib.import_module("matplotlib.pyplot")
        except ImportError:
            raise _UsageError("--png needs matplotlib (pip install matplotlib)") from None
    curve: list[np.ndarray] = []
    with open(args.csv, "w", encoding="utf-8") if args.csv else _Stdout() as fh:
        fh.write("relative_distance,relative_upper_bound\n")
        for lo in range(0, n, _DECAY_CHUNK):  # streamed: memory independent of --max
            r = np.arange(lo, min(n, lo + _DECAY_CHUNK), dtype=np.float64) * step
            b = relative_upper_bound(r, head_dim=args.head_dim, base=args.base)
            fh.write("".join(f"{ri:g},{bi:.6f}\n" for ri, bi in zip(r, b, strict=True)))
            if plt is not None:
                curve.append(b)
    if plt is not None:
        r = np.arange(n, dtype=np.float64) * step
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(r, np.concatenate(curve))
        ax.set_xlabel("relative distance")
        ax.set_ylabel("relative upper bound")
        ax.set_title(f"Long-term decay of RoPE (d={args.head_dim}, base={args.base:g})")
        fig.tight_layout()
        fig.savefig(args.png, dpi=120, metadata={"Software": None})
        plt.close(fig)
    return 0


class _Stdout:
    """stdout as a context manager that is not closed."""

    def __enter__(self) -> Any:
        return sys.stdout

    def __exit__(self, *exc: object) -> None:
        sys.stdout.flush()


# ---------------------------------------------------------------------------------- check
#: The keys a target may declare in ``rope_ref_supports`` (see the check help).
_SUPPORT_KEYS = (
    "dtypes",
    "layouts",
    "families",
    "positions",
    "forms",
    "max_position",
    "scaling",
    "partial",
    "backend",
)

_CLASS_ORDER = {"exact": 0, "lower-precision angles": 1, "within tolerance": 1, "fail": 2}


@dataclass
class _Verdict:
    passed: bool
    cls: str
    max_abs: float
    max_ulp: float
    allowance: float
    ratio: float
    diagnosis: list[str]
    message: str
    phase_error: list[Any]


@dataclass
class _Item:
    label: str
    case: Any
    rope: Any


def _load_target(spec: str) -> Any:
    """Import MODULE and fetch ATTR (dotted) from MODULE:ATTR; usage errors otherwise."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise _UsageError(f"target must be MODULE:FUNCTION (or MODULE:CLASS), got {spec!r}")
    added = "." not in sys.path and "" not in sys.path
    if added:
        sys.path.insert(0, ".")
    try:
        obj: Any = importlib.import_module(module_name)
    except KeyboardInterrupt:
        raise
    except SystemExit as exc:  # a module that calls sys.exit() on import
        raise _UsageError(
            f"cannot load {spec}: importing {module_name} called exit({exc.code!r})"
        ) from None
    except BaseException as exc:  # a module that does not import
        raise _UsageError(f"cannot load {spec}: {type(exc).__name__}: {_one_line(exc)}") from None
    finally:
        if added:
            sys.path.remove(".")
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise _UsageError(
                f"cannot load {spec}: {module_name} has no attribute {attr!r}"
            ) from None
        except Exception as exc:
            raise _UsageError(
                f"cannot load {spec}: {type(exc).__name__}: {_one_line(exc)}"
            ) from None
    if not callable(obj):
        raise _UsageError(f"{spec} is not callable (a {type(obj).__name__})")
    return obj


def _one_line(exc: BaseException) -> str:
    try:
        text = " ".join(str(exc).split())
    except Exception:  # an exception whose __str__ raises
        return f"<{type(exc).__name__} that cannot be printed>"
    return text if len(text) <= 300 else text[:297] + "..."


def _read_supports(target: Any, spec: str) -> dict[str, Any]:
    """The target's ``rope_ref_supports`` declaration, validated (usage errors)."""
    from . import scaling as _scaling
    from .testing._cases import DTYPES, FAMILIES, LAYOUTS, POSITION_FORMS

    try:
        raw = getattr(target, "rope_ref_supports", None)
    except Exception as exc:
        raise _UsageError(
            f"{spec}.rope_ref_supports cannot be read: {type(exc).__name__}: {_one_line(exc)}"
        ) from None
    if raw is None:
        return {}
    where = f"{spec}.rope_ref_supports"
    if not isinstance(raw, dict):
        raise _UsageError(f"{where} must be a dict, got {type(raw).__name__}")
    schedules = ("none", *sorted(n for n in dir(_scaling) if n[:1].isupper()))
    choices = {
        "dtypes": DTYPES,
        "layouts": LAYOUTS,
        "families": FAMILIES,
        "forms": POSITION_FORMS,
        "scaling": schedules,
    }
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in _SUPPORT_KEYS:
            raise _UsageError(f"{where}: unknown key {key!r} (known: {', '.join(_SUPPORT_KEYS)})")
        if key in choices:
            vals = (value,) if isinstance(value, str) else value
            if not isinstance(vals, (tuple, list, set, frozenset)) or not all(
                isinstance(v, str) and v in choices[key] for v in vals
            ):
                raise _UsageError(
                    f"{where}[{key!r}] must be a tuple of names from {choices[key]}, got {value!r}"
                )
            out[key] = tuple(vals)
        elif key == "positions":
            if value not in ("1d", "multi-axis"):
                raise _UsageError(
                    f"{where}['positions'] must be '1d' or 'multi-axis', got {value!r}"
                )
            out[key] = value
        elif key == "max_position":
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise _UsageError(f"{where}['max_position'] must be an int >= 0, got {value!r}")
            out[key] = value
        elif key == "partial":
            if not isinstance(value, bool):
                raise _UsageError(f"{where}['partial'] must be True or False, got {value!r}")
            out[key] = value
        else:  # backend
            if value not in _NAMESPACES:
                raise _UsageError(
                    f"{where}['backend'] must be one of {sorted(_NAMESPACES)}, got {value!r}"
                )
            out[key] = value
    return out


def _axis_scheme(rope: Any) -> Any:
    """The multi-axis scheme of ``rope`` (``axes=`` or the older ``scaling=MRope``), or None."""
    from .testing._cases import axis_scheme

    return axis_scheme(rope)


def _declined(sup: dict[str, Any], c: Any, rope: Any) -> str | None:
    """Why the target's declaration excludes this case (None when it does not)."""
    if not sup:
        return None
    sc = rope.scaling
    checks = (
        ("dtypes", c.dtype, "dtypes"),
        ("layouts", rope.layout, "layouts"),
        ("families", c.family, "shape families"),
        ("forms", c.positions, "position forms"),
        ("scaling", "none" if sc is None else type(sc).__name__, "schedules"),
    )
    for key, value, what in checks:
        if key in sup and value not in sup[key]:
            return f"the target declares {what} {', '.join(sup[key])} (rope_ref_supports)"
    if sup.get("positions") == "1d" and _axis_scheme(rope) is not None:
        return "the target declares 1-D positions only (rope_ref_supports)"
    if sup.get("partial") is False and rope.rotary_dim != rope.head_dim:
        return "the target declares no partial rotary (rope_ref_supports)"
    if "max_position" in sup and int(np.max(np.abs(c.token_positions()))) > sup["max_position"]:
        return f"the target declares positions up to {sup['max_position']} (rope_ref_supports)"
    return None


_FRAMEWORK_ORDER = (
    ("torch", "torch"),
    ("jax", "jax"),
    ("cupy", "cupy"),
    ("dask", "dask"),
    ("array_api_strict", "strict"),
)


def _detect_backend(target: Any) -> tuple[str, str]:
    """The array library the target's code uses: the modules its globals (or, for a class, its
    bases' modules) refer to. torch, JAX, CuPy, Dask, array-api-strict before NumPy."""
    import types

    roots: set[str] = set()
    obj = inspect.unwrap(target) if callable(target) else target
    mro = (
        obj.__mro__
        if isinstance(obj, type)
        else type(obj).__mro__
        if not (inspect.isfunction(obj) or inspect.ismethod(obj) or inspect.isbuiltin(obj))
        else ()
    )
    for klass in mro:
        roots.add(str(getattr(klass, "__module__", "")).split(".")[0])
    mod_name = str(getattr(obj, "__module__", "") or "")
    roots.add(mod_name.split(".")[0])
    func = getattr(obj, "__func__", obj)
    scopes = [getattr(func, "__globals__", None)]
    mod = sys.modules.get(mod_name)
    if mod is not None:
        scopes.append(vars(mod))
    for scope in scopes:
        for value in list((scope or {}).values()):
            try:
                if isinstance(value, types.ModuleType):
                    roots.add(value.__name__.split(".")[0])
                elif isinstance(value, type) or callable(value):
                    roots.add(str(getattr(value, "__module__", "") or "").split(".")[0])
            except Exception:  # objects that fail on attribute access tell nothing
                continue
    for root, backend in _FRAMEWORK_ORDER:
        if root in roots:
            return backend, f"follows the target: its code uses {root}"
    return "numpy", "the target uses no other array library"


def _choose_backend(
    args: argparse.Namespace, conv: Any, target: Any, sup: dict[str, Any]
) -> tuple[str, str]:
    if args.backend != "auto":
        return args.backend, "--backend"
    if "backend" in sup:
        return sup["backend"], "declared by the target (rope_ref_supports)"
    if conv.backend is not None:
        return conv.backend, f"the {conv.name} convention runs {conv.backend} modules"
    try:
        return _detect_backend(target)
    except Exception:  # an object that defeats inspection: NumPy, say so
        return "numpy", "the target could not be inspected"


def _load_config(path: str) -> dict[str, Any]:
    p = Path(path)
    if not p.exists():
        raise _UsageError(f"--hf-config {path}: no such file")
    if p.is_dir():
        raise _UsageError(f"--hf-config {path}: is a directory, not a config.json")
    try:
        with p.open("rb") as fh:
            raw = fh.read(_MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise _UsageError(f"--hf-config {path}: cannot read it ({exc.strerror})") from None
    if len(raw) > _MAX_CONFIG_BYTES:
        raise _UsageError(f"--hf-config {path}: larger than {_MAX_CONFIG_BYTES} bytes")
    try:
        config = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise _UsageError(f"--hf-config {path}: not valid JSON ({_one_line(exc)})") from None
    if not isinstance(config, dict):
        raise _UsageError(
            f"--hf-config {path}: must hold a JSON object, got {type(config).__name__}"
        )
    return config


def _config_rope(config: dict[str, Any], where: str, layer_type: str | None) -> Any:
    from ._errors import RopeError
    from ._rope import Rope

    try:
        return Rope.from_hf_config(config, layer_type=layer_type)
    except (RopeError, ValueError, TypeError) as exc:
        raise _UsageError(f"{where}: {_one_line(exc)}") from None


def _check_preset(name: str) -> None:
    import difflib

    from ._presets import presets

    if name not in presets():
        close = difflib.get_close_matches(name, presets(), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise _UsageError(
            f'--preset {name!r} is not a preset{hint}; `python -c "import rope_ref; '
            'print(rope_ref.presets())"` lists them'
        )


def _selection(args: argparse.Namespace) -> tuple[list[_Item], dict[str, Any] | None]:
    """The cases to run, each with the Rope it is judged against, and the HF config used."""
    from ._errors import RopeError
    from ._presets import preset_info
    from .testing._cases import FAMILIES, POSITION_FORMS, Case, case, cases

    dtypes = tuple(args.dtype) if args.dtype else ("float32",)
    given = [
        o
        for o, v in (
            ("--cases", args.cases),
            ("--preset", args.preset),
            ("--hf-config", getattr(args, "hf_config", None)),
        )
        if v
    ]
    if len(given) > 1:
        raise _UsageError(
            f"give at most one of --cases, --preset, --hf-config (got {' and '.join(given)})"
        )
    if args.cases:
        items = []
        for n in args.cases:
            try:
                c = case(n)
            except RopeError as exc:
                raise _UsageError(f"--cases: {_one_line(exc)}") from None
            items.append(_Item(c.name, c, c.rope()))
        return items, None
    if getattr(args, "hf_config", None):
        config = _load_config(args.hf_config)
        rope = _config_rope(config, f"--hf-config {args.hf_config}", args.layer_type)
        items = []
        for dt in dtypes:
            for fam in FAMILIES:
                for form in POSITION_FORMS:
                    c = Case(family=fam, head_dim=rope.head_dim, positions=form, dtype=dt)
                    label = (
                        f"{fam}-b{c.batch}-s{c.seq}-h{c.heads}-d{rope.head_dim}-config-"
                        f"pos={form}-{dt}"
                    )
                    items.append(_Item(label, c, rope))
        return items, config
    if args.preset:
        _check_preset(args.preset)
        config = preset_info(args.preset)["config"]
        rope = (
            _config_rope(config, f"--preset {args.preset}", args.layer_type)
            if (args.layer_type)
            else None
        )
        items = []
        for dt in dtypes:
            for fam in FAMILIES:
                for form in POSITION_FORMS:
                    c = Case(
                        preset=args.preset,
                        family=fam,
                        positions=form,
                        head_dim=_preset_head_dim(args.preset),
                        dtype=dt,
                    )
                    r = rope if rope is not None else c.rope()
                    items.append(_Item(c.name, c, r))
        return items, config
    return [
        _Item(c.name, c, c.rope()) for c in cases(dtypes=dtypes, presets=not args.no_presets)
    ], None


def _preset_head_dim(name: str) -> int:
    from .testing._cases import _preset_dim

    return _preset_dim(name)


def _hf_objects(target: Any, config: dict[str, Any] | None, where: str) -> dict[str, Any]:
    """The transformers config object and the module's apply function (hf-module)."""
    if config is None:
        raise _UsageError(
            "--convention hf-module needs --hf-config config.json or --preset NAME "
            "(the config the rotary-embedding class is built from)"
        )
    try:
        import transformers
    except ImportError:
        raise _UsageError(
            "--convention hf-module needs transformers (pip install transformers)"
        ) from None
    base = getattr(transformers, "PreTrainedConfig", None) or transformers.PretrainedConfig
    mod = sys.modules.get(getattr(target, "__module__", ""), None)
    scope = vars(mod) if mod is not None else {}
    found = [
        v for v in scope.values() if isinstance(v, type) and issubclass(v, base) and v is not base
    ]
    prefix = getattr(target, "__name__", "").replace("RotaryEmbedding", "")
    preferred = [v for v in found if v.__name__ == f"{prefix}Config"]
    cfg_cls: Any = (preferred or found)[0] if (preferred or found) else None
    try:
        if cfg_cls is None and isinstance(config.get("model_type"), str):
            obj = transformers.AutoConfig.for_model(config["model_type"], **config)
        elif cfg_cls is None:
            obj = base(**config)
        else:
            obj = cfg_cls(**config)
    except Exception as exc:
        name = getattr(cfg_cls, "__name__", "a transformers config")
        raise _UsageError(
            f"{where}: cannot make {name} from it: {type(exc).__name__}: {_one_line(exc)}"
        ) from None
    apply = scope.get("apply_rotary_pos_emb")
    if apply is not None:
        try:
            params = list(inspect.signature(apply).parameters.values())
        except (TypeError, ValueError):
            params = []
        named = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        var = any(p.kind == p.VAR_POSITIONAL for p in params)
        if params and not var and len(named) < 4:
            apply = None  # another signature (GPT-J's (tensor, sin, cos)): use the twin
    return {"hf_config": obj, "hf_apply": apply}


def _json_path(path: str | None) -> None:
    _writable_file("--json", path)


def _run_timed(thunk: Any, timeout: float) -> tuple[str, Any, threading.Thread]:
    """Call ``thunk`` in a daemon worker thread; ("ok", value), ("error", exception) or
    ("timeout", None). SystemExit and KeyboardInterrupt raised by the target are its
    errors; a call past the timeout is abandoned (a thread cannot be killed: it keeps
    running in the background until it returns or the process exits)."""
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["value"] = thunk()
        except BaseException as exc:  # the target's SystemExit/KeyboardInterrupt included
            box["error"] = exc

    t = threading.Thread(target=work, name="rope-ref-check-case", daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        return "timeout", None, t
    if "error" in box:
        return "error", box["error"], t
    return "ok", box.get("value"), t


def _judge(
    got: np.ndarray,
    want: np.ndarray,
    *,
    dtype: str,
    rope: Any,
    pos: Any,
    x: Any,
    role: str,
    strict: bool,
) -> _Verdict:
    """The verdict on one output: ``rope_ref.testing.compare`` (per-element error model,
    accuracy class, diagnosis by fitting); the older tolerance if compare is unavailable."""
    compare: Any
    try:
        from .testing._compare import compare
    except ImportError:  # pragma: no cover - older layouts
        compare = None
    if compare is not None:
        try:
            rep = compare(
                got, want, dtype=dtype, rope=rope, positions=pos, x=x, role=role, strict=strict
            )
        except Exception as exc:  # pragma: no cover - a bug in the judge, not the target
            return _legacy_judge(
                got,
                want,
                dtype=dtype,
                rope=rope,
                pos=pos,
                strict=strict,
                note=f"compare failed ({type(exc).__name__}: {exc})",
            )
        diag = _explanations(getattr(rep, "diagnosis", ()) or ())
        return _Verdict(
            bool(rep.passed),
            str(rep.accuracy_class),
            float(rep.max_abs_error),
            float(rep.max_ulp),
            float(rep.atol),
            float(rep.worst_ratio),
            diag,
            str(rep.message),
            [list(p) for p in getattr(rep, "phase_error", ())],
        )
    return _legacy_judge(got, want, dtype=dtype, rope=rope, pos=pos, strict=strict, note="")


def _explanations(hyps: Any) -> list[str]:
    """The hypotheses that explain the data (the fitted fraction at the diagnosis's own
    threshold), else those that explain at least 5% of it, marked "partly"."""
    try:
        from .testing._diagnose import EXPLAINED
    except ImportError:  # pragma: no cover
        EXPLAINED = 0.9
    full, part = [], []
    for h in hyps:
        text = str(getattr(h, "text", None) or getattr(h, "name", h))
        explained = getattr(h, "explained", None)
        if explained is None or explained >= EXPLAINED:
            full.append(text)
        elif explained >= 0.05:
            part.append(f"partly: {text}")
    return full or part


def _legacy_judge(
    got: np.ndarray, want: np.ndarray, *, dtype: str, rope: Any, pos: Any, strict: bool, note: str
) -> _Verdict:  # pragma: no cover - fallback
    from .testing._assert import default_tolerance
    from .testing._compare import ulps as _ulps

    err = np.abs(got - want)
    rtol, atol_unit = default_tolerance(dtype, rope=rope, positions=pos)
    atol = atol_unit * float(np.max(np.abs(want), initial=0.0))
    allow = atol + rtol * np.abs(want)
    ok = bool(np.all((err <= allow) | (got == want)))
    ulp = float(np.max(_ulps(got, want, dtype), initial=0.0))
    cls = "exact" if ulp <= 2 else ("lower-precision angles" if ok else "fail")
    passed = cls == "exact" if strict else ok
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = float(np.max(np.where(allow > 0, err / allow, np.inf * (err > 0)), initial=0.0))
    return _Verdict(passed, cls, float(np.max(err, initial=0.0)), ulp, atol, ratio, [], note, [])


def _check(args: argparse.Namespace) -> int:
    from .testing._cases import with_axes  # noqa: F401  (imported for the adapters)
    from .testing._twins._common import CaseInputs, Unfit
    from .testing._twins._conventions import CONVENTIONS

    if not args.timeout > 0 or not math.isfinite(args.timeout):
        raise _UsageError(f"--timeout must be a positive number of seconds, got {args.timeout}")
    if args.table_rows < 1:
        raise _UsageError(f"--table-rows must be >= 1, got {args.table_rows}")
    _json_path(args.json)
    conv = CONVENTIONS[args.convention]
    items, config = _selection(args)
    target = _load_target(args.target)
    sup = _read_supports(target, args.target)
    options: dict[str, Any] = {}
    if conv.name == "hf-module":
        where = f"--hf-config {args.hf_config}" if args.hf_config else f"--preset {args.preset}"
        options = _hf_objects(target, config, where)
    backend, why = _choose_backend(args, conv, target, sup)
    try:
        xp = importlib.import_module(_NAMESPACES[backend])
    except ImportError as exc:
        raise _UsageError(f"backend {backend} is not available: {_one_line(exc)}") from None
    if backend == "jax":
        importlib.import_module("jax").config.update("jax_enable_x64", True)

    print(
        f"rope-ref check {args.target}: convention {conv.name}, backend {backend} ({why})"
        + (", strict" if args.strict else "")
    )
    print(f"  calls {conv.signature}")
    width = max([len(i.label) for i in items] + [4])
    head = (
        f"{'case':<{width}}  {'out':<3}  {'max abs err':>11}  {'max ulp':>9}  "
        f"{'allowance':>9}  {'class':<22}  result"
    )
    print(head)
    rows: list[dict[str, Any]] = []
    skipped: dict[str, list[str]] = {}
    counts = {"passed": 0, "failed": 0, "errors": 0, "timeouts": 0}
    abandoned: list[threading.Thread] = []
    progress = sys.stderr.isatty() and len(items) > 20
    for n, item in enumerate(items):
        if progress:
            done = int(30 * n / len(items))
            print(
                f"\r[{'#' * done}{'.' * (30 - done)}] {n}/{len(items)}",
                end="",
                file=sys.stderr,
                flush=True,
            )
        c, rope = item.case, item.rope
        row: dict[str, Any] = {"case": item.label}
        rows.append(row)
        why_skip = None
        if not hasattr(xp, c.dtype):
            why_skip = f"{backend} has no {c.dtype}"
        else:
            why_skip = _declined(sup, c, rope)
        call = None
        if why_skip is None:
            x, _, _ = c.data(xp, rope=rope)
            k, _, _ = c.data(xp, rope=rope, role="key")
            ci = CaseInputs(
                family=c.family,
                rope=rope,
                xp=array_api_compat.array_namespace(x),
                device=None,
                x=x,
                k=k,
                tok=c.token_positions(),
                cu_seqlens=c.cu_seqlens(),
                row_limit=args.table_rows,
                options=options,
            )
            try:
                call = conv.prepare(target, ci)
            except Unfit as unfit:
                why_skip = f"{conv.name} convention: {unfit}"
            except Exception as exc:  # rope_ref could not build this call: say so, go on
                counts["errors"] += 1
                text = f"preparing the call failed: {type(exc).__name__}: {_one_line(exc)}"
                row["result"], row["why"] = "error", text
                print(f"{item.label:<{width}}  ERROR {text}")
                continue
        if why_skip is not None or call is None:
            row["result"], row["why"] = "skipped", why_skip
            skipped.setdefault(str(why_skip), []).append(item.label)
            continue
        status, value, thread = _run_timed(call.run, args.timeout)
        outs: dict[str, Any] = {}
        if status == "ok":
            try:
                outs = call.unpack(value)
            except Exception as exc:
                status, value = "error", exc
        if status == "timeout":
            abandoned.append(thread)
            counts["timeouts"] += 1
            row["result"] = "timeout"
            row["why"] = f"no result within --timeout {args.timeout:g} s (call abandoned)"
            print(f"{item.label:<{width}}  TIMEOUT after {args.timeout:g} s (abandoned)")
            continue
        if status == "error":
            counts["errors"] += 1
            text = f"{type(value).__name__}: {_one_line(value)}"
            if isinstance(value, SystemExit):
                text = f"SystemExit({value.code!r}) raised inside the target"
            row["result"], row["why"] = "error", text
            print(f"{item.label:<{width}}  ERROR {text}")
            continue
        verdicts: dict[str, _Verdict] = {}
        problems: dict[str, str] = {}
        for name in conv.outputs:
            role = "query" if name == "q" else "key"
            want = c.expected(rope=rope, role=role)
            try:
                got = to_numpy(outs[name]).astype(np.float64)
            except Exception as exc:
                problems[name] = f"output {name} is not an array ({type(exc).__name__})"
                continue
            if got.shape != want.shape:
                problems[name] = f"output {name} has shape {got.shape}, expected {want.shape}"
                continue
            verdicts[name] = _judge(
                got,
                want,
                dtype=c.dtype,
                rope=rope,
                pos=c.positions_for(rope),
                x=c.x(role=role),
                role=role,
                strict=args.strict,
            )
        failing = set(problems) | {n for n, v in verdicts.items() if not v.passed}
        bad = [n for n in conv.outputs if n in failing]
        shown_name = {"q": "x"} if conv.outputs == ("q",) else {}  # one output: "x"
        row["outputs"] = {
            shown_name.get(n, n): {
                "passed": v.passed,
                "class": v.cls,
                "max_abs_err": v.max_abs,
                "max_ulp": v.max_ulp,
                "allowance": v.allowance,
                "worst_ratio": v.ratio,
                "diagnosis": v.diagnosis,
                "phase_error": v.phase_error,
            }
            for n, v in verdicts.items()
        }
        if call.note:
            row["note"] = call.note
        if problems:
            row["problems"] = problems
        row["result"] = "fail" if bad else "ok"
        counts["failed" if bad else "passed"] += 1
        if verdicts:
            shown = max(
                verdicts,
                key=lambda n: (
                    not verdicts[n].passed,
                    _CLASS_ORDER.get(verdicts[n].cls, 2),
                    verdicts[n].ratio,
                ),
            )
            v = verdicts[shown]
            # the worst output's numbers at the row level too (the report's earlier fields)
            row.update(
                {
                    "max_abs_err": v.max_abs,
                    "max_ulp": v.max_ulp,
                    "atol": v.allowance,
                    "class": v.cls,
                    "diagnosis": v.diagnosis,
                }
            )
            line = (
                f"{shown_name.get(shown, shown):<3}  {v.max_abs:>11.3e}  "
                f"{v.max_ulp:>9.3g}  {v.allowance:>9.2e}  {v.cls:<22}  "
            )
        else:
            shown, v, line = "", None, f"{'':<3}  {'':>11}  {'':>9}  {'':>9}  {'':<22}  "
        if not bad:
            line += "ok"
        else:
            line += "FAIL " + ",".join(shown_name.get(n, n) for n in bad)
            first = bad[0]
            if first in problems:
                line += f": {problems[first]}"
            elif verdicts[first].diagnosis:
                text = verdicts[first].diagnosis[0]
                more = len(verdicts[first].diagnosis) - 1
                line += ": " + (text if len(text) <= 160 else text[:157] + "...")
                line += f" (+{more} more in --json)" if more else ""
            else:
                line += ": no usual mistake explains it"
        print(f"{item.label:<{width}}  {line}")
    if progress:
        print("\r" + " " * 60 + "\r", end="", file=sys.stderr)
    n_skip = sum(len(v) for v in skipped.values())
    if skipped:
        print(f"skipped {n_skip} of {len(items)} cases:")
        for reason, names in sorted(skipped.items(), key=lambda kv: -len(kv[1])):
            print(f"  {len(names):>4}  {reason} (e.g. {names[0]})")
    ran = counts["passed"] + counts["failed"] + counts["errors"] + counts["timeouts"]
    failed = ran - counts["passed"]
    extra = [
        f"{counts[k]} {k.rstrip('s') if counts[k] == 1 else k}"
        for k in ("errors", "timeouts")
        if counts[k]
    ]
    summary = f"{counts['passed']} passed, {failed} failed"
    if extra:
        summary += f" (of which {', '.join(extra)})".replace("timeouts", "timed out").replace(
            "timeout", "timed out"
        )
    if n_skip:
        summary += f", {n_skip} skipped"
    print(summary)
    alive = [t for t in abandoned if t.is_alive()]
    if alive:
        print(
            f"note: {len(alive)} timed-out call(s) still running in the background were abandoned",
            file=sys.stderr,
        )
    code = 1 if failed else (0 if ran else 2)
    if ran == 0:
        print(
            "rope-ref check: no case ran (every case was skipped): nothing was checked",
            file=sys.stderr,
        )
    if args.json:
        report = {
            "target": args.target,
            "convention": conv.name,
            "signature": conv.signature,
            "backend": backend,
            "backend_reason": why,
            "strict": args.strict,
            "timeout_s": args.timeout,
            "summary": {**counts, "skipped": n_skip, "ran": ran, "exit_code": code},
            "skipped": {r: names for r, names in skipped.items()},
            "cases": rows,
        }
        try:
            Path(args.json).write_text(
                json.dumps(report, indent=1, default=str) + "\n", encoding="utf-8"
            )
        except OSError as exc:
            raise _UsageError(f"--json {args.json}: cannot write it ({exc.strerror})") from None
    return code


# Array-API namespaces per library (compat wrappers where the library needs one), imported
# by name only when the command asks for them
_NAMESPACES = {
    "numpy": "array_api_compat.numpy",
    "torch": "array_api_compat.torch",
    "jax": "jax.numpy",
    "cupy": "array_api_compat.cupy",
    "dask": "array_api_compat.dask.array",
    "strict": "array_api_strict",
}

_CHECK_EPILOG = """\
conventions (--convention) and what each calls:
{conventions}

cases: the battery (rope_ref.testing.cases: shapes bshd/bhsd/thd, position forms arange,
offset, perseq, random and large (near 2**20), layouts, partial rotary, head sizes, every
preset's schedule) in the dtypes of --dtype; --preset NAME or --hf-config FILE: that model's
RoPE in every shape and position form; --cases NAME...: those cases. Each convention runs
every case it can express (channel permutations, transposes and per-sequence calls are exact)
and judges every output (q and k); the others are listed as skipped, grouped by reason.

verdicts: rope_ref.testing.compare: per-element error model; accuracy class "exact" or
"lower-precision angles" (angles formed in float32); --strict passes only "exact". Failures
are diagnosed (which common mistake explains the data).

a target can declare what it supports (cases outside it are skipped with that reason):
  fn.rope_ref_supports = {{
      "dtypes": ("float32", "bfloat16"),   # battery dtypes
      "layouts": ("half",),                # "half" and/or "interleaved"
      "families": ("bshd", "bhsd"),        # shapes: "bshd", "bhsd", "thd" (packed)
      "positions": "1d",                   # "1d": no multi-axis (M-RoPE, axial) cases
      "forms": ("arange", "offset"),       # arange, offset, perseq, random, large
      "max_position": 65535,               # largest position it takes
      "scaling": ("none", "Linear"),       # schedule class names; "none" for plain RoPE
      "partial": False,                    # rotary_dim < head_dim
      "backend": "torch",                  # the array library to run it on
  }}
(on a function or a class; unknown keys are a usage error).

backend: --backend auto (the default) follows the target: the class conventions run torch;
a function whose module uses torch (jax, cupy, dask) runs on it; otherwise NumPy.

timeouts: each call runs in a worker thread; a call past --timeout is reported as timed out
and abandoned, and the run goes on. SystemExit and KeyboardInterrupt raised by the target
are that case's error.

exit codes: 0 every case that ran passed; 1 a case failed, raised or timed out; 2 usage
error (one line on stderr) or no case ran; 3 internal error; 130 interrupted.
"""


def _parser() -> argparse.ArgumentParser:
    from .testing._twins._conventions import CONVENTIONS

    fmt = argparse.RawDescriptionHelpFormatter
    p = _Parser(
        prog="rope-ref",
        description="rope_ref: the golden reference for rotary position embedding.",
        epilog="exit codes: 0 success, 1 test failures (check), 2 usage error, 3 internal "
        "error, 130 interrupted. `rope-ref COMMAND --help` for each command.",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    info = sub.add_parser(
        "info",
        help="list the array libraries found and their versions",
        description="List the array libraries found (without importing them) and their versions.",
    )
    info.set_defaults(func=_info)
    demo = sub.add_parser(
        "demo",
        help="exact tables against plain float64 at one position",
        description="Rotate one vector at a large position three ways and "
        "show how far plain float64 angles are from the exact tables.",
    )
    demo.add_argument(
        "--position",
        type=int,
        default=2**31 - 1,
        help="the position m (default: 2**31 - 1 = 2147483647)",
    )
    demo.add_argument("--head-dim", type=int, default=128, help="channels per head (default: 128)")
    demo.add_argument(
        "--base", type=float, default=10_000.0, help="the RoPE base b (default: 10000)"
    )
    demo.set_defaults(func=_demo)

    def battery_options(q: argparse.ArgumentParser) -> None:
        q.add_argument(
            "--preset",
            metavar="NAME",
            help="only this preset's cases (rope_ref.presets() lists them; default: "
            "the whole battery)",
        )
        q.add_argument(
            "--cases",
            nargs="+",
            metavar="NAME",
            help="these cases, by name (rope_ref.testing.cases() names them; "
            "default: the whole battery)",
        )
        q.add_argument(
            "--dtype",
            nargs="+",
            choices=["float32", "float16", "bfloat16", "float64"],
            help="the dtypes of the cases (default: float32)",
        )
        q.add_argument(
            "--no-presets",
            action="store_true",
            help="leave out the preset cases (default: included)",
        )
        q.add_argument(
            "--layer-type",
            metavar="TYPE",
            help="the layer type of a per-layer-type config (default: the config's own default)",
        )

    vec = sub.add_parser(
        "vectors",
        help="write golden vector files (safetensors, npz, manifest)",
        description="Write golden vector files: x, positions and the exact "
        "result of each case (safetensors and npz) and manifest.json.",
    )
    battery_options(vec)
    vec.add_argument(
        "--hf-config",
        metavar="FILE",
        help="a config.json to build the Rope from (default: none; the cases' own)",
    )
    vec.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        help="output directory (required; created if missing)",
    )
    from .testing._dask_vectors import add_dask_arguments

    add_dask_arguments(vec)  # --backend {numpy,dask}, --scheduler, --tokens, ...
    vec.set_defaults(func=_vectors)

    conv_lines = "\n".join(
        textwrap.fill(
            c.signature,
            width=92,
            initial_indent=f"  {c.name:<11} ",
            subsequent_indent=" " * 14,
            break_on_hyphens=False,
        )
        + (f"\n  {'':<11} e.g. {c.example}" if c.example else "")
        for c in CONVENTIONS.values()
    )
    chk = sub.add_parser(
        "check",
        help="run the battery against an implementation",
        description="Run the battery of cases against an implementation and judge every\n"
        "output against the exact reference.",
        epilog=_CHECK_EPILOG.format(conventions=conv_lines),
        formatter_class=fmt,
    )
    chk.add_argument(
        "target",
        help="MODULE:FUNCTION or MODULE:CLASS (imported with the current directory on sys.path)",
    )
    chk.add_argument(
        "--convention",
        default="rope_ref",
        choices=list(CONVENTIONS),
        help="how the target is called (default: rope_ref, fn(x, positions, rope));"
        " signatures below",
    )
    chk.add_argument(
        "--backend",
        default="auto",
        choices=["auto", *sorted(_NAMESPACES)],
        help="array library the inputs are made in (default: auto, follows the target)",
    )
    chk.add_argument(
        "--strict",
        action="store_true",
        help='pass only the "exact" accuracy class (default: "lower-precision angles" passes too)',
    )
    chk.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="per-case limit; a call past it is reported and abandoned (default: 60)",
    )
    chk.add_argument(
        "--table-rows",
        type=int,
        default=1 << 17,
        metavar="N",
        help="the most rows of a per-position table the check builds (flash, "
        "vllm, torchtune; beyond it flash/vllm tables start at the smallest "
        "position) (default: 131072)",
    )
    chk.add_argument(
        "--hf-config",
        metavar="FILE",
        help="judge that config's RoPE (hf-module: build the class from it) (default: none)",
    )
    chk.add_argument("--json", metavar="PATH", help="also write the report as JSON (default: none)")
    battery_options(chk)
    chk.set_defaults(func=_check)

    dec = sub.add_parser(
        "decay",
        help="print the long-term decay curve (RoFormer Figure 2)",
        description="The relative upper bound of RoFormer eq. (37) at "
        "distances 0, step, 2 step, ... up to max, as CSV (streamed).",
    )
    dec.add_argument("--head-dim", type=int, default=128, help="channels per head (default: 128)")
    dec.add_argument("--base", type=float, default=10_000.0, help="the RoPE base (default: 10000)")
    dec.add_argument(
        "--max",
        type=float,
        default=256.0,
        help=f"the largest distance (default: 256; at most {DECAY_MAX_POINTS} points)",
    )
    dec.add_argument(
        "--step", type=float, default=1.0, help="the distance between points, > 0 (default: 1)"
    )
    dec.add_argument(
        "--csv", metavar="PATH", help="write the curve as CSV (default: print it to stdout)"
    )
    dec.add_argument(
        "--png", metavar="PATH", help="plot it as Figure 2 (needs matplotlib; default: no plot)"
    )
    dec.set_defaults(func=_decay)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``rope-ref`` command; returns the exit code (never raises, never exits).

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        0 success, 1 test failures, 2 usage error, 3 internal error, 130 interrupted.

    Examples
    --------
    >>> from rope_ref._cli import main
    >>> main(["check", "rope_ref.examples:exact", "--cases",
    ...       "bshd-b2-s16-h4-d128-half-r128-base=10000-pos=arange-float64"])  # doctest: +ELLIPSIS
    rope-ref check ...
    1 passed, 0 failed
    0
    """
    from ._errors import RopeError

    try:
        parser = _parser()
        args = parser.parse_args(argv)
        if getattr(args, "func", None) is None:
            parser.print_help()
            return EXIT_USAGE
        return int(args.func(args))
    except _Exit as e:
        return e.code
    except _UsageError as e:
        print(str(e) if e.formatted else f"rope-ref: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("rope-ref: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except RopeError as e:  # an argument rope_ref itself rejects (demo --head-dim 3, ...)
        print(f"rope-ref: error: {_one_line(e)}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as e:  # a bug in rope_ref: one line, no traceback (unless asked)
        if os.environ.get("ROPE_REF_DEBUG"):
            raise
        print(
            f"rope-ref: internal error: {type(e).__name__}: {_one_line(e)} (set "
            "ROPE_REF_DEBUG=1 for the traceback)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
