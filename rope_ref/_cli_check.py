"""``rope-ref check``: the battery against a user's implementation.

The steps, one function each: resolve the options (:func:`_resolve`: target, declaration,
convention options, backend, cases), run one case through the convention (:func:`_run_case`:
skip reasons, preparing the call, the call under ``--timeout``), judge its outputs
(:func:`_judge_outputs`, with :func:`rope_ref.testing.compare`), and report (one line per
case, the skips grouped by reason, the summary, ``--json``).

A target (function or class) can declare what it supports, so that the cases outside it are
skipped with that reason instead of failing::

    def my_rope(x, positions, rope): ...

    my_rope.rope_ref_supports = {
        "dtypes": ("float32", "bfloat16"),  # battery dtypes it takes
        "layouts": ("half",),               # "half" and/or "interleaved" pairs
        "families": ("bshd", "bhsd"),       # x shapes: "bshd", "bhsd", "thd" (packed)
        "positions": "1d",                  # "1d": no multi-axis (M-RoPE, axial) cases
        "forms": ("arange", "offset"),      # position forms (rope_ref.testing._cases)
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
import inspect
import json
import math
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import array_api_compat
import numpy as np

from ._cli_common import (
    EXIT_FAILURES,
    EXIT_OK,
    EXIT_USAGE,
    NAMESPACES,
    UsageError,
    battery_cases,
    check_preset,
    config_rope,
    dtypes_of,
    load_config,
    one_line,
    position_forms,
    preset_head_dim,
    reject_ignored_options,
    selected_forms,
    writable_file,
)
from .testing._assert import to_numpy

__all__ = ["check"]

#: The keys a target may declare in ``rope_ref_supports`` (see the check help).
SUPPORT_KEYS = (
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

#: The longest single ``Thread.join`` (``--timeout`` may be longer: joined in slices).
_JOIN_SLICE_S = 3600.0

_CLASS_ORDER = {"exact": 0, "lower-precision angles": 1, "within tolerance": 1, "fail": 2}

_FRAMEWORK_ORDER = (
    ("torch", "torch"),
    ("jax", "jax"),
    ("cupy", "cupy"),
    ("dask", "dask"),
    ("array_api_strict", "strict"),
)


@dataclass
class Verdict:
    """The verdict on one output of one case."""

    passed: bool
    cls: str
    max_abs: float
    max_ulp: float
    allowance: float
    ratio: float
    diagnosis: list[str]
    message: str
    phase_error: list[Any]
    #: where a failure lies (compare's "failing rotary pairs / indices along axis" lines)
    breakdown: list[str] = field(default_factory=list)
    #: where the allowance cannot see a one-position error, or lets any output pass
    blind_spots: list[str] = field(default_factory=list)
    #: the NaN and infinite elements where the reference is finite ("" when none)
    non_finite: str = ""
    #: with non-finite elements: whether the other elements fail too
    finite_fails: bool = False


@dataclass
class Item:
    """One case to run: its label, the battery case and the Rope it is judged against."""

    label: str
    case: Any
    rope: Any


@dataclass
class Setup:
    """Everything a run needs, resolved from the options before any case runs."""

    spec: str
    target: Any
    conv: Any
    items: list[Item]
    sup: dict[str, Any]
    options: dict[str, Any]
    backend: str
    why: str
    xp: Any
    strict: bool
    timeout: float
    table_rows: int
    json_path: str | None
    width: int = 4


@dataclass
class Outcome:
    """What one case came to: ``kind`` is passed, failed, errors, timeouts or skipped."""

    kind: str
    row: dict[str, Any]
    line: str | None = None
    thread: threading.Thread | None = None


@dataclass
class Tally:
    """The run so far: the JSON rows, the skips by reason, the counts, abandoned threads."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped: dict[str, list[str]] = field(default_factory=dict)
    counts: dict[str, int] = field(
        default_factory=lambda: {"passed": 0, "failed": 0, "errors": 0, "timeouts": 0}
    )
    abandoned: list[threading.Thread] = field(default_factory=list)

    def add(self, item: Item, outcome: Outcome) -> None:
        self.rows.append(outcome.row)
        if outcome.kind == "skipped":
            self.skipped.setdefault(str(outcome.row["why"]), []).append(item.label)
            return
        self.counts[outcome.kind] += 1
        if outcome.kind == "timeouts" and outcome.thread is not None:
            self.abandoned.append(outcome.thread)

    @property
    def n_skipped(self) -> int:
        return sum(len(v) for v in self.skipped.values())

    @property
    def ran(self) -> int:
        return sum(self.counts.values())

    @property
    def failed(self) -> int:
        return self.ran - self.counts["passed"]


