"""rope_ref beside what users would otherwise run, in one process run: medians, spread, ratios.

    python -m benchmarks.run                   # everything below except the Dask job
    python -m benchmarks.run --only apply table
    python -m benchmarks.run --dask-scale      # also the 1,048,576-token Dask job (minutes)

(from the repository root: the test adapters in ``backends/`` are imported as a top-level
package, as the tests do with pytest's ``pythonpath``).

Every comparison times both sides in this one process, one after the other, and reports the
median of ``--repeat`` runs with the spread (min..max); the ratio is of the medians.
Results go to ``benchmarks/results/latest.json`` and ``latest.md`` (``--out`` to change).

Targets (issue 7): apply_rope on q and k of (1, 32, 4096, 128) float32 at <= 0.5x Hugging Face
``apply_rotary_pos_emb`` with its ``LlamaRotaryEmbedding`` tables (torch CPU) and <= 6x a NumPy
copy of the same bytes; the exact 131072 x 64 table at <= 3x plain float64 ``cos(m * theta)``;
attention (issue 4) at <= 2x / 1.5x torch SDPA in float32 / float64, <= 1 GiB peak at 32768
keys, and linear attention 8192 -> 65536 at <= 10x.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import rope_ref as rr

try:
    import backends
except ModuleNotFoundError as exc:  # run as a file, or from another folder
    raise SystemExit(
        "the benchmarks import the repository's backends/ package: run them from the "
        "repository root as `python -m benchmarks.run`"
    ) from exc

ROOT = Path(__file__).resolve().parent.parent

RESULTS: list[dict[str, Any]] = []


def _sync(out: Any) -> None:
    if hasattr(out, "compute"):  # Dask
        out.compute()
    for o in out if isinstance(out, tuple) else (out,):
        if hasattr(o, "block_until_ready"):  # JAX dispatches asynchronously
            o.block_until_ready()


def time_pair(
    fns: dict[str, Callable[[], Any]], repeat: int, before: Callable[[], None] | None = None
) -> dict[str, list[float]]:
    """Seconds per call of each function: one warm-up call, then ``repeat`` timed calls in a
    row, one function after the other. (Alternating call by call was tried first: torch's
    OpenMP threads spin for a while after each op and slowed whatever NumPy ran next.)"""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for name, fn in fns.items():
        _sync(fn())
        for _ in range(repeat):
            if before is not None:
                before()
            t = time.perf_counter()
            _sync(fn())
            times[name].append(time.perf_counter() - t)
    return times


def record(
    bench: str,
    times: dict[str, list[float]],
    ours: str,
    peer: str,
    target: float | None,
    note: str = "",
) -> dict[str, Any]:
    med = {k: statistics.median(v) for k, v in times.items()}
    row = {
        "bench": bench,
        "ours": ours,
        "peer": peer,
        "ours_s": med[ours],
        "peer_s": med[peer],
        "ours_spread_s": [min(times[ours]), max(times[ours])],
        "peer_spread_s": [min(times[peer]), max(times[peer])],
        "ratio": med[ours] / med[peer],
        "target": target,
        "met": None if target is None else med[ours] / med[peer] <= target,
        "repeats": len(times[ours]),
        "note": note,
    }
    RESULTS.append(row)
    flag = (
        "" if target is None else f"  (target <= {target:g}: {'met' if row['met'] else 'NOT met'})"
    )
    print(
        f"  {bench}: {ours} {med[ours] * 1e3:.1f} ms / {peer} {med[peer] * 1e3:.1f} ms "
        f"= {row['ratio']:.2f}{flag}",
        flush=True,
    )
    return row


# ---------------------------------------------------------------------------------------------
def bench_apply(repeat: int) -> None:
    """q and k of (1, 32, 4096, 128) float32: rope_ref (NumPy, torch) vs HF vs a copy."""
    import torch
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

    print(
        f"apply_rope, q and k (1, 32, 4096, 128) float32, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), median of {repeat}",
        flush=True,
    )
    shape, s = (1, 32, 4096, 128), 4096
    g = np.random.default_rng(0)
    q, k = (g.standard_normal(shape, dtype=np.float32) for _ in range(2))
    pos = np.arange(s)
    rope = rr.Rope(128, base=500_000.0)
    cfg = LlamaConfig(
        hidden_size=4096, num_attention_heads=32, rope_theta=500_000.0, max_position_embeddings=8192
    )
    emb = LlamaRotaryEmbedding(cfg)
    tq, tk = torch.from_numpy(q), torch.from_numpy(k)
    tpos = torch.arange(s)
    pid = tpos[None]

    def hf() -> Any:
        cos, sin = emb(tq, pid)
        return apply_rotary_pos_emb(tq, tk, cos, sin)

    def ours_numpy() -> Any:
        return rr.apply_rope(q, pos, rope), rr.apply_rope(k, pos, rope)

    def ours_torch() -> Any:
        return rr.apply_rope(tq, tpos, rope), rr.apply_rope(tk, tpos, rope)

    def copy() -> Any:
        return q.copy(), k.copy()

    # the exact result, checked once: HF (float32 angles) is within the float32 model
    yq, _ = ours_numpy()
    hq, _ = hf()
    rr.testing.assert_close(hq.numpy(), yq, rope=rope, positions=pos)
    cold = rr.clear_cache  # every repeat builds its table again (shared by q and k)
    t = time_pair(
        {
            "rope_ref[numpy]": ours_numpy,
            "hf": hf,
            "numpy copy": copy,
            "rope_ref[torch]": ours_torch,
        },
        repeat,
        before=cold,
    )
    record(
        "apply q,k vs HF (NumPy backend)",
        t,
        "rope_ref[numpy]",
        "hf",
        0.5,
        "HF time includes LlamaRotaryEmbedding.forward; ours the exact table (cold cache)",
    )
    record("apply q,k vs copy floor (NumPy)", t, "rope_ref[numpy]", "numpy copy", 6.0)
    record("apply q,k vs HF (torch backend)", t, "rope_ref[torch]", "hf", 0.5)


def bench_table(repeat: int) -> None:
    print(f"cos/sin table, 131072 positions x 64 pairs, float64, median of {repeat}", flush=True)
    rope = rr.Rope(128, base=500_000.0)
    pos = np.arange(131072)
    inv = rope.inv_freq()

    def plain() -> Any:
        a = pos[:, None] * inv
        return np.cos(a), np.sin(a)

    c, _ = rope.cos_sin(pos)
    pc, _ = plain()
    t = time_pair({"exact": lambda: rope.cos_sin(pos), "plain": plain}, repeat)
    record(
        "table 131072 x 64",
        t,
        "exact",
        "plain",
        3.0,
        f"plain float64 max |error| {float(np.max(np.abs(pc - c))):.1e}",
    )


def bench_backends(repeat: int) -> None:
    """apply_rope on every available backend beside a plain float32 rotate_half there."""
    shape = (1, 32, 4096, 128)
    print(
        f"apply_rope per backend vs plain rotate_half (float32 table), q {shape} float32, "
        f"median of {repeat}",
        flush=True,
    )
    rope = rr.Rope(128, base=500_000.0)
    x_np = np.random.default_rng(0).standard_normal(shape)
    for bk in backends.available():
        if "float32" not in bk.dtypes or bk.name == "numpy-readonly":
            continue
        bk.setup()
        xp = bk.xp
        x = bk.from_numpy(x_np, "float32")
        pos = bk.from_numpy(np.arange(shape[2]))
        inv = rope.inv_freq(xp, dtype=bk.dtype("float32"), device=bk.device)

        def plain(xp: Any = xp, x: Any = x, pos: Any = pos, inv: Any = inv) -> Any:
            ang = xp.astype(pos, inv.dtype)[:, None] * inv[None, :]
            cos = xp.concat([xp.cos(ang), xp.cos(ang)], axis=-1)
            sin = xp.concat([xp.sin(ang), xp.sin(ang)], axis=-1)
            h = x.shape[-1] // 2
            return x * cos + xp.concat([-x[..., h:], x[..., :h]], axis=-1) * sin

        t = time_pair(
            {"rope_ref": lambda x=x, pos=pos: rr.apply_rope(x, pos, rope), "plain": plain},
            repeat,
            before=rr.clear_cache,
        )
        record(f"apply q vs plain ({bk.name})", t, "rope_ref", "plain", None)


def bench_attention(repeat: int) -> None:
    import torch

    sdpa = torch.nn.functional.scaled_dot_product_attention
    shape = (1, 8, 4096, 128)
    print(
        f"causal attention {shape}, torch SDPA ({torch.get_num_threads()} threads), "
        f"median of {repeat}",
        flush=True,
    )
    g = torch.Generator().manual_seed(0)
    for dtype, target in ((torch.float32, 2.0), (torch.float64, 1.5)):
        q, k, v = (torch.randn(shape, generator=g, dtype=dtype) for _ in range(3))
        t = time_pair(
            {
                "rope_ref": lambda q=q, k=k, v=v: rr.attention(q, k, v, causal=True),
                "sdpa": lambda q=q, k=k, v=v: sdpa(q, k, v, is_causal=True),
            },
            repeat,
        )
        record(
            f"attention vs SDPA {str(dtype).split('.')[-1]}",
            t,
            "rope_ref",
            "sdpa",
            target,
            "rope_ref computes in float64 for every input dtype",
        )


RSS_CHILD = r"""
import json, resource, sys, time
import numpy as np
import rope_ref as rr

