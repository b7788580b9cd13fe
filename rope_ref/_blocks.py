"""How eager CPU libraries run long elementwise pipelines: block sizes and threads.

Building an exact table (:mod:`rope_ref._tables`) and rotating a large ``x`` (the rotation
kernel) are long chains of elementwise operations. On eager CPU arrays (NumPy,
array-api-strict, PyTorch on the CPU) each operation makes a full-size temporary, so both
run on blocks that stay in cache, NumPy's on several threads (its ufuncs release the GIL).
Lazy (Dask), traced (JAX) and GPU arrays are left to their library: :func:`block_plan` is
None for them.

:data:`BLOCK_ELEMENTS` is the one knob: set, it replaces every block size (tests set it to
force many small, ragged blocks, or ``2**40`` for a single pass). Blocked and single-pass
results are the same bits.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import array_api_compat

from ._errors import RopeValueError
from ._typing import Array

__all__ = ["BLOCK_ELEMENTS", "BlockPlan", "block_plan", "block_threads", "run_blocks"]

#: Elements per block for every blocked pipeline (a table: positions x pairs; a rotation:
#: elements of ``x``); None: each library's measured plan (below). Tests set it.
BLOCK_ELEMENTS: int | None = None


@dataclass(frozen=True)
class BlockPlan:
    """How an eager CPU library runs long elementwise pipelines: on blocks of ``table`` (exact
    tables) or ``apply`` (rotations) elements, over ``threads`` threads."""

    table: int
    apply: int
    threads: int


#: Measured on 2 cores (benchmarks/run.py): NumPy's per-op cost is low, so 256 KiB blocks
#: that stay in cache win (6x faster than one pass on a 131072 x 64 table), and its ufuncs
#: release the GIL, so blocks can run on several threads; PyTorch parallelises each op itself
#: and needs larger blocks to do so.
_NUMPY_PLAN = (2**15, 2**16)
_TORCH_PLAN = (2**16, 2**18)


def block_threads() -> int:
    """Threads for NumPy blocks: ``ROPE_REF_THREADS`` if set, else the usable CPUs (max 8).

    Returns
    -------
    int
        At least 1.

    Raises
    ------
    RopeValueError
        ``ROPE_REF_THREADS`` is set to something that is not an integer.
    """
    raw = os.environ.get("ROPE_REF_THREADS", "").strip()
    if raw:
        try:
            return max(1, int(raw))
        except ValueError:
            raise RopeValueError(f"ROPE_REF_THREADS must be an integer, got {raw!r}") from None
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - platforms without sched_getaffinity
        n = os.cpu_count() or 1
    return max(1, min(n, 8))


def _library_plan(x: Array) -> BlockPlan | None:
    if array_api_compat.is_numpy_array(x):
        return BlockPlan(*_NUMPY_PLAN, threads=block_threads())
    if array_api_compat.is_array_api_strict_namespace(array_api_compat.array_namespace(x)):
        return BlockPlan(*_NUMPY_PLAN, threads=1)
    if array_api_compat.is_torch_array(x) and str(array_api_compat.device(x)).startswith("cpu"):
        return BlockPlan(*_TORCH_PLAN, threads=1)
    return None


def block_plan(x: Array) -> BlockPlan | None:
    """The plan for eager CPU arrays (NumPy, array-api-strict, PyTorch on the CPU); None for
    JAX (per-op dispatch, fused under jit), Dask (its own chunks) and GPU arrays.

    Parameters
    ----------
    x : array
        The array whose library decides (the positions for a table, ``x`` for a rotation).

    Returns
    -------
    BlockPlan or None
        Both block sizes are :data:`BLOCK_ELEMENTS` when that is set.
    """
    plan = _library_plan(x)
    if plan is None or BLOCK_ELEMENTS is None:
        return plan
    return BlockPlan(BLOCK_ELEMENTS, BLOCK_ELEMENTS, plan.threads)


def prefers_blocks(x: Array) -> bool:
    """True for eager CPU arrays (see :func:`block_plan`)."""
    return _library_plan(x) is not None


def run_blocks(fn: Callable[[Any], Any], items: list[Any], threads: int) -> list[Any]:
    """``[fn(item) for item in items]``, on up to ``threads`` threads, results in order."""
    if threads <= 1 or len(items) <= 1:
        return [fn(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(threads, len(items))) as pool:
        return list(pool.map(fn, items))
