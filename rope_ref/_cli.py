"""The ``rope-ref`` command line. ``rope-ref info`` lists the array libraries found."""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import platform
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import array_api_compat
import numpy as np

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


def _select_cases(args: argparse.Namespace) -> list[Any]:
    from .testing._cases import Case, case, cases

    if getattr(args, "cases", None):
        return [case(n) for n in args.cases]
    dtypes = tuple(args.dtype) if getattr(args, "dtype", None) else ("float32",)
    if getattr(args, "preset", None):
        from ._rope import Rope

        layer = "full_attention" if args.preset == "gemma-3" else None
        d = Rope.preset(args.preset, layer_type=layer).head_dim
        return [
            Case(preset=args.preset, positions=f, head_dim=d, dtype=dt)
            for dt in dtypes
            for f in ("arange", "large")
        ]
    return cases(dtypes=dtypes, presets=not getattr(args, "no_presets", False))


def _vectors(args: argparse.Namespace) -> int:
    from .testing._cases import Case
    from .testing._vectors import write_vectors

    if args.hf_config:
        import json

        from ._rope import Rope

        config = json.loads(Path(args.hf_config).read_text(encoding="utf-8"))
        rope = Rope.from_hf_config(config, layer_type=args.layer_type)
        dtypes = tuple(args.dtype) if args.dtype else ("float32",)
        selected = [
            Case(head_dim=rope.head_dim, positions=f, dtype=dt)
            for dt in dtypes
            for f in ("arange", "large")
        ]
        manifest = write_vectors(selected, args.out, rope=rope, config=config)
        print(
            f"wrote {len(manifest['cases'])} cases to {args.out} (manifest.json, "
            ".safetensors, .npz)"
        )
        return 0
    else:
        selected = _select_cases(args)
    manifest = write_vectors(selected, args.out)
    print(f"wrote {len(manifest['cases'])} cases to {args.out} (manifest.json, .safetensors, .npz)")
    return 0


def _decay(args: argparse.Namespace) -> int:
    import importlib

    import numpy as np

    from ._decay import relative_upper_bound

    r = np.arange(0.0, args.max + args.step / 2, args.step)
    b = relative_upper_bound(r, head_dim=args.head_dim, base=args.base)
    rows = ["relative_distance,relative_upper_bound"]
    rows += [f"{ri:g},{bi:.6f}" for ri, bi in zip(r, b, strict=True)]
    if args.csv:
        Path(args.csv).write_text("\n".join(rows) + "\n")
    else:
        print("\n".join(rows))
    if args.png:
        try:
            mpl = importlib.import_module("matplotlib")
            mpl.use("Agg")
            plt = importlib.import_module("matplotlib.pyplot")
        except ImportError:
            print("--png needs matplotlib (pip install matplotlib)", file=sys.stderr)
            return 2
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(r, b)
        ax.set_xlabel("relative distance")
        ax.set_ylabel("relative upper bound")
        ax.set_title(f"Long-term decay of RoPE (d={args.head_dim}, base={args.base:g})")
        fig.tight_layout()
        fig.savefig(args.png, dpi=120, metadata={"Software": None})
        plt.close(fig)
    return 0


