"""Make (``write``) or use (``measure``) mpmath references for rope_ref's cos/sin tables.

The tables rope_ref computes are cos(m * theta_j) and sin(m * theta_j) with
theta_j = base ** (-2j / head_dim). This script evaluates them with mpmath at 256 bits
(77 digits), independently of rope_ref's own host arithmetic (which uses ``decimal``):

    theta_j = mpf(base) ** (mpf(-2 * j) / head_dim);  angle = m * theta_j;  cos, sin at 256 bits

``write`` stores, for head_dim in {64, 128, 256} and base in {1e4, 5e5, 1e6}, a fixed set of
integer positions with |m| < 2**31 (0..15, 2**k and 2**k - 1, some negatives, the 8 largest,
and uniform random ones from a fixed seed) and, for every pair j, the exact value split as
``hi`` (the float64 nearest the exact value) + ``lo`` (the remainder, in float32). The ulp
error of a computed value v is then (v - hi - lo) / ulp(hi), exact to about 2**-24 ulp.

``measure`` draws a fresh, larger sample and prints the max ulp error of rope_ref's tables
against mpmath evaluated on the spot (numbers for the closing notes and the docs).

Usage::

    python scripts/mpmath_reference.py write tests/data/mpmath_cos_sin.npz
    python scripts/mpmath_reference.py measure --positions 2000 --seed 7
"""

from __future__ import annotations

import argparse
import sys
import time

import mpmath
import numpy as np

HEAD_DIMS = (64, 128, 256)
BASES = (1e4, 5e5, 1e6)
PREC_BITS = 256


def positions_grid(n_random: int, seed: int, limit: int = 2**31) -> np.ndarray:
    rng = np.random.default_rng(seed)
    fixed = set(range(16))
    for k in range(1, 31 + 1):
        fixed.update(v for v in (2**k, 2**k - 1) if v < limit)
        if k % 2:
            fixed.add(-(2**k - 1))
    fixed.update(limit - 1 - i for i in range(8))
    fixed.update(-(limit - 1 - i) for i in range(4))
    rand = rng.integers(-(limit - 1), limit, size=n_random)
    return np.array(sorted(fixed | {int(v) for v in rand}), dtype=np.int64)


def exact_tables(positions: np.ndarray, head_dim: int, base: float):
    """cos and sin as (hi float64, lo float32) pairs, shape (len(positions), head_dim // 2)."""
    mpmath.mp.prec = PREC_BITS
    n, h = len(positions), head_dim // 2
    out = {
        k: np.zeros((n, h), dtype=np.float64 if k.endswith("hi") else np.float32)
        for k in ("cos_hi", "cos_lo", "sin_hi", "sin_lo")
    }
    b = mpmath.mpf(base)
    thetas = [b ** (mpmath.mpf(-2 * j) / head_dim) for j in range(h)]
    for i, m in enumerate(positions.tolist()):
        mm = mpmath.mpf(m)
        for j, th in enumerate(thetas):
            a = mm * th
            for name, val in (("cos", mpmath.cos(a)), ("sin", mpmath.sin(a))):
                hi = float(val)  # mpmath rounds to nearest
                out[name + "_hi"][i, j] = hi
                out[name + "_lo"][i, j] = float(val - mpmath.mpf(hi))
    return out


def ulp_errors(value: np.ndarray, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """|value - exact| in units of the last place of the exact value (float64)."""
    ulp = np.spacing(np.abs(hi))
    ulp = np.where(hi == 0, np.spacing(0.0), ulp)
    return np.abs((value - hi) - lo.astype(np.float64)) / ulp


def write(path: str, n_random: int, seed: int) -> None:
    positions = positions_grid(n_random, seed)
    arrays = {"positions": positions, "head_dims": np.array(HEAD_DIMS), "bases": np.array(BASES)}
    for d in HEAD_DIMS:
        for b in BASES:
            t0 = time.time()
            tabs = exact_tables(positions, d, b)
            for k, v in tabs.items():
                arrays[f"d{d}_b{b:g}_{k}"] = v
            print(
                f"head_dim={d} base={b:g}: {len(positions)} positions, {time.time() - t0:.1f}s",
                file=sys.stderr,
            )
    np.savez_compressed(path, **arrays)


def measure(n_random: int, seed: int) -> None:
    sys.path.insert(0, ".")
    import rope_ref as rr

    positions = positions_grid(n_random, seed)
    worst = 0.0
    count = 0
    for d in HEAD_DIMS:
        for b in BASES:
            tabs = exact_tables(positions, d, b)
            cos, sin = rr.Rope(d, base=b).cos_sin(positions)
            e = max(
                float(ulp_errors(cos, tabs["cos_hi"], tabs["cos_lo"]).max()),
                float(ulp_errors(sin, tabs["sin_hi"], tabs["sin_lo"]).max()),
            )
            count += 2 * cos.size
            worst = max(worst, e)
            print(f"head_dim={d:3d} base={b:<7g} max ulp error {e:.3f}")
    print(
        f"{len(positions)} positions x (32+64+128) pairs x 3 bases x (cos, sin) = {count} "
        f"values; max ulp error {worst:.3f}"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write")
    w.add_argument("path")
    w.add_argument("--random", type=int, default=40)
    w.add_argument("--seed", type=int, default=20_211_104)
    m = sub.add_parser("measure")
    m.add_argument("--positions", type=int, default=2000)
    m.add_argument("--seed", type=int, default=7)
    a = p.parse_args()
    if a.cmd == "write":
        write(a.path, a.random, a.seed)
    else:
        measure(a.positions, a.seed)


if __name__ == "__main__":
    main()
