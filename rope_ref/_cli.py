"""The ``rope-ref`` command line: ``info``, ``demo``, ``vectors``, ``check`` and ``decay``.

Exit codes (every subcommand): 0 success (``check``: every case that ran passed); 1 test
failures (``check``: a case failed, raised or timed out); 2 usage errors (bad options, files
that cannot be read or written, a target that cannot be loaded, ``check`` with no case run),
printed as one line on stderr; 3 an internal error of rope_ref (one line; set
``ROPE_REF_DEBUG=1`` for the traceback); 130 interrupted.

``rope-ref check`` is :mod:`rope_ref._cli_check`; what the subcommands share (usage
errors, the parser without ``sys.exit``, config reading) is :mod:`rope_ref._cli_common`.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import importlib.util
import math
import os
import platform
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._cli_check import check as _check
from ._cli_common import (  # noqa: F401  (EXIT_* stay importable from here)
    EXIT_FAILURES,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    NAMESPACES,
    Parser,
    ParserExit,
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

__all__ = ["main"]

#: The most points ``rope-ref decay`` computes (about a minute of exact tables).
DECAY_MAX_POINTS = 1_000_000
_DECAY_CHUNK = 1 << 14


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


#: The position forms ``vectors`` writes for a preset or a config (without --positions).
_VECTOR_FORMS = ("arange", "large")


def _battery_selection(args: argparse.Namespace) -> list[Any]:
    """Cases for ``vectors``: by name, one preset's, or the battery (``--positions``: of
    those forms)."""
    from ._errors import RopeError
    from .testing._cases import POSITION_FORMS, Case, case

    if args.cases:
        selected_forms(args, ())  # --positions with --cases: a usage error
        try:
            return [case(n) for n in args.cases]
        except RopeError as exc:
            raise UsageError(f"--cases: {one_line(exc)}") from None
    if args.preset:
        check_preset(args.preset)
        d = preset_head_dim(args.preset)
        return [
            Case(preset=args.preset, positions=f, head_dim=d, dtype=dt)
            for dt in dtypes_of(args)
            for f in selected_forms(args, _VECTOR_FORMS)
        ]
    return battery_cases(args, selected_forms(args, tuple(POSITION_FORMS)))


def _out_dir(path: str) -> Path:
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise UsageError(f"--out {path}: is a file, not a directory")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--out {path}: cannot create it ({exc.strerror})") from None
    if not os.access(p, os.W_OK):
        raise UsageError(f"--out {path}: not writable")
    return p


def _vectors(args: argparse.Namespace) -> int:
    from .testing._cases import Case
    from .testing._dask_vectors import reject_dask_options, run_vectors_dask
    from .testing._vectors import write_vectors

    if args.backend == "dask":
        if args.positions:
            raise UsageError(
                "--positions: not with --backend dask (it writes positions 0 .. --tokens - 1)"
            )
        return run_vectors_dask(args)
    reject_dask_options(args)
    reject_ignored_options(args)
    if args.hf_config and (args.cases or args.preset):
        raise UsageError("give --hf-config or --cases/--preset, not both")
    if args.hf_config:
        config = load_config(args.hf_config)
        rope = config_rope(config, f"--hf-config {args.hf_config}", args.layer_type)
        selected = [
            Case(head_dim=rope.head_dim, positions=f, dtype=dt)
            for dt in dtypes_of(args)
            for f in selected_forms(args, _VECTOR_FORMS)
        ]
        out = _out_dir(args.out)
        manifest = write_vectors(selected, out, rope=rope, config=config)
    else:
        selected = _battery_selection(args)
        out = _out_dir(args.out)
        manifest = write_vectors(selected, out)
    print(f"wrote {len(manifest['cases'])} cases to {args.out} (manifest.json, .safetensors, .npz)")
    return 0


def _decay(args: argparse.Namespace) -> int:
    """``rope-ref decay``: the curve as CSV (streamed), and plotted with ``--png``."""
    from ._decay import relative_upper_bound

    n = _decay_points(args)
    writable_file("--csv", args.csv)
    writable_file("--png", args.png)
    plt = _pyplot() if args.png else None
    curve: list[np.ndarray] = []
    with open(args.csv, "w", encoding="utf-8") if args.csv else _Stdout() as fh:
        fh.write("relative_distance,relative_upper_bound\n")
        for lo in range(0, n, _DECAY_CHUNK):  # streamed: memory independent of --max
            r = np.arange(lo, min(n, lo + _DECAY_CHUNK), dtype=np.float64) * args.step
            b = relative_upper_bound(r, head_dim=args.head_dim, base=args.base)
            fh.write("".join(f"{ri:g},{bi:.6f}\n" for ri, bi in zip(r, b, strict=True)))
            if plt is not None:
                curve.append(b)
    if plt is not None:
        _plot_decay(plt, args, np.arange(n, dtype=np.float64) * args.step, np.concatenate(curve))
    return 0


def _decay_points(args: argparse.Namespace) -> int:
    """The number of points of ``decay`` (0, step, ... up to max); usage errors for bad
    options."""
    step, top = float(args.step), float(args.max)
    if not (math.isfinite(step) and step > 0):
        raise UsageError(f"--step must be a positive finite number, got {step:g}")
    if not (math.isfinite(top) and top >= 0):
        raise UsageError(f"--max must be a finite number >= 0, got {top:g}")
    if args.head_dim < 2 or args.head_dim % 2:
        raise UsageError(f"--head-dim must be an even integer >= 2, got {args.head_dim}")
    if not (math.isfinite(args.base) and args.base > 0):
        raise UsageError(f"--base must be a positive finite number, got {args.base:g}")
    n = math.floor(top / step + 0.5) + 1  # r = 0, step, 2 step, ... up to max
    if n > DECAY_MAX_POINTS:
        raise UsageError(
            f"--max {top:g} with --step {step:g} asks for {n} points, more than the limit of "
            f"{DECAY_MAX_POINTS}: raise --step or lower --max"
        )
    return n


def _pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (a usage error without matplotlib)."""
    try:
        mpl = importlib.import_module("matplotlib")
        mpl.use("Agg")
        return importlib.import_module("matplotlib.pyplot")
    except ImportError:
        raise UsageError("--png needs matplotlib (pip install matplotlib)") from None