def _check(args: argparse.Namespace) -> int:
    import importlib
    import json

    import numpy as np

    from .testing._assert import _ulps, default_tolerance, diagnose, to_numpy

    module_name, _, func_name = args.target.partition(":")
    if not module_name or not func_name:
        print(f"target must be MODULE:FUNCTION, got {args.target!r}", file=sys.stderr)
        return 2
    added = "." not in sys.path
    if added:
        sys.path.insert(0, ".")
    try:
        fn = getattr(importlib.import_module(module_name), func_name)
    except Exception as exc:  # a module that does not import, or no such function
        print(f"cannot load {args.target}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    finally:
        if added:
            sys.path.remove(".")
    if not callable(fn):
        print(f"{args.target} is not callable", file=sys.stderr)
        return 2
    try:
        xp = importlib.import_module(_NAMESPACES[args.backend])
    except ImportError as exc:
        print(f"backend {args.backend} is not available: {exc}", file=sys.stderr)
        return 2
    if args.backend == "jax":
        importlib.import_module("jax").config.update("jax_enable_x64", True)
    selected = _select_cases(args)
    width = max(len(c.name) for c in selected)
    print(f"{'case':<{width}}  {'max abs err':>11}  {'max ulp':>9}  {'atol':>9}  result")
    report: list[dict[str, Any]] = []
    failures = ran = 0
    progress = sys.stderr.isatty() and len(selected) > 20
    for k, c in enumerate(selected):
        if progress:
            done = int(30 * k / len(selected))
            print(
                f"\r[{'#' * done}{'.' * (30 - done)}] {k}/{len(selected)}",
                end="",
                file=sys.stderr,
                flush=True,
            )
        row: dict[str, Any] = {"case": c.name}
        report.append(row)
        if not hasattr(xp, c.dtype):
            row["result"] = "skipped"
            row["why"] = f"{args.backend} has no {c.dtype}"
            continue
        x, pos, rope = c.data(xp)
        want = c.expected()
        try:
            got = _call_convention(args.convention, fn, x, pos, rope, c)
            got_np = to_numpy(got).astype(np.float64)
        except _Unfit as why:
            row["result"], row["why"] = "skipped", f"{args.convention} convention: {why}"
            continue
        except Exception as exc:  # the implementation raised or has the wrong signature
            ran += 1
            failures += 1
            row["result"], row["why"] = "error", f"{type(exc).__name__}: {exc}"
            print(f"{c.name:<{width}}  ERROR {type(exc).__name__}: {exc}")
            continue
        ran += 1
        if got_np.shape != want.shape:
            failures += 1
            row["result"] = "fail"
            row["why"] = f"shape {got_np.shape}, expected {want.shape}"
            print(f"{c.name:<{width}}  FAIL {row['why']}")
            continue
        err = np.abs(got_np - want)
        rtol, atol_unit = default_tolerance(c.dtype, rope=rope, positions=pos)
        atol = atol_unit * float(np.max(np.abs(want)))
        ok = bool(np.all(err <= atol + rtol * np.abs(want)))
        ulp = float(np.max(_ulps(got_np, want, c.dtype)))
        row.update(
            {
                "max_abs_err": float(np.max(err)),
                "max_ulp": ulp,
                "atol": atol,
                "rtol": rtol,
                "result": "ok" if ok else "fail",
            }
        )
        line = f"{float(np.max(err)):>11.3e}  {ulp:>9.3g}  {atol:>9.2e}  " + (
            "ok" if ok else "FAIL"
        )
        if not ok:
            failures += 1
            found = diagnose(
                got_np, c.x(), to_numpy(pos), rope, rtol=rtol, atol=atol, error=float(np.max(err))
            )
            row["diagnosis"] = found
            line += "  " + ("; or ".join(found) if found else "no usual mistake explains it")
        print(f"{c.name:<{width}}  {line}")
    if progress:
        print("\r" + " " * 60 + "\r", end="", file=sys.stderr)
    skipped = len(selected) - ran
    print(
        f"{ran - failures} passed, {failures} failed" + (f", {skipped} skipped" if skipped else "")
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "target": args.target,
                    "convention": args.convention,
                    "backend": args.backend,
                    "cases": report,
                },
                indent=1,
            )
            + "\n"
        )
    return 1 if failures else 0


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