# ---------------------------------------------------------------------- the command
def check(args: argparse.Namespace) -> int:
    """``rope-ref check``: the exit code (0 every case that ran passed, 1 a case failed,
    raised or timed out, 2 no case ran); usage errors are raised as :class:`UsageError`."""
    setup = _resolve(args)
    _print_header(setup)
    tally = Tally()
    progress = sys.stderr.isatty() and len(setup.items) > 20
    for n, item in enumerate(setup.items):
        if progress:
            _print_progress(n, len(setup.items))
        outcome = _run_case(setup, item)
        tally.add(item, outcome)
        if outcome.line is not None:
            print(f"{item.label:<{setup.width}}  {outcome.line}")
    if progress:
        print("\r" + " " * 60 + "\r", end="", file=sys.stderr)
    code = _print_summary(tally, len(setup.items))
    if setup.json_path:
        _write_json(setup, tally, code)
    return code


# ---------------------------------------------------------------------- options
def _resolve(args: argparse.Namespace) -> Setup:
    """Validate the options, load the cases and the target, choose the backend (in this
    order, so that the first usage error is the one reported)."""
    from .testing._twins._conventions import CONVENTIONS

    if not args.timeout > 0 or not math.isfinite(args.timeout):
        raise UsageError(f"--timeout must be a positive number of seconds, got {args.timeout}")
    if args.table_rows < 1:
        raise UsageError(f"--table-rows must be >= 1, got {args.table_rows}")
    writable_file("--json", args.json)
    conv = CONVENTIONS[args.convention]
    items, config = selection(args)
    target = load_target(args.target)
    sup = read_supports(target, args.target)
    options = _convention_options(args, conv, target, config)
    backend, why = choose_backend(args, conv, target, sup)
    xp = _namespace(backend)
    return Setup(
        spec=args.target,
        target=target,
        conv=conv,
        items=items,
        sup=sup,
        options=options,
        backend=backend,
        why=why,
        xp=xp,
        strict=args.strict,
        timeout=args.timeout,
        table_rows=args.table_rows,
        json_path=args.json,
        width=max([len(i.label) for i in items] + [4]),
    )


def _convention_options(
    args: argparse.Namespace, conv: Any, target: Any, config: dict[str, Any] | None
) -> dict[str, Any]:
    """Extra inputs a convention needs: the transformers config object and the module's
    apply function where the target is built from a config (``Convention.needs_config``)."""
    if not conv.needs_config:
        return {}
    where = f"--hf-config {args.hf_config}" if args.hf_config else f"--preset {args.preset}"
    return hf_objects(target, config, where, conv.name)


def _namespace(backend: str) -> Any:
    """The Array-API namespace of ``backend`` (JAX with 64-bit types on)."""
    try:
        xp = importlib.import_module(NAMESPACES[backend])
    except ImportError as exc:
        raise UsageError(f"backend {backend} is not available: {one_line(exc)}") from None
    if backend == "jax":
        importlib.import_module("jax").config.update("jax_enable_x64", True)
    return xp


# ---------------------------------------------------------------------- the target
def load_target(spec: str) -> Any:
    """Import MODULE and fetch ATTR (dotted) from MODULE:ATTR; usage errors otherwise."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise UsageError(f"target must be MODULE:FUNCTION (or MODULE:CLASS), got {spec!r}")
    obj = _import_target_module(spec, module_name)
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise UsageError(
                f"cannot load {spec}: {module_name} has no attribute {attr!r}"
            ) from None
        except Exception as exc:
            raise UsageError(f"cannot load {spec}: {type(exc).__name__}: {one_line(exc)}") from None
    if not callable(obj):
        raise UsageError(f"{spec} is not callable (a {type(obj).__name__})")
    return obj


def _import_target_module(spec: str, module_name: str) -> Any:
    """``import module_name`` with the current directory on ``sys.path`` (as ``python -m``
    has it); whatever the import raises or exits with is a usage error."""
    added = "." not in sys.path and "" not in sys.path
    if added:
        sys.path.insert(0, ".")
    try:
        return importlib.import_module(module_name)
    except KeyboardInterrupt:
        raise
    except SystemExit as exc:  # a module that calls sys.exit() on import
        raise UsageError(
            f"cannot load {spec}: importing {module_name} called exit({exc.code!r})"
        ) from None
    except BaseException as exc:  # a module that does not import
        raise UsageError(f"cannot load {spec}: {type(exc).__name__}: {one_line(exc)}") from None
    finally:
        if added:
            sys.path.remove(".")


def read_supports(target: Any, spec: str) -> dict[str, Any]:
    """The target's ``rope_ref_supports`` declaration, validated (usage errors)."""
    try:
        raw = getattr(target, "rope_ref_supports", None)
    except Exception as exc:
        raise UsageError(
            f"{spec}.rope_ref_supports cannot be read: {type(exc).__name__}: {one_line(exc)}"
        ) from None
    if raw is None:
        return {}
    where = f"{spec}.rope_ref_supports"
    if not isinstance(raw, dict):
        raise UsageError(f"{where} must be a dict, got {type(raw).__name__}")
    choices = _support_choices()
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in SUPPORT_KEYS:
            raise UsageError(f"{where}: unknown key {key!r} (known: {', '.join(SUPPORT_KEYS)})")
        if key in choices:
            out[key] = _declared_names(where, key, value, choices[key])
        else:
            out[key] = _declared_value(where, key, value)
    return out