def high_water_kib():
    # VmHWM belongs to this process image; ru_maxrss would carry the parent's peak over exec
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

s = 32768
g = np.random.default_rng(0)
q, k, v = (g.standard_normal((1, 1, s, 128)) for _ in range(3))
before = high_water_kib()
t = time.perf_counter()
out = rr.attention(q, k, v, causal=True, rope=rr.Rope(128))
dt = time.perf_counter() - t
peak = high_water_kib()
qr = rr.apply_rope(q, np.arange(s), rr.Rope(128)); kr = rr.apply_rope(k, np.arange(s), rr.Rope(128))
worst = 0.0
for i in (0, 1, 4097, s - 1):   # spot rows against a direct float64 softmax
    sc = (kr[0, 0, : i + 1] @ qr[0, 0, i]) / np.sqrt(128)
    p = np.exp(sc - sc.max()); ref = (p / p.sum()) @ v[0, 0, : i + 1]
    worst = max(worst, float(np.abs(ref - out[0, 0, i]).max()))
print(json.dumps({"peak_rss_mib": peak / 1024, "inputs_rss_mib": before / 1024,
                  "seconds": dt, "spot_check_max_abs_diff": worst}))
"""


def bench_attention_memory() -> None:
    print(
        "chunked attention (1, 1, 32768, 128) float64 causal with RoPE, fresh process", flush=True
    )
    res = subprocess.run(
        [sys.executable, "-c", RSS_CHILD], capture_output=True, text=True, check=True, cwd=ROOT
    )  # -c: the working directory comes first
    r = json.loads(res.stdout.strip().splitlines()[-1])
    row = {
        "bench": "attention peak RSS at 32768 keys",
        "peak_rss_mib": r["peak_rss_mib"],
        "target_mib": 1024,
        "met": r["peak_rss_mib"] <= 1024,
        **r,
    }
    RESULTS.append(row)
    print(
        f"  peak RSS {r['peak_rss_mib']:.0f} MiB (inputs {r['inputs_rss_mib']:.0f} MiB), "
        f"{r['seconds']:.1f} s, spot rows vs direct softmax {r['spot_check_max_abs_diff']:.1e}"
    )


def bench_linear(repeat: int) -> None:
    print(f"causal RoPE linear attention (1, 1, S, 64) float64, median of {repeat}", flush=True)
    rope = rr.Rope(64)
    t: dict[str, list[float]] = {}
    for s in (8192, 65536):
        g = np.random.default_rng(1)
        q, k, v = (g.standard_normal((1, 1, s, 64)) for _ in range(3))
        t.update(
            time_pair(
                {
                    f"S={s}": lambda q=q, k=k, v=v: rr.linear_attention(
                        q, k, v, rope=rope, causal=True
                    )
                },
                repeat,
            )
        )
    record("linear attention 65536 / 8192", t, "S=65536", "S=8192", 10.0, "linear is 8")


def bench_dask_scale() -> None:
    print(
        "Dask LocalCluster (2 workers): golden outputs for 1,048,576 tokens x 32 x 128", flush=True
    )
    res = subprocess.run(
        [sys.executable, "-m", "benchmarks.dask_scale", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if res.returncode != 0:
        raise RuntimeError(res.stderr[-4000:])
    r = json.loads(res.stdout.strip().splitlines()[-1])
    RESULTS.append(
        {
            "bench": "dask 1,048,576 x 32 x 128 golden outputs",
            **r,
            "target_mib": 2048,
            "met": r["peak_mib"] <= 2048,
        }
    )
    print(
        f"  {r['seconds']:.0f} s, peak memory {r['peak_mib']:.0f} MiB (all processes), "
        f"{r['gib_written']:.1f} GiB written"
    )


def markdown() -> str:
    lines = ["| benchmark | rope_ref | peer | ratio | target | met |", "|---|---|---|---|---|---|"]
    for r in RESULTS:
        if "ratio" in r:
            spread = "{:.1f}..{:.1f}".format(*(1e3 * x for x in r["ours_spread_s"]))
            pspread = "{:.1f}..{:.1f}".format(*(1e3 * x for x in r["peer_spread_s"]))
            target = "" if r["target"] is None else f"<= {r['target']:g}"
            lines.append(
                f"| {r['bench']} | {r['ours']} {r['ours_s'] * 1e3:.1f} ms ({spread}) "
                f"| {r['peer']} {r['peer_s'] * 1e3:.1f} ms ({pspread}) | {r['ratio']:.2f} "
                f"| {target} "
                f"| {'' if r['met'] is None else ('yes' if r['met'] else 'NO')} |"
            )
        else:
            value = r.get("peak_rss_mib", r.get("peak_mib"))
            lines.append(
                f"| {r['bench']} | {value:.0f} MiB peak | | | <= {r['target_mib']} MiB "
                f"| {'yes' if r['met'] else 'NO'} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    choices = ["apply", "table", "backends", "attention", "memory", "linear"]
    p.add_argument("--only", nargs="+", choices=choices, default=choices)
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--dask-scale", action="store_true", help="also run benchmarks.dask_scale")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    a = p.parse_args()
    env = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "numpy": np.__version__,
        "rope_ref": rr.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    print(f"rope_ref {rr.__version__}, numpy {np.__version__}, {os.cpu_count()} CPUs")
    steps = {
        "apply": lambda: bench_apply(a.repeat),
        "table": lambda: bench_table(a.repeat),
        "backends": lambda: bench_backends(a.repeat),
        "attention": lambda: bench_attention(max(3, a.repeat // 2)),
        "memory": bench_attention_memory,
        "linear": lambda: bench_linear(3),
    }
    for name in choices:
        if name in a.only:
            steps[name]()
    if a.dask_scale:
        bench_dask_scale()
    a.out.mkdir(parents=True, exist_ok=True)
    env["max_rss_mib_this_process"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    (a.out / "latest.json").write_text(json.dumps({"env": env, "results": RESULTS}, indent=1))
    table = markdown()
    (a.out / "latest.md").write_text(table)
    print("\n" + table)
    print(f"written: {a.out / 'latest.json'}, {a.out / 'latest.md'}")


if __name__ == "__main__":
    main()
