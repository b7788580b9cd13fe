"""rope_ref.apply_rope beside a plain implementation of the same rotation, per backend.

The peer is what most projects write (Hugging Face's ``rotate_half`` with a float32 table
built as positions * inv_freq, or the same in float64 on NumPy). rope_ref pays for exact
tables and float64 arithmetic; this prints the time ratio measured in one process run.

    python benchmarks/bench_apply.py [--shape 1 32 4096 128] [--repeat 5]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import backends
import rope_ref as rr


def plain_rope(xp, x, positions, inv_freq):
    """rotate_half RoPE with the table in x's dtype (what a typical model file does)."""
    ang = xp.astype(positions, inv_freq.dtype)[:, None] * inv_freq[None, :]
    cos = xp.astype(xp.concat([xp.cos(ang), xp.cos(ang)], axis=-1), x.dtype)
    sin = xp.astype(xp.concat([xp.sin(ang), xp.sin(ang)], axis=-1), x.dtype)
    h = x.shape[-1] // 2
    rot = xp.concat([-x[..., h:], x[..., :h]], axis=-1)
    return x * cos + rot * sin


def timeit(bk, fn, repeat):
    fn()
    bk.synchronize()
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        if bk.lazy:
            out.compute()
        if hasattr(out, "block_until_ready"):  # JAX dispatches asynchronously
            out.block_until_ready()
        bk.synchronize()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", type=int, nargs=4, default=[1, 32, 4096, 128])
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--dtype", default="float32")
    a = p.parse_args()
    s_, d_ = a.shape[2], a.shape[3]
    rope = rr.Rope(d_, base=500_000.0)
    x_np = np.random.default_rng(0).standard_normal(a.shape)
    print(f"shape {tuple(a.shape)} {a.dtype}, best of {a.repeat}")
    print(f"{'backend':<16}{'rope_ref [ms]':>14}{'plain [ms]':>12}{'ratio':>8}")
    for bk in backends.available():
        if a.dtype not in bk.dtypes:
            continue
        bk.setup()
        xp = bk.xp
        x = bk.from_numpy(x_np, a.dtype)
        pos = bk.from_numpy(np.arange(s_))
        inv = rope.inv_freq(xp, dtype=bk.dtype("float32"), device=bk.device)
        t_ref = timeit(bk, lambda x=x, pos=pos: rr.apply_rope(x, pos, rope), a.repeat)
        t_plain = timeit(
            bk, lambda xp=xp, x=x, pos=pos, inv=inv: plain_rope(xp, x, pos, inv), a.repeat
        )
        print(f"{bk.name:<16}{t_ref * 1e3:>14.2f}{t_plain * 1e3:>12.2f}{t_ref / t_plain:>8.2f}")


if __name__ == "__main__":
    main()