def _support_choices() -> dict[str, tuple[str, ...]]:
    """The names each list-valued ``rope_ref_supports`` key may hold."""
    from . import scaling as _scaling
    from .testing._cases import DTYPES, FAMILIES, LAYOUTS

    schedules = ("none", *sorted(n for n in dir(_scaling) if n[:1].isupper()))
    return {
        "dtypes": DTYPES,
        "layouts": LAYOUTS,
        "families": FAMILIES,
        "forms": position_forms(),
        "scaling": schedules,
    }


def _declared_names(where: str, key: str, value: Any, choices: tuple[str, ...]) -> tuple[str, ...]:
    vals = (value,) if isinstance(value, str) else value
    if not isinstance(vals, (tuple, list, set, frozenset)) or not all(
        isinstance(v, str) and v in choices for v in vals
    ):
        raise UsageError(f"{where}[{key!r}] must be a tuple of names from {choices}, got {value!r}")
    return tuple(vals)


def _declared_value(where: str, key: str, value: Any) -> Any:
    """A scalar ``rope_ref_supports`` entry: positions, max_position, partial or backend."""
    if key == "positions":
        if value not in ("1d", "multi-axis"):
            raise UsageError(f"{where}['positions'] must be '1d' or 'multi-axis', got {value!r}")
    elif key == "max_position":
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise UsageError(f"{where}['max_position'] must be an int >= 0, got {value!r}")
    elif key == "partial":
        if not isinstance(value, bool):
            raise UsageError(f"{where}['partial'] must be True or False, got {value!r}")
    elif value not in NAMESPACES:  # backend
        raise UsageError(f"{where}['backend'] must be one of {sorted(NAMESPACES)}, got {value!r}")
    return value


def declined(sup: dict[str, Any], c: Any, rope: Any) -> str | None:
    """Why the target's declaration excludes this case (None when it does not)."""
    from .testing._cases import axis_scheme

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
    if sup.get("positions") == "1d" and axis_scheme(rope) is not None:
        return "the target declares 1-D positions only (rope_ref_supports)"
    if sup.get("partial") is False and rope.rotary_dim != rope.head_dim:
        return "the target declares no partial rotary (rope_ref_supports)"
    if "max_position" in sup and int(np.max(np.abs(c.token_positions()))) > sup["max_position"]:
        return f"the target declares positions up to {sup['max_position']} (rope_ref_supports)"
    return None


# ---------------------------------------------------------------------- backend
def _module_roots(obj: Any) -> set[str]:
    """The top-level packages ``obj``'s code refers to: its (and its class's bases')
    modules, and the modules and callables in its globals and its module's namespace."""
    import types

    roots: set[str] = set()
    plain = inspect.isfunction(obj) or inspect.ismethod(obj) or inspect.isbuiltin(obj)
    mro = obj.__mro__ if isinstance(obj, type) else () if plain else type(obj).__mro__
    for klass in mro:
        roots.add(str(getattr(klass, "__module__", "")).split(".")[0])
    mod_name = str(getattr(obj, "__module__", "") or "")
    roots.add(mod_name.split(".")[0])
    scopes = [getattr(getattr(obj, "__func__", obj), "__globals__", None)]
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
    return roots


def detect_backend(target: Any) -> tuple[str, str]:
    """The array library the target's code uses: the modules its globals (or, for a class, its
    bases' modules) refer to. torch, JAX, CuPy, Dask, array-api-strict before NumPy."""
    roots = _module_roots(inspect.unwrap(target) if callable(target) else target)
    for root, backend in _FRAMEWORK_ORDER:
        if root in roots:
            return backend, f"follows the target: its code uses {root}"
    return "numpy", "the target uses no other array library"


def choose_backend(
    args: argparse.Namespace, conv: Any, target: Any, sup: dict[str, Any]
) -> tuple[str, str]:
    """The backend and why: --backend, the declaration, the convention, the target's code."""
    if args.backend != "auto":
        return args.backend, "--backend"
    if "backend" in sup:
        return sup["backend"], "declared by the target (rope_ref_supports)"
    if conv.backend is not None:
        return conv.backend, f"the {conv.name} convention runs {conv.backend} modules"
    try:
        return detect_backend(target)
    except Exception:  # an object that defeats inspection: NumPy, say so
        return "numpy", "the target could not be inspected"


# ---------------------------------------------------------------------- cases
def selection(args: argparse.Namespace) -> tuple[list[Item], dict[str, Any] | None]:
    """The cases to run, each with the Rope it is judged against, and the HF config used:
    by name (--cases), a config's (--hf-config) or a preset's (--preset) in every shape
    family, or the battery; every position form unless --positions names some."""
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
        raise UsageError(
            f"give at most one of --cases, --preset, --hf-config (got {' and '.join(given)})"
        )
    forms = selected_forms(args, position_forms())
    reject_ignored_options(args)
    if args.cases:
        return _named_items(args.cases), None
    if getattr(args, "hf_config", None):
        return _config_items(args, forms)
    if args.preset:
        return _preset_items(args, forms)
    return [Item(c.name, c, c.rope()) for c in battery_cases(args, forms)], None