def _call_convention(convention: str, fn: Any, x: Any, pos: Any, rope: Any, c: Any) -> Any:
    """Call the user's function the way its library's callers do; raise _Unfit for cases
    the convention cannot express (they are reported as skipped)."""
    if convention == "rope_ref":
        return fn(x, pos, rope)
    from . import testing as T

    xp = array_api_compat.array_namespace(x)
    tok = c.token_positions()
    if rope.scaling is not None and rope.scaling.axis_position is not None:
        raise _Unfit("multi-axis positions")
    if convention == "hf":  # q, k (batch, heads, seq, dim); cos/sin (batch, seq, rotary_dim)
        if c.family != "bhsd" or rope.layout != "half":
            raise _Unfit("HF's rotate_half takes (batch, heads, seq, dim) in the half layout")
        cos, sin = T.hf_cos_sin(rope, x, xp.asarray(tok))
        return fn(x, x, cos, sin)[0]
    if convention == "flash":  # x (batch, seq, heads, dim); cos/sin (seqlen_ro, rotary_dim/2)
        if c.family != "bshd" or not _arange_rows(tok):
            raise _Unfit("flash-attn takes (batch, seq, heads, dim) at arange + offsets")
        offsets = tok[:, 0]
        if rope.scaling is not None and rope.scaling.dynamic:
            raise _Unfit("a length-dependent schedule")
        n_ro = int(tok.max()) + 1
        if n_ro > 1 << 17:
            raise _Unfit("positions beyond the 131072-row table this check builds")
        cos, sin = rope.cos_sin(xp.arange(n_ro), dtype=x.dtype)
        return fn(
            x,
            cos,
            sin,
            interleaved=rope.layout == "interleaved",
            seqlen_offsets=xp.asarray(offsets),
        )
    if convention == "vllm":  # positions (tokens,), query/key (tokens, heads * head_size)
        if c.family != "thd":
            raise _Unfit("vLLM takes flat tokens (the packed thd cases)")
        if int(tok.max()) + 1 > 1 << 17:
            raise _Unfit("positions beyond the 131072-row cache this check builds")
        cache = T.vllm_cos_sin_cache(rope, int(tok.max()) + 1, dtype=x.dtype, xp=xp)
        q = xp.reshape(x, (x.shape[0], x.shape[1] * x.shape[2]))
        out, _ = fn(
            xp.asarray(tok),
            q,
            None,
            head_size=rope.head_dim,
            cos_sin_cache=cache,
            is_neox_style=rope.layout == "half",
        )
        return xp.reshape(out, x.shape)
    if convention == "mlx":  # x (..., T, D), positions offset + arange(T)
        if c.family != "bhsd" or not _arange_rows(tok):
            raise _Unfit("MLX takes (..., T, D) at offset + arange(T)")
        offsets = tok[:, 0]
        if rope.scaling is not None or rope.attention_factor != 1.0:
            raise _Unfit("MLX's rope has base and scale only")
        return fn(
            x,
            rope.rotary_dim,
            traditional=rope.layout == "interleaved",
            base=rope.base,
            scale=1.0,
            offset=xp.asarray(offsets),
        )
    raise ValueError(f"unknown convention {convention!r}")


def _arange_rows(tok: Any) -> bool:
    """Positions of shape (batch, seq) that are offset + arange(seq) in every row."""
    return bool(tok.ndim == 2 and (tok == tok[:, :1] + np.arange(tok.shape[1])).all())


class _Unfit(Exception):
    """A battery case the chosen convention cannot express."""


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

    def battery_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--preset", help="only this preset's cases (see rope_ref.presets())")
        p.add_argument("--cases", nargs="+", metavar="NAME", help="cases by name")
        p.add_argument(
            "--dtype",
            nargs="+",
            choices=["float32", "float16", "bfloat16", "float64"],
            help="dtypes (default float32)",
        )
        p.add_argument("--no-presets", action="store_true", help="leave out the preset cases")

    vec = sub.add_parser("vectors", help="write golden vector files (safetensors, npz, manifest)")
    battery_options(vec)
    vec.add_argument("--hf-config", help="a config.json to build the Rope from")
    vec.add_argument("--layer-type", help="layer type for per-layer-type configs")
    vec.add_argument("--out", required=True, help="output directory")
    vec.set_defaults(func=_vectors)

    chk = sub.add_parser("check", help="run the battery against an implementation")
    chk.add_argument("target", help="MODULE:FUNCTION (imported from the current directory)")
    chk.add_argument(
        "--convention",
        default="rope_ref",
        choices=["rope_ref", "hf", "flash", "vllm", "mlx"],
        help="how the function is called (rope_ref: fn(x, positions, rope))",
    )
    chk.add_argument(
        "--backend",
        default="numpy",
        choices=sorted(_NAMESPACES),
        help="array library the inputs are made in",
    )
    chk.add_argument("--json", metavar="PATH", help="also write the report as JSON")
    battery_options(chk)
    chk.set_defaults(func=_check)

    dec = sub.add_parser("decay", help="print the long-term decay curve (RoFormer Figure 2)")
    dec.add_argument("--head-dim", type=int, default=128)
    dec.add_argument("--base", type=float, default=10_000.0)
    dec.add_argument("--max", type=float, default=256.0)
    dec.add_argument("--step", type=float, default=1.0)
    dec.add_argument("--csv", metavar="PATH", help="write the curve as CSV (else print it)")
    dec.add_argument("--png", metavar="PATH", help="plot it as Figure 2 (needs matplotlib)")
    dec.set_defaults(func=_decay)
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
