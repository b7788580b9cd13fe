"""The attention backward pass in bounded memory (issue 15, point 1): peak RSS and time.

    python -m benchmarks.backward                # (1, 1, 32768, 64) float64, causal, RoPE
    python -m benchmarks.backward --n 16384      # a shorter run

Each measurement (the forward ``rr.attention`` and the blocked backward ``attention_vjp`` with
the default memory budget) runs in a fresh subprocess that builds its inputs, runs once and
reports its wall time and its peak resident set (``VmHWM`` from /proc/self/status), so that
neither sees the other's memory. Both subprocesses are started from this one run, one after
the other. Target: backward peak RSS <= 1 GiB (the one-shot VJP would need about
6 x 8 x n^2 bytes: 51 GB at n = 32768). Prints a markdown table and writes it to
``benchmarks/results/backward-<date>.md`` (``--out`` to change).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GIB = 2**30


def _vmhwm() -> int:
    """Peak resident set of this process so far, in bytes (Linux)."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def _child(which: str, n: int, d: int) -> None:
    """Run one pass once; print {seconds, peak_rss, rss_before} as JSON."""
    import numpy as np

    import rope_ref as rr
    from rope_ref._vjp_blocked import attention_vjp_blocked

    g = np.random.default_rng(0)
    q, k, v, d_out = (g.standard_normal((1, 1, n, d)) for _ in range(4))
    kw = {"rope": rr.Rope(d), "causal": True}
    before = _vmhwm()
    t0 = time.perf_counter()
    if which == "forward":
        out = rr.attention(q, k, v, **kw)
        shapes = [tuple(out.shape)]
    else:
        grads = attention_vjp_blocked(q, k, v, d_out, **kw)  # the default memory budget
        shapes = [tuple(x.shape) for x in grads]
    seconds = time.perf_counter() - t0
    print(
        json.dumps(
            {"seconds": seconds, "peak_rss": _vmhwm(), "rss_before": before, "shapes": shapes}
        )
    )


def _measure(which: str, n: int, d: int) -> dict[str, float]:
    cmd = [sys.executable, "-m", "benchmarks.backward", "--child", which, "--n", str(n)]
    cmd += ["--d", str(d)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=ROOT)
    if res.returncode != 0:
        raise SystemExit(f"{which} failed (exit {res.returncode}):\n{res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=32768, help="sequence length (Sq = Sk)")
    ap.add_argument("--d", type=int, default=64, help="head_dim")
    ap.add_argument("--child", choices=("forward", "backward"), help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=None, help="markdown file to write")
    args = ap.parse_args()
    if args.child:
        _child(args.child, args.n, args.d)
        return
    n, d = args.n, args.d
    fwd = _measure("forward", n, d)
    bwd = _measure("backward", n, d)
    one_shot = 6 * 8 * n * n
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    lines = [
        f"# Attention backward in bounded memory ({date})",
        "",
        f"(1, 1, {n}, {d}) float64, causal, RoPE (Rope({d})), default memory budget; "
        "each pass in a fresh subprocess, one run after the other.",
        f"Machine: {platform.machine()}, {platform.python_implementation()} "
        f"{platform.python_version()}, {_cpus()} CPUs (shared, loaded).",
        "",
        "| pass | time (s) | peak RSS (MiB) | RSS before the pass (MiB) | time / forward |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, r in (("forward `attention`", fwd), ("backward `attention_vjp` (blocked)", bwd)):
        lines.append(
            f"| {name} | {r['seconds']:.1f} | {r['peak_rss'] / 2**20:.0f} | "
            f"{r['rss_before'] / 2**20:.0f} | {r['seconds'] / fwd['seconds']:.2f} |"
        )
    lines += [
        "",
        f"Backward peak RSS {bwd['peak_rss'] / GIB:.3f} GiB "
        f"({'within' if bwd['peak_rss'] <= GIB else 'OVER'} the 1 GiB target); the one-shot "
        f"VJP's score temporaries alone would be 6 x 8 x {n}^2 bytes = {one_shot / 1e9:.1f} GB.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    out = args.out or ROOT / "benchmarks" / "results" / f"backward-{date}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(f"written to {out}")


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 0


if __name__ == "__main__":
    main()