def _named_items(names: list[str]) -> list[Item]:
    from ._errors import RopeError
    from .testing._cases import case

    items = []
    for n in names:
        try:
            c = case(n)
        except RopeError as exc:
            raise UsageError(f"--cases: {one_line(exc)}") from None
        items.append(Item(c.name, c, c.rope()))
    return items


def _config_items(
    args: argparse.Namespace, forms: tuple[str, ...]
) -> tuple[list[Item], dict[str, Any]]:
    """--hf-config: that config's Rope in every shape family and each of ``forms``."""
    from .testing._cases import FAMILIES, Case

    config = load_config(args.hf_config)
    rope = config_rope(config, f"--hf-config {args.hf_config}", args.layer_type)
    items = []
    for dt in dtypes_of(args):
        for fam in FAMILIES:
            for form in forms:
                c = Case(family=fam, head_dim=rope.head_dim, positions=form, dtype=dt)
                label = (
                    f"{fam}-b{c.batch}-s{c.seq}-h{c.heads}-d{rope.head_dim}-config-pos={form}-{dt}"
                )
                items.append(Item(label, c, rope))
    return items, config


def _preset_items(
    args: argparse.Namespace, forms: tuple[str, ...]
) -> tuple[list[Item], dict[str, Any]]:
    """--preset: that model's cases in every shape family and each of ``forms``."""
    from ._presets import preset_info
    from .testing._cases import FAMILIES, Case

    check_preset(args.preset)
    config = preset_info(args.preset)["config"]
    rope = (
        config_rope(config, f"--preset {args.preset}", args.layer_type) if args.layer_type else None
    )
    d = preset_head_dim(args.preset)
    items = []
    for dt in dtypes_of(args):
        for fam in FAMILIES:
            for form in forms:
                c = Case(preset=args.preset, family=fam, positions=form, head_dim=d, dtype=dt)
                items.append(Item(c.name, c, rope if rope is not None else c.rope()))
    return items, config


def hf_objects(
    target: Any, config: dict[str, Any] | None, where: str, convention: str
) -> dict[str, Any]:
    """The transformers config object and the module's apply function (a convention with
    ``needs_config``)."""
    if config is None:
        raise UsageError(
            f"--convention {convention} needs --hf-config config.json or --preset NAME "
            "(the config the rotary-embedding class is built from)"
        )
    try:
        import transformers
    except ImportError:
        raise UsageError(
            f"--convention {convention} needs transformers (pip install transformers)"
        ) from None
    mod = sys.modules.get(getattr(target, "__module__", ""), None)
    scope = vars(mod) if mod is not None else {}
    obj = _hf_config_object(transformers, target, scope, config, where)
    return {"hf_config": obj, "hf_apply": _hf_apply(scope)}


def _hf_config_object(
    transformers: Any, target: Any, scope: dict[str, Any], config: dict[str, Any], where: str
) -> Any:
    """The target's module's config class (``<Prefix>Config`` first) made from ``config``."""
    base = getattr(transformers, "PreTrainedConfig", None) or transformers.PretrainedConfig
    found = [
        v for v in scope.values() if isinstance(v, type) and issubclass(v, base) and v is not base
    ]
    prefix = getattr(target, "__name__", "").replace("RotaryEmbedding", "")
    preferred = [v for v in found if v.__name__ == f"{prefix}Config"]
    cfg_cls: Any = (preferred or found)[0] if (preferred or found) else None
    try:
        if cfg_cls is None and isinstance(config.get("model_type"), str):
            rest = {k: v for k, v in config.items() if k != "model_type"}
            return transformers.AutoConfig.for_model(config["model_type"], **rest)
        return (base if cfg_cls is None else cfg_cls)(**config)
    except Exception as exc:
        name = getattr(cfg_cls, "__name__", "a transformers config")
        raise UsageError(
            f"{where}: cannot make {name} from it: {type(exc).__name__}: {one_line(exc)}"
        ) from None


def _hf_apply(scope: dict[str, Any]) -> Any:
    """The module's ``apply_rotary_pos_emb`` when it takes (q, k, cos, sin, ...), else None
    (another signature, GPT-J's (tensor, sin, cos): the twin is used)."""
    apply = scope.get("apply_rotary_pos_emb")
    if apply is None:
        return None
    try:
        params = list(inspect.signature(apply).parameters.values())
    except (TypeError, ValueError):
        params = []
    named = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    var = any(p.kind == p.VAR_POSITIONAL for p in params)
    return None if params and not var and len(named) < 4 else apply


