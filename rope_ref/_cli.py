"""The ``rope-ref`` command line. ``rope-ref info`` lists the array libraries found."""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import platform
import sys
from collections.abc import Sequence

__all__ = ["main"]

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


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rope-ref",
        description="rope_ref: the golden reference for rotary position embedding.",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    info = sub.add_parser("info", help="list the array libraries found and their versions")
    info.set_defaults(func=_info)
    demo = sub.add_parser("demo", help="exact tables against plain float64 at one position")
    demo.add_argument("--position", type=int, default=2**31 - 1, help="the position m")
    demo.add_argument("--head-dim", type=int, default=128)
    demo.add_argument("--base", type=float, default=10_000.0)
    demo.set_defaults(func=_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
