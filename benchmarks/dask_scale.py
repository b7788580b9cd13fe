"""Golden outputs for 1,048,576 tokens x 32 heads x 128 on a dask.distributed LocalCluster.

    python -m benchmarks.dask_scale [--tokens 1048576] [--heads 32] [--chunk 1024]
        [--workers 2] [--out DIR] [--scheduler tcp://HOST:PORT] [--keep] [--json] [--progress]

Runs ``rope_ref.testing.write_vectors_dask`` (rr.apply_rope on chunked Dask arrays, streamed
into x.npy / y.npy plus a manifest, each block's sha256 taken on the worker that wrote it) on a
LocalCluster of ``--workers`` single-threaded worker
processes, sampling the resident memory of this process and every child (scheduler, nannies,
workers) ten times a second; the peak of their sum is reported. With ``--scheduler`` the same
call runs on an existing cluster instead (then ``--out`` must be visible to every worker);
nothing else changes. Afterwards a few chunks are read back and checked bit for bit against
``rr.apply_rope`` on NumPy.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil

import rope_ref as rr
from rope_ref.testing import write_vectors_dask


class PeakMemory(threading.Thread):
    """Peak of the summed RSS of this process and all its descendants."""

    def __init__(self, interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.interval, self.peak, self._stop_flag = interval, 0, threading.Event()

    def run(self) -> None:
        me = psutil.Process()
        while not self._stop_flag.is_set():
            total = 0
            for p in [me, *me.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):  # a process that just ended
                    total += p.memory_info().rss
            self.peak = max(self.peak, total)
            time.sleep(self.interval)

    def stop(self) -> int:
        self._stop_flag.set()
        self.join()
        return self.peak


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=1_048_576)
    p.add_argument("--heads", type=int, default=32)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--chunk", type=int, default=1024, help="tokens per Dask chunk")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--scheduler", help="address of an existing dask.distributed scheduler")
    p.add_argument("--out", help="output directory (default: a temporary one, removed after)")
    p.add_argument("--keep", action="store_true", help="keep the temporary output")
    p.add_argument("--json", action="store_true", help="print the result as one JSON line last")
    p.add_argument("--progress", action="store_true", help="print blocks done/total to stderr")
    a = p.parse_args()

    from dask.distributed import Client, LocalCluster

    out = Path(a.out) if a.out else Path(tempfile.mkdtemp(prefix="rope-ref-dask-"))
    rope = rr.Rope(a.head_dim, base=500_000.0)
    meter = PeakMemory()
    meter.start()
    t0 = time.perf_counter()
    if a.scheduler:
        client = Client(a.scheduler)
        cluster = None
    else:
        cluster = LocalCluster(
            n_workers=a.workers,
            threads_per_worker=1,
            processes=True,
            memory_limit="900MiB",
            dashboard_address=None,
        )
        client = Client(cluster)
    t1 = time.perf_counter()
    manifest = write_vectors_dask(
        out,
        rope=rope,
        tokens=a.tokens,
        heads=a.heads,
        chunk_tokens=a.chunk,
        client=client,
        progress=a.progress,
    )
    t2 = time.perf_counter()
    client.close()
    if cluster is not None:
        cluster.close()
    peak = meter.stop()

    # read back the first, a middle and the last chunk; compare with NumPy bit for bit
    x = np.load(out / "x.npy", mmap_mode="r")
    y = np.load(out / "y.npy", mmap_mode="r")
    bounds = manifest["chunks"]["bounds"]
    checked = 0
    for i in (0, len(bounds) // 2 - 1, len(bounds) - 2):
        lo, hi = bounds[i], bounds[i + 1]
        want = rr.apply_rope(np.asarray(x[lo:hi]), np.arange(lo, hi)[:, None], rope)
        assert np.array_equal(np.asarray(y[lo:hi]), want), f"chunk {i} differs"
        checked += hi - lo
    written = sum((out / f).stat().st_size for f in ("x.npy", "y.npy"))
    result = {
        "tokens": a.tokens,
        "heads": a.heads,
        "head_dim": a.head_dim,
        "chunk": a.chunk,
        "workers": a.workers if not a.scheduler else None,
        "seconds": t2 - t1,
        "startup_seconds": t1 - t0,
        "peak_mib": peak / 2**20,
        "gib_written": written / 2**30,
        "tokens_checked_bitwise": checked,
        "out": str(out),
    }
    print(
        f"{a.tokens} tokens x {a.heads} x {a.head_dim}: {t2 - t1:.1f} s, peak memory "
        f"{peak / 2**20:.0f} MiB (all processes), {written / 2**30:.1f} GiB written to {out}; "
        f"{checked} tokens read back and equal to NumPy bit for bit"
    )
    if not a.out and not a.keep:
        shutil.rmtree(out)
    if a.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