# ---------------------------------------------------------------------- one case
def _run_case(setup: Setup, item: Item) -> Outcome:
    """Run one case through the convention: skipped, an error, a timeout or a verdict."""
    from .testing._twins._common import Unfit

    row: dict[str, Any] = {"case": item.label}
    why_skip = _skip_reason(setup, item)
    if why_skip is not None:
        return _skipped(row, why_skip)
    try:
        ci = _case_inputs(setup, item)
        call = setup.conv.prepare(setup.target, ci)
    except Unfit as unfit:
        return _skipped(row, f"{setup.conv.name} convention: {unfit}")
    except Exception as exc:  # rope_ref could not build this call: say so, go on
        text = f"preparing the call failed: {type(exc).__name__}: {one_line(exc)}"
        return _error(row, text)
    if call is None:
        return _skipped(row, None)
    status, value, thread = _call(call, setup.timeout, ci.x)
    if status == "timeout":
        row["result"] = "timeout"
        row["why"] = f"no result within --timeout {setup.timeout:g} s (call abandoned)"
        return Outcome("timeouts", row, f"TIMEOUT after {setup.timeout:g} s (abandoned)", thread)
    if status == "error":
        return _error(row, _error_text(value))
    if status == "foreign":
        return _verdict_outcome(setup, item, row, None, call.note, ci.x, foreign=value)
    return _verdict_outcome(setup, item, row, value, call.note, ci.x)


def _skip_reason(setup: Setup, item: Item) -> str | None:
    if not hasattr(setup.xp, item.case.dtype):
        return f"{setup.backend} has no {item.case.dtype}"
    return declined(setup.sup, item.case, item.rope)


def _skipped(row: dict[str, Any], why: str | None) -> Outcome:
    row["result"], row["why"] = "skipped", why
    return Outcome("skipped", row)


def _error(row: dict[str, Any], text: str) -> Outcome:
    row["result"], row["why"] = "error", text
    return Outcome("errors", row, f"ERROR {text}")


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, SystemExit):
        return f"SystemExit({exc.code!r}) raised inside the target"
    return f"{type(exc).__name__}: {one_line(exc)}"


def _case_inputs(setup: Setup, item: Item) -> Any:
    """The case's queries and keys in the backend, with its positions, for the adapter."""
    from .testing._twins._common import CaseInputs

    c, rope = item.case, item.rope
    x, _, _ = c.data(setup.xp, rope=rope)
    k, _, _ = c.data(setup.xp, rope=rope, role="key")
    return CaseInputs(
        family=c.family,
        rope=rope,
        xp=array_api_compat.array_namespace(x),
        device=None,
        x=x,
        k=k,
        tok=c.token_positions(),
        cu_seqlens=c.cu_seqlens(),
        row_limit=setup.table_rows,
        options=setup.options,
    )


def _call(call: Any, timeout: float, like: Any) -> tuple[str, Any, threading.Thread]:
    """Run the prepared call under the timeout and unpack its result: ("ok", outputs),
    ("error", exception), ("timeout", None), or ("foreign", why) when what the target returned
    holds an array of another library or device than ``like`` (the case's x): that is checked
    before unpacking, which could convert it (NumPy and JAX functions take other arrays)."""
    status, value, thread = run_timed(call.run, timeout)
    if status == "ok":
        foreign = _foreign_result(value, like)
        if foreign:
            return "foreign", foreign, thread
        try:
            value = call.unpack(value)
        except Exception as exc:
            status, value = "error", exc
    return status, value, thread


def _foreign_result(value: Any, like: Any) -> str:
    """Why ``value`` (an array, or a tuple or list of them) is not in ``like``'s array library
    and on its device, or "" when it is (anything not an array is left to the unpacking)."""
    parts = value if isinstance(value, (tuple, list)) else [value]
    for part in parts:
        why = foreign_array(part, like, "the target returned")
        if why:
            return why
    return ""


def _library(a: Any) -> str:
    """The name of ``a``'s array library (torch, numpy, jax, cupy, dask, array_api_strict)."""
    name = str(getattr(array_api_compat.array_namespace(a), "__name__", "?"))
    name = name.replace("array_api_compat.", "")
    return name.split(".")[0]


def foreign_array(out: Any, like: Any, what: str) -> str:
    """Why ``out`` breaks apply_rope's contract (the result is in x's array library and on
    x's device; the device is compared for torch and CuPy), or "" when it keeps it (or is not
    an array, which is another check's business)."""
    from . import _compat

    if not _compat.is_array(out) or not _compat.is_array(like):
        return ""
    try:
        ns_out = array_api_compat.array_namespace(out)
        ns_like = array_api_compat.array_namespace(like)
    except TypeError:  # pragma: no cover - is_array said both are arrays
        return ""
    if ns_out is not ns_like:
        return (
            f"{what} a {_library(out)} array for {_library(like)} inputs: the result must be "
            f"in x's array library ({_library(like)})"
        )
    if array_api_compat.is_torch_array(like) or array_api_compat.is_cupy_array(like):
        dev_out, dev_like = array_api_compat.device(out), array_api_compat.device(like)
        if dev_out != dev_like:
            return (
                f"{what} an array on device {dev_out} for inputs on {dev_like}: the result "
                f"must be on x's device ({dev_like})"
            )
    return ""


def run_timed(thunk: Any, timeout: float) -> tuple[str, Any, threading.Thread]:
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
    deadline = time.monotonic() + timeout
    while t.is_alive():  # in slices: join cannot wait past the platform's clock limit
        left = deadline - time.monotonic()
        if left <= 0:
            break
        t.join(min(left, _JOIN_SLICE_S))
    if t.is_alive():
        return "timeout", None, t
    if "error" in box:
        return "error", box["error"], t
    return "ok", box.get("value"), t