def _plot_decay(plt: Any, args: argparse.Namespace, r: np.ndarray, bound: np.ndarray) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(r, bound)
    ax.set_xlabel("relative distance")
    ax.set_ylabel("relative upper bound")
    ax.set_title(f"Long-term decay of RoPE (d={args.head_dim}, base={args.base:g})")
    fig.tight_layout()
    fig.savefig(args.png, dpi=120, metadata={"Software": None})
    plt.close(fig)


class _Stdout:
    """stdout as a context manager that is not closed."""

    def __enter__(self) -> Any:
        return sys.stdout

    def __exit__(self, *exc: object) -> None:
        sys.stdout.flush()


_CHECK_EPILOG = """\
conventions (--convention) and what each calls:
{conventions}

cases: the battery (rope_ref.testing.cases: shapes bshd/bhsd/thd, layouts, partial rotary,
head sizes, every preset's schedule, and the position forms
  {forms}
{near}) in the dtypes of --dtype;
--preset NAME or --hf-config FILE: that model's RoPE in every shape and position form;
--cases NAME...: those cases; --positions FORM...: only those forms. Each convention runs
every case it can express (channel permutations, transposes and per-sequence calls are exact)
and judges every output (q and k; each must have x's array library, device, dtype and
shape); the others are listed as skipped, grouped by reason.

verdicts: rope_ref.testing.compare: per-element error model; accuracy class "exact" or
"lower-precision angles" (angles formed in float32); --strict passes only "exact". Failures
are diagnosed (which common mistake explains the data).

a target can declare what it supports (cases outside it are skipped with that reason):
  fn.rope_ref_supports = {{
      "dtypes": ("float32", "bfloat16"),   # battery dtypes
      "layouts": ("half",),                # "half" and/or "interleaved"
      "families": ("bshd", "bhsd"),        # shapes: "bshd", "bhsd", "thd" (packed)
      "positions": "1d",                   # "1d": no multi-axis (M-RoPE, axial) cases
      "forms": ("arange", "offset"),       # position forms (of those above)
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


def _near_text(forms: tuple[str, ...]) -> str:
    """ "where large, 2p24 and 2p31 are just below 2**20, 2**24 and 2**31": the forms whose
    positions lie just below a power of two (rope_ref.testing._cases), as the help says."""
    from .testing import _cases

    near = getattr(_cases, "_NEAR", {})
    names = [f for f in forms if f in near]
    if not names:
        return "where the forms are rope_ref.testing.Case's"

    def join(items: list[str]) -> str:
        return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]

    powers = [f"2**{int(near[f]).bit_length() - 1}" for f in names]
    verb = "is" if len(names) == 1 else "are"
    return f"where {join(names)} {verb} just below {join(powers)}"


def _parser() -> argparse.ArgumentParser:
    from .testing._twins._conventions import CONVENTIONS

    fmt = argparse.RawDescriptionHelpFormatter
    p = Parser(
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

    forms = position_forms()

    def battery_options(q: argparse.ArgumentParser, forms_default: str) -> None:
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
            "--positions",
            nargs="+",
            choices=forms,
            metavar="FORM",
            help=f"only cases with these position forms, of {', '.join(forms)} "
            f"(rope_ref.testing.Case describes each) (default: {forms_default})",
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
    battery_options(vec, "the battery's; arange and large with --preset or --hf-config")
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

    name_w = max(len(c.name) for c in CONVENTIONS.values())  # the longest name's width
    conv_lines = "\n".join(
        textwrap.fill(
            c.signature,
            width=92,
            initial_indent=f"  {c.name:<{name_w}} ",
            subsequent_indent=" " * (name_w + 3),
            break_on_hyphens=False,
        )
        + (f"\n  {'':<{name_w}} e.g. {c.example}" if c.example else "")
        for c in CONVENTIONS.values()
    )
    chk = sub.add_parser(
        "check",
        help="run the battery against an implementation",
        description="Run the battery of cases against an implementation and judge every\n"
        "output against the exact reference.",
        epilog=_CHECK_EPILOG.format(
            conventions=conv_lines, forms=", ".join(forms), near=_near_text(forms)
        ),
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
        choices=["auto", *sorted(NAMESPACES)],
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
    battery_options(chk, "every form")
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
    except ParserExit as e:
        return e.code
    except UsageError as e:
        print(str(e) if e.formatted else f"rope-ref: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("rope-ref: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except RopeError as e:  # an argument rope_ref itself rejects (demo --head-dim 3, ...)
        print(f"rope-ref: error: {one_line(e)}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as e:  # a bug in rope_ref: one line, no traceback (unless asked)
        if os.environ.get("ROPE_REF_DEBUG"):
            raise
        print(
            f"rope-ref: internal error: {type(e).__name__}: {one_line(e)} (set "
            "ROPE_REF_DEBUG=1 for the traceback)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
