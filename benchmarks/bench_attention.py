"""Attention benchmarks (issue 4), each a ratio or a bound measured in one process run.

1. (1, 8, 4096, 128) causal: rope_ref.attention vs torch scaled_dot_product_attention, both on
   torch CPU tensors, in float32 and float64 (rope_ref computes in float64 either way).
2. (1, 1, 32768, 128) float64 causal: peak resident memory of rope_ref.attention (NumPy), in a
   fresh subprocess; the one-shot scores alone would be 8.6 GB.
3. linear attention causal: time(S=65536) / time(S=8192), (1, 1, S, 64), NumPy float64.

    python benchmarks/bench_attention.py [--only sdpa|rss|linear]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import rope_ref as rr  # noqa: E402


def best_of(fn, repeat):
    fn()
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def bench_sdpa(repeat: int) -> None:
    import torch

    sdpa = torch.nn.functional.scaled_dot_product_attention
    shape = (1, 8, 4096, 128)
    g = torch.Generator().manual_seed(0)
    print(
        f"(1) causal attention {shape}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, best of {repeat}"
    )
    for dtype in (torch.float32, torch.float64):
        q, k, v = (torch.randn(shape, generator=g, dtype=dtype) for _ in range(3))
        t_ref = best_of(lambda q=q, k=k, v=v: rr.attention(q, k, v, causal=True), repeat)
        t_sdpa = best_of(lambda q=q, k=k, v=v: sdpa(q, k, v, is_causal=True), repeat)
        err = (
            (
                rr.attention(q, k, v, causal=True).double()
                - sdpa(q.double(), k.double(), v.double(), is_causal=True)
            )
            .abs()
            .max()
            .item()
        )
        print(
            f"    {dtype!s:<14} rope_ref {t_ref:7.3f} s   sdpa {t_sdpa:7.3f} s   "
            f"ratio {t_ref / t_sdpa:5.2f}   max |diff vs fp64 sdpa| {err:.2e}"
        )


RSS_CHILD = r"""
import json, resource, sys, time
import numpy as np
sys.path.insert(0, sys.argv[1])
import rope_ref as rr
s = 32768
g = np.random.default_rng(0)
q, k, v = (g.standard_normal((1, 1, s, 128)) for _ in range(3))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
out = rr.attention(q, k, v, causal=True, rope=rr.Rope(128))
dt = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
# spot-check rows against a direct float64 softmax over their visible keys
qr = rr.apply_rope(q, np.arange(s), rr.Rope(128)); kr = rr.apply_rope(k, np.arange(s), rr.Rope(128))
worst = 0.0
for i in (0, 1, 4097, s - 1):
    sc = (kr[0, 0, : i + 1] @ qr[0, 0, i]) / np.sqrt(128)
    p = np.exp(sc - sc.max()); ref = (p / p.sum()) @ v[0, 0, : i + 1]
    worst = max(worst, float(np.abs(ref - out[0, 0, i]).max()))
print(json.dumps({"peak_rss_mib": peak / 1024, "inputs_rss_mib": before / 1024,
                  "seconds": dt, "spot_check_max_abs_diff": worst}))
"""


def bench_rss() -> None:
    print("(2) (1, 1, 32768, 128) float64 causal attention with RoPE, NumPy, fresh process")
    res = subprocess.run(
        [sys.executable, "-c", RSS_CHILD, str(ROOT)], capture_output=True, text=True, check=True
    )
    r = json.loads(res.stdout.strip().splitlines()[-1])
    print(
        f"    peak RSS {r['peak_rss_mib']:.0f} MiB (after making inputs: "
        f"{r['inputs_rss_mib']:.0f} MiB), {r['seconds']:.1f} s, "
        f"spot check vs direct softmax {r['spot_check_max_abs_diff']:.2e}"
    )


def bench_linear(repeat: int) -> None:
    print(f"(3) causal RoPE linear attention (1, 1, S, 64), NumPy float64, best of {repeat}")
    rope = rr.Rope(64)
    times = {}
    for s in (8192, 65536):
        g = np.random.default_rng(1)
        q, k, v = (g.standard_normal((1, 1, s, 64)) for _ in range(3))
        times[s] = best_of(
            lambda q=q, k=k, v=v: rr.linear_attention(q, k, v, rope=rope, causal=True), repeat
        )
        print(f"    S={s:<6} {times[s]:.3f} s")
    print(f"    time(65536) / time(8192) = {times[65536] / times[8192]:.2f} (linear would be 8)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", choices=["sdpa", "rss", "linear"])
    p.add_argument("--repeat", type=int, default=3)
    a = p.parse_args()
    if a.only in (None, "sdpa"):
        bench_sdpa(a.repeat)
    if a.only in (None, "rss"):
        bench_rss()
    if a.only in (None, "linear"):
        bench_linear(a.repeat)


if __name__ == "__main__":
    main()