# ---------------------------------------------------------------------- verdicts
def _verdict_outcome(
    setup: Setup,
    item: Item,
    row: dict[str, Any],
    outs: Any,
    note: str,
    like: Any,
    foreign: str = "",
) -> Outcome:
    """Judge every output of the convention (``like``: the case's x, whose array library and
    device the outputs must have; ``foreign``: why the result as returned has not, which
    fails every output); the row and the line of the case."""
    outputs = setup.conv.outputs
    shown_name = _shown_names(outputs)
    verdicts: dict[str, Verdict] = {}
    if foreign:
        problems = {n: foreign for n in outputs}
    else:
        verdicts, problems = _judge_outputs(setup, item, outs, like)
        _swapped_outputs(setup, item, outs, verdicts)
    failing = set(problems) | {n for n, v in verdicts.items() if not v.passed}
    bad = [n for n in outputs if n in failing]
    row["outputs"] = {shown_name.get(n, n): _output_record(v) for n, v in verdicts.items()}
    if note:
        row["note"] = note
    if problems:
        row["problems"] = problems
    row["result"] = "fail" if bad else "ok"
    line = _numbers_column(row, verdicts, shown_name)
    line += _result_column(bad, problems, verdicts, shown_name)
    line += _detail_lines(bad, verdicts, shown_name, setup.strict)
    return Outcome("failed" if bad else "passed", row, line)


def _detail_lines(
    bad: list[str], verdicts: dict[str, Verdict], shown_name: dict[str, str], strict: bool
) -> str:
    """Lines under a case's row: where a failed output fails (its breakdown), or, for a pass
    outside strict mode, the first blind spot of the allowance (``--strict`` judges it)."""
    lines: list[str] = []
    for n in bad:
        if n in verdicts:
            who = shown_name.get(n, n)
            lines += [f"    {who}: {b}" for b in verdicts[n].breakdown]
    if not bad and not strict:
        blind = [(n, v.blind_spots[0]) for n, v in verdicts.items() if v.blind_spots]
        if blind:
            n, text = blind[0]
            text = text.replace("strict=True", "--strict")
            lines.append(f"    {shown_name.get(n, n)}: blind spot: {text}")
    return "".join("\n" + ln for ln in lines)


def _judge_outputs(
    setup: Setup, item: Item, outs: Any, like: Any
) -> tuple[dict[str, Verdict], dict[str, str]]:
    """A verdict per output (compare), or the problem that keeps it from being judged: not
    an array, or not x's array library, device, dtype and shape (apply_rope's contract)."""
    c, rope = item.case, item.rope
    shown_name = _shown_names(setup.conv.outputs)
    verdicts: dict[str, Verdict] = {}
    problems: dict[str, str] = {}
    for name in setup.conv.outputs:
        role = "query" if name == "q" else "key"
        want = c.expected(rope=rope, role=role)
        got, problem = _as_judged(outs[name], shown_name.get(name, name), c.dtype, want.shape, like)
        if got is None:
            problems[name] = problem
            continue
        verdicts[name] = judge(
            got,
            want,
            dtype=c.dtype,
            rope=rope,
            pos=c.positions_for(rope),
            x=c.x(role=role),
            role=role,
            strict=setup.strict,
        )
    return verdicts, problems


def _swapped_outputs(setup: Setup, item: Item, outs: Any, verdicts: dict[str, Verdict]) -> None:
    """When q and k both fail, whether they were swapped: q matches the expected keys and k
    the expected queries (compare passes on the swap). If so, that is both diagnoses."""
    if set(verdicts) != {"q", "k"} or verdicts["q"].passed or verdicts["k"].passed:
        return
    from .testing._compare import compare

    c, rope = item.case, item.rope
    pos = c.positions_for(rope)
    for name, other in (("q", "key"), ("k", "query")):
        got = to_numpy(outs[name]).astype(np.float64)
        want = c.expected(rope=rope, role=other)
        if got.shape != want.shape:
            return
        try:
            rep = compare(
                got, want, dtype=c.dtype, rope=rope, positions=pos, role=other, strict=setup.strict
            )
        except Exception:  # pragma: no cover - the same data compare judged above
            return
        if not rep.passed:
            return
    for name in ("q", "k"):
        verdicts[name].diagnosis = [
            "q and k outputs swapped (the returned q matches the expected k, and k the expected q)"
        ]


def _shown_names(outputs: tuple[str, ...]) -> dict[str, str]:
    """How outputs are named in the report: a single output is "x"."""
    return {"q": "x"} if outputs == ("q",) else {}


def _as_judged(
    out: Any, name: str, dtype: str, shape: tuple[int, ...], like: Any = None
) -> tuple[Any, str]:
    """``out`` as a float64 NumPy array, or None and why it cannot be judged: not an
    array, not in ``like``'s (x's) array library or on its device, another dtype than the
    case's (x's), another shape."""
    from .testing._error_model import dtype_name

    got_dtype = getattr(out, "dtype", None)
    if got_dtype is None or not hasattr(out, "shape"):
        return None, f"output {name} is not an array (a {type(out).__name__})"
    foreign = foreign_array(out, like, f"output {name} is")
    if foreign:
        return None, foreign
    try:
        got_name = dtype_name(got_dtype)
    except Exception:  # a dtype that cannot be printed is not x's
        got_name = f"<{type(got_dtype).__name__}>"
    if got_name != dtype:
        return None, f"output {name} has dtype {got_name}, expected {dtype} (x's dtype)"
    try:
        got = to_numpy(out).astype(np.float64)
    except Exception as exc:
        return None, f"output {name} is not an array ({type(exc).__name__})"
    if got.shape != shape:
        return None, f"output {name} has shape {got.shape}, expected {shape}"
    return got, ""


def _output_record(v: Verdict) -> dict[str, Any]:
    return {
        "passed": v.passed,
        "class": v.cls,
        "max_abs_err": v.max_abs,
        "max_ulp": v.max_ulp,
        "allowance": v.allowance,
        "worst_ratio": v.ratio,
        "diagnosis": v.diagnosis,
        "phase_error": v.phase_error,
        "breakdown": v.breakdown,
        "blind_spots": v.blind_spots,
        "non_finite": v.non_finite,
    }


def _numbers_column(
    row: dict[str, Any], verdicts: dict[str, Verdict], shown_name: dict[str, str]
) -> str:
    """The worst output's numbers: on the line, and at the row level of the JSON."""
    if not verdicts:
        return f"{'':<3}  {'':>11}  {'':>9}  {'':>9}  {'':<22}  "
    shown = max(
        verdicts,
        key=lambda n: (
            not verdicts[n].passed,
            _CLASS_ORDER.get(verdicts[n].cls, 2),
            verdicts[n].ratio,
        ),
    )
    v = verdicts[shown]
    row.update(
        {
            "max_abs_err": v.max_abs,
            "max_ulp": v.max_ulp,
            "atol": v.allowance,
            "class": v.cls,
            "diagnosis": v.diagnosis,
        }
    )
    return (
        f"{shown_name.get(shown, shown):<3}  {v.max_abs:>11.3e}  "
        f"{v.max_ulp:>9.3g}  {v.allowance:>9.2e}  {v.cls:<22}  "
    )


def _result_column(
    bad: list[str],
    problems: dict[str, str],
    verdicts: dict[str, Verdict],
    shown_name: dict[str, str],
) -> str:
    """ "ok", or "FAIL" with the failing outputs and why the first one failed."""
    if not bad:
        return "ok"
    text = "FAIL " + ",".join(shown_name.get(n, n) for n in bad)
    first = bad[0]
    if first in problems:
        return text + f": {problems[first]}"
    v = verdicts[first]
    diagnosis = v.diagnosis
    if v.non_finite:
        text += f": {v.non_finite}"
        if not v.finite_fails:
            return text
        text += "; the other elements"
    if not diagnosis:
        return text + ": no usual mistake explains it"
    more = len(diagnosis) - 1
    text += ": " + (diagnosis[0] if len(diagnosis[0]) <= 160 else diagnosis[0][:157] + "...")
    return text + (f" (+{more} more in --json)" if more else "")


def judge(
    got: np.ndarray,
    want: np.ndarray,
    *,
    dtype: str,
    rope: Any,
    pos: Any,
    x: Any,
    role: str,
    strict: bool,
) -> Verdict:
    """The verdict on one output: ``rope_ref.testing.compare`` (per-element error model,
    accuracy class, diagnosis by fitting); the older tolerance if compare fails."""
    from .testing._compare import compare

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
    verdict = Verdict(
        bool(rep.passed),
        str(rep.accuracy_class),
        float(rep.max_abs_error),
        float(rep.max_ulp),
        float(rep.atol),
        float(rep.worst_ratio),
        _explanations(getattr(rep, "diagnosis", ()) or ()),
        str(rep.message),
        [list(p) for p in getattr(rep, "phase_error", ())],
        [ln.strip() for ln in str(rep.message).splitlines() if ln.startswith("  failing ")],
        [str(b) for b in getattr(rep, "blind_spots", ())],
    )
    verdict.non_finite = non_finite_text(got, want)
    if verdict.non_finite and not verdict.passed:
        _judge_finite_part(verdict, got, want, dtype, rope, pos, x, role, strict)
    return verdict


def non_finite_text(got: np.ndarray, want: np.ndarray) -> str:
    """The NaN and infinite elements of ``got`` where ``want`` is finite: how many of each
    and the index of the first ("" when there are none)."""
    finite = np.isfinite(want)
    parts = []
    for kind, mask in (("NaN", np.isnan(got) & finite), ("inf", np.isinf(got) & finite)):
        n = int(np.count_nonzero(mask))
        if n:
            at = tuple(int(i) for i in np.argwhere(mask)[0])
            parts.append(f"1 {kind} element at {at}" if n == 1 else f"{n} {kind} elements "
                         f"(the first at {at})")  # fmt: skip
    return ", ".join(parts)


def _judge_finite_part(
    verdict: Verdict,
    got: np.ndarray,
    want: np.ndarray,
    dtype: str,
    rope: Any,
    pos: Any,
    x: Any,
    role: str,
    strict: bool,
) -> None:
    """An output with NaN or infinite elements: no mistake is fitted to them (the fit skips
    them, and fitting the rounding noise of the rest "explains" a part of it). The diagnosis
    is the one of the other elements (the non-finite ones set to the reference), none when
    those pass; the maximum errors are NaN where a NaN is."""
    from .testing._compare import compare

    if np.any(np.isnan(got) & np.isfinite(want)):
        verdict.max_abs = verdict.max_ulp = math.nan
    rest = np.where(np.isfinite(got) | ~np.isfinite(want), got, want)
    try:
        rep = compare(
            rest, want, dtype=dtype, rope=rope, positions=pos, x=x, role=role, strict=strict
        )
    except Exception:  # pragma: no cover - compare took the same data with the NaN in it
        verdict.diagnosis = []
        return
    verdict.diagnosis = [] if rep.passed else _explanations(getattr(rep, "diagnosis", ()) or ())
    verdict.finite_fails = not rep.passed


def _explanations(hyps: Any) -> list[str]:
    """The hypotheses that explain the data (the fitted fraction at the diagnosis's own
    threshold), else those that explain at least 5% of it, marked "partly"."""
    from .testing._diagnose import EXPLAINED

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
) -> Verdict:  # pragma: no cover - fallback
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
    return Verdict(passed, cls, float(np.max(err, initial=0.0)), ulp, atol, ratio, [], note, [])


# ---------------------------------------------------------------------- report
def _print_header(setup: Setup) -> None:
    print(
        f"rope-ref check {setup.spec}: convention {setup.conv.name}, backend {setup.backend} "
        f"({setup.why})" + (", strict" if setup.strict else "")
    )
    print(f"  calls {setup.conv.signature}")
    print(
        f"{'case':<{setup.width}}  {'out':<3}  {'max abs err':>11}  {'max ulp':>9}  "
        f"{'allowance':>9}  {'class':<22}  result"
    )


def _print_progress(n: int, total: int) -> None:
    done = int(30 * n / total)
    print(f"\r[{'#' * done}{'.' * (30 - done)}] {n}/{total}", end="", file=sys.stderr, flush=True)


def _print_summary(tally: Tally, total: int) -> int:
    """The skips by reason, the summary line and the notes on stderr; the exit code."""
    n_skip = tally.n_skipped
    if tally.skipped:
        print(f"skipped {n_skip} of {total} cases:")
        for reason, names in sorted(tally.skipped.items(), key=lambda kv: -len(kv[1])):
            print(f"  {len(names):>4}  {reason} (e.g. {names[0]})")
    blind = sum(1 for r in tally.rows if r.get("result") == "ok" and _has_blind_spot(r))
    if blind:
        print(
            f"{blind} of the passed cases have blind spots (positions where the allowance of "
            "the lower-precision angles class cannot see a one-position error): --strict "
            "judges them in the exact class"
        )
    print(_summary_line(tally))
    alive = [t for t in tally.abandoned if t.is_alive()]
    if alive:
        print(
            f"note: {len(alive)} timed-out call(s) still running in the background were abandoned",
            file=sys.stderr,
        )
    if tally.ran == 0:
        print(
            "rope-ref check: no case ran (every case was skipped): nothing was checked",
            file=sys.stderr,
        )
        return EXIT_USAGE
    return EXIT_FAILURES if tally.failed else EXIT_OK


def _summary_line(tally: Tally) -> str:
    counts = tally.counts
    extra = [
        f"{counts[k]} {k.rstrip('s') if counts[k] == 1 else k}"
        for k in ("errors", "timeouts")
        if counts[k]
    ]
    summary = f"{counts['passed']} passed, {tally.failed} failed"
    if extra:
        summary += f" (of which {', '.join(extra)})".replace("timeouts", "timed out").replace(
            "timeout", "timed out"
        )
    if tally.n_skipped:
        summary += f", {tally.n_skipped} skipped"
    return summary


def _has_blind_spot(row: dict[str, Any]) -> bool:
    return any(o.get("blind_spots") for o in row.get("outputs", {}).values())


def _write_json(setup: Setup, tally: Tally, code: int) -> None:
    report = {
        "target": setup.spec,
        "convention": setup.conv.name,
        "signature": setup.conv.signature,
        "backend": setup.backend,
        "backend_reason": setup.why,
        "strict": setup.strict,
        "timeout_s": setup.timeout,
        "summary": {
            **tally.counts,
            "skipped": tally.n_skipped,
            "ran": tally.ran,
            "exit_code": code,
        },
        "skipped": dict(tally.skipped),
        "cases": tally.rows,
    }
    path = str(setup.json_path)
    try:
        Path(path).write_text(json.dumps(report, indent=1, default=str) + "\n", encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"--json {path}: cannot write it ({exc.strerror})") from None
