"""Golden outputs at scale with Dask: millions of tokens, written chunk by chunk.

An optional part of the package: Dask (``pip install rope-ref[dask]``) is imported only when
:func:`write_vectors_dask` or :func:`run_vectors_dask` runs, never by ``import rope_ref`` nor
by ``import rope_ref.testing``. Reading the files back (:func:`read_vectors_dask`) needs only
NumPy.

:func:`write_vectors_dask` builds the inputs and rope_ref's exact output as lazy, chunked Dask
arrays (``rr.apply_rope`` on Dask arrays is the same Array-API code as on NumPy) and streams
both into two ``.npy`` files: each block is written at its own offset, and its sha256 taken,
by whichever worker computed it. Nothing is ever held whole: peak memory is a few chunks per
worker, whatever the number of tokens. It runs on Dask's threaded scheduler in this process,
on a local scheduler named by ``scheduler`` (``"synchronous"``, ``"processes"``), or on a
``dask.distributed`` cluster (a ``client``, or ``scheduler="tcp://HOST:PORT"``; then ``out``
must be on a file system every worker sees).

The files: ``x.npy`` (inputs, (tokens, heads, head_dim)), ``y.npy`` (the exact rotation at
positions 0 .. tokens-1, rounded once to ``dtype``), and ``manifest.json`` with the rope
parameters, shapes, dtype, tolerances, chunk boundaries and the sha256 of every chunk's bytes
in each file (so a reader can verify any part without reading the rest). The ``.npy`` format
is a short text header then raw little-endian values: C++ and Rust read it with a few lines.
Nothing is pickled, and the reader opens the files with ``allow_pickle=False``.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import importlib
import itertools
import json
import math
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO, cast

import numpy as np

from .._config_reader import describe, strict_json
from .._errors import RopeError, RopeTypeError, RopeValueError
from .._rope import Rope
from .._typing import Array
from ._assert import default_tolerance
from ._vectors import MAX_HEADER_BYTES, _read_file, _rope_record

__all__ = [
    "DaskUnavailableError",
    "add_dask_arguments",
    "read_vectors_dask",
    "reject_dask_options",
    "run_vectors_dask",
    "write_vectors_dask",
]

_HEX = set("0123456789abcdef")
_DTYPES = ("float16", "float32", "float64")
#: ``scheduler`` names that run on Dask's local schedulers (anything else is an address).
_LOCAL_SCHEDULERS = (
    "threads",
    "threading",
    "synchronous",
    "sync",
    "single-threaded",
    "processes",
    "multiprocessing",
)
_DIGEST = 32  # bytes of a sha256
_RECORD = 2 * _DIGEST + 8  # per block: sha256(x bytes), sha256(y bytes), max|y| as float64

ProgressCallback = Callable[[int, int], None]


class DaskUnavailableError(RopeError, ImportError):
    """Dask (or ``dask.distributed``) is needed and not installed: ``pip install
    rope-ref[dask]``. A :class:`rope_ref.RopeError` and an ``ImportError``."""


def _import(module: str) -> Any:
    """``importlib.import_module(module)``, a missing one raised as DaskUnavailableError."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        what = "dask.distributed" if module.startswith("distributed") else "Dask"
        raise DaskUnavailableError(
            f"writing golden vectors with Dask needs {what} ({module} cannot be imported: "
            f"{exc}); install rope-ref[dask] (pip install 'rope-ref[dask]')"
        ) from None


# --------------------------------------------------------------------------- writing


def _create_npy(path: Path, shape: tuple[int, ...], dtype: np.dtype) -> int:
    """Write the header and size the file (sparse); return the data offset."""
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        offset = f.tell()
        f.truncate(offset + math.prod(shape) * dtype.itemsize)
    return offset


def _write_block(
    xb: np.ndarray,
    yb: np.ndarray,
    block_info: dict[Any, Any] | None = None,
    *,
    paths: tuple[str, str],
    offsets: tuple[int, int],
    row_bytes: int,
) -> np.ndarray:
    """Write one block of x and of y in place; return their digests and max|y| (72 bytes).

    Runs on a worker (module level, so the processes and distributed schedulers can send it).
    """
    assert block_info is not None  # map_blocks always passes it (no meta call: meta is given)
    start = int(block_info[0]["array-location"][0][0])
    record = b""
    for block, path, offset in zip((xb, yb), paths, offsets, strict=True):
        data = np.ascontiguousarray(block)
        raw = data.tobytes()
        if len(raw) != data.shape[0] * row_bytes:  # whole trailing axes, or a bug
            raise RuntimeError(f"block at row {start} of {path} has shape {data.shape}")
        with open(path, "r+b") as f:
            f.seek(offset + start * row_bytes)
            f.write(raw)
        record += hashlib.sha256(raw).digest()
    biggest = float(np.max(np.abs(yb.astype(np.float64)))) if yb.size else 0.0
    return np.frombuffer(record + struct.pack("<d", biggest), dtype=np.uint8).reshape(1, _RECORD)


class _StderrProgress:
    """``progress=True``: "blocks done/total" on a stream (stderr by default).

    On a terminal one line rewritten in place; otherwise (logs, CI) a line every 5% or so
    and the last one.
    """

    def __init__(self, label: str, stream: TextIO | None = None) -> None:
        self.label, self.stream, self.t0 = label, stream, time.perf_counter()

    def __call__(self, done: int, total: int) -> None:
        stream = self.stream if self.stream is not None else sys.stderr
        tty = bool(getattr(stream, "isatty", lambda: False)())
        step = max(1, total // 20)
        if not tty and done % step and done != total:
            return
        pct = 100 * done // total if total else 100
        text = (
            f"{self.label}: {done}/{total} blocks written ({pct}%), "
            f"{time.perf_counter() - self.t0:.1f} s"
        )
        if tty:
            end = "\n" if done == total else ""
            print("\r" + text, end=end, file=stream, flush=True)
        else:
            print(text, file=stream, flush=True)


def _check_size(name: str, value: Any, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise RopeTypeError(f"{name} must be an int, got {describe(value)}")
    if value < least:
        raise RopeValueError(f"{name} must be >= {least}, got {int(value)}")
    return int(value)


def _progress_callback(progress: Any) -> ProgressCallback | None:
    if progress is None or progress is False:
        return None
    if progress is True:
        return _StderrProgress("rope-ref vectors (dask)")
    if callable(progress):
        return cast(ProgressCallback, progress)
    raise RopeTypeError(
        f"progress must be True, False or a callable(done, total), got {describe(progress)}"
    )


def _run_local(
    result: Any, scheduler: str | None, report: ProgressCallback | None, total: int
) -> np.ndarray:
    """Compute the per-block records on a Dask local scheduler, counting finished blocks."""
    dask = _import("dask")
    callbacks = _import("dask.callbacks")
    kwargs = {} if scheduler is None else {"scheduler": scheduler}
    if report is None:
        return np.asarray(dask.compute(result, **kwargs)[0])
    keys = set(_import("dask.core").flatten(result.__dask_keys__()))
    done = [0]

    def posttask(key: Any, *_: Any) -> None:  # runs in the calling thread (dask.local)
        if key in keys:
            done[0] += 1
            report(done[0], total)

    with callbacks.Callback(posttask=posttask):
        return np.asarray(dask.compute(result, **kwargs)[0])


def _run_distributed(
    result: Any, client: Any, report: ProgressCallback | None, total: int
) -> np.ndarray:
    """Compute the per-block records on a dask.distributed client, one future per block."""
    distributed = _import("distributed")
    blocks = list(result.to_delayed().ravel())
    futures = client.compute(blocks)
    try:
        if report is not None:
            for done, _ in enumerate(distributed.as_completed(futures), start=1):
                report(done, total)
        parts = client.gather(futures)
    except BaseException:
        client.cancel(futures)
        raise
    return np.concatenate([np.asarray(p) for p in parts], axis=0)


def write_vectors_dask(
    out: str | Path,
    *,
    rope: Rope,
    tokens: int,
    heads: int,
    chunk_tokens: int = 1024,
    dtype: str = "float32",
    seed: int = 0,
    client: Any = None,
    scheduler: str | None = None,
    progress: bool | ProgressCallback = False,
    connect_timeout: float = 30.0,
) -> dict[str, Any]:
    """Write x, y = rr.apply_rope(x, arange(tokens)) and a manifest, chunk by chunk, with Dask.

    Needs Dask (``pip install rope-ref[dask]``), imported only when this runs. Peak memory is
    a few chunks per worker, whatever ``tokens`` is; each worker writes its blocks in place
    and takes their sha256 while they are in memory (no second pass over the files).

    Parameters
    ----------
    out : str or Path
        Directory (created); on a cluster, a path every worker can write.
    rope : Rope
        The specification; ``rope.head_dim`` is the last axis.
    tokens : int
        Rows of x, >= 0 (the "thd" layout: x is (tokens, heads, head_dim)); token t sits at
        position t.
    heads : int
        Heads per token, >= 1.
    chunk_tokens : int, optional
        Tokens per Dask block, >= 1 (default 1024). Memory per worker is a few times
        ``chunk_tokens * heads * head_dim * 8`` bytes.
    dtype : {"float32", "float16", "float64"}, optional
        Inputs and outputs (default "float32").
    seed : int, optional
        Inputs are ``dask.array.random.default_rng(seed).standard_normal`` in float64,
        rounded to ``dtype`` (they are in x.npy: readers never regenerate them). Default 0.
    client : dask.distributed.Client, optional
        Run on this cluster (default: none).
    scheduler : str, optional
        Without ``client``: ``"threads"`` (the default), ``"synchronous"`` or
        ``"processes"`` (Dask's local schedulers), or the address of a ``dask.distributed``
        scheduler (``"tcp://HOST:PORT"``), connected to for this call and closed after.
    progress : bool or callable, optional
        ``True`` prints "done/total blocks written" to stderr as blocks finish (a terminal
        gets one line rewritten in place, a log a line every 5% or so); a callable is called
        as ``progress(done, total)`` in the calling thread after each block. Default False.
    connect_timeout : float, optional
        Seconds to wait for the scheduler at an address (default 30).

    Returns
    -------
    dict
        The manifest (also written as ``manifest.json``).

    Raises
    ------
    DaskUnavailableError
        Dask, or ``dask.distributed`` for an address, is not installed (an ``ImportError``).
    rope_ref.RopeTypeError
        An argument of the wrong type (``rope`` not a Rope, a size not an int, ``progress``
        neither a bool nor a callable).
    rope_ref.RopeValueError
        A size out of range, an unknown dtype, ``out`` naming a file, both ``client`` and
        ``scheduler``, or a scheduler address that cannot be reached.

    Examples
    --------
    >>> import tempfile
    >>> import rope_ref as rr
    >>> from rope_ref.testing import read_vectors_dask, write_vectors_dask
    >>> with tempfile.TemporaryDirectory() as d:  # doctest: +SKIP
    ...     m = write_vectors_dask(d, rope=rr.Rope(64), tokens=5000, heads=2, chunk_tokens=2048)
    ...     _, x, y = read_vectors_dask(d)  # every chunk's sha256 checked
    ...     print(m["chunks"]["bounds"], y.shape)
    [0, 2048, 4096, 5000] (5000, 2, 64)
    """
    if not isinstance(rope, Rope):
        raise RopeTypeError(f"rope must be a rope_ref.Rope, got {describe(rope)}")
    tokens = _check_size("tokens", tokens, 0)
    heads = _check_size("heads", heads, 1)
    chunk_tokens = _check_size("chunk_tokens", chunk_tokens, 1)
    seed = _check_size("seed", seed, 0)
    if not isinstance(dtype, str) or dtype not in _DTYPES:
        raise RopeValueError(f"dtype must be one of {', '.join(_DTYPES)}, got {describe(dtype)}")
    if client is not None and scheduler is not None:
        raise RopeValueError("give client or scheduler, not both")
    if scheduler is not None and (not isinstance(scheduler, str) or not scheduler.strip()):
        raise RopeValueError(
            f"scheduler must be a local scheduler name ({', '.join(_LOCAL_SCHEDULERS)}) or a "
            f"dask.distributed address such as 'tcp://HOST:8786', got {describe(scheduler)}"
        )
    report = _progress_callback(progress)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RopeValueError(f"out {str(out)!r} is a file, not a directory")

    da = _import("dask.array")
    np_dtype = np.dtype(dtype)
    shape = (tokens, heads, rope.head_dim)
    row_bytes = heads * rope.head_dim * np_dtype.itemsize
    bounds = [
        0,
        *itertools.accumulate(
            min(chunk_tokens, tokens - a) for a in range(0, tokens, chunk_tokens)
        ),
    ]

    own_client = None
    if scheduler is not None and scheduler.strip() not in _LOCAL_SCHEDULERS:
        distributed = _import("distributed")
        try:
            own_client = distributed.Client(
                scheduler.strip(), timeout=connect_timeout, set_as_default=False
            )
        except (OSError, TimeoutError, ValueError, TypeError) as exc:
            raise RopeValueError(
                f"scheduler {scheduler!r}: cannot connect to a dask.distributed scheduler "
                f"there ({type(exc).__name__}: {' '.join(str(exc).split())[:200]})"
            ) from None
        client = own_client
    try:
        out.mkdir(parents=True, exist_ok=True)
        paths, offsets = [], []
        for name in ("x", "y"):
            path = out / f"{name}.npy"
            offsets.append(_create_npy(path, shape, np_dtype))
            paths.append(str(path))
        n_blocks = len(bounds) - 1
        if n_blocks:
            chunks = (chunk_tokens, heads, rope.head_dim)
            x = da.random.default_rng(seed).standard_normal(shape, chunks=chunks)
            x = x.astype(np_dtype)
            positions = da.arange(tokens, chunks=chunk_tokens)[:, None]
            # one block per token range, whole trailing axes (the half layout's concat splits)
            y = _apply_rope_dask(x, positions, rope).rechunk(chunks)
            write = functools.partial(
                _write_block,
                paths=(paths[0], paths[1]),
                offsets=(offsets[0], offsets[1]),
                row_bytes=row_bytes,
            )
            result = da.map_blocks(
                write,
                x,
                y,
                drop_axis=2,
                chunks=((1,) * n_blocks, (_RECORD,)),
                dtype=np.uint8,
                meta=np.empty((0, 0), dtype=np.uint8),
            )
            if client is not None:
                records = _run_distributed(result, client, report, n_blocks)
            else:
                local = None if scheduler is None else scheduler.strip()
                records = _run_local(result, local, report, n_blocks)
        else:
            records = np.empty((0, _RECORD), dtype=np.uint8)
            if report is not None:
                report(0, 0)
    finally:
        if own_client is not None:
            own_client.close()

    if records.shape != (n_blocks, _RECORD):  # pragma: no cover - a bug, not bad input
        raise RuntimeError(f"expected {n_blocks} block records, got {records.shape}")
    max_abs = max(
        (struct.unpack("<d", r[2 * _DIGEST :].tobytes())[0] for r in records), default=0.0
    )
    rtol, atol_unit = default_tolerance(
        dtype, rope=rope, positions=np.array([0, max(tokens - 1, 0)])
    )
    manifest: dict[str, Any] = {
        "rope_ref_version": _version(),
        "generator": "rope_ref.testing.write_vectors_dask",
        "rope": _rope_record(rope),
        "layout": "thd",
        "shape": list(shape),
        "dtype": dtype,
        "positions": f"arange({tokens}) along axis 0 (every head of token t at position t)",
        "seed": seed,
        "inputs": "dask.array.random.default_rng(seed).standard_normal(shape, chunks) in float64, "
        f"rounded to {dtype}",
        "output": "exact rotation (float64 on exact cos/sin), rounded once to dtype",
        "tolerance": {
            "rtol": rtol,
            "atol": atol_unit * float(max_abs),
            "rule": "|y_impl - y| <= atol + rtol * |y| elementwise",
        },
        "files": {},
        "chunks": {"axis": 0, "bounds": bounds},
    }
    for k, name in enumerate(("x.npy", "y.npy")):
        manifest["files"][name] = {
            "data_offset": offsets[k],
            "chunk_sha256": [r[k * _DIGEST : (k + 1) * _DIGEST].tobytes().hex() for r in records],
        }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def _apply_rope_dask(x: Array, positions: Array, rope: Rope) -> Any:
    from .._apply import apply_rope

    return apply_rope(x, positions, rope)


def _version() -> str:
    import rope_ref

    return str(rope_ref.__version__)


# --------------------------------------------------------------------------- reading


def _chunk_digests(path: str, offset: int, row_bytes: int, bounds: list[int]) -> list[str]:
    out = []
    with open(path, "rb") as f:
        for a, b in itertools.pairwise(bounds):
            f.seek(offset + a * row_bytes)
            h = hashlib.sha256()
            left = (b - a) * row_bytes
            while left:
                block = f.read(min(left, 1 << 24))
                if not block:
                    raise RopeValueError(f"{path} is truncated (chunk rows {a}..{b})")
                h.update(block)
                left -= len(block)
            out.append(h.hexdigest())
    return out


def _is_size(v: Array) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _check_manifest(m: Any, where: str) -> tuple[tuple[int, ...], np.dtype, list[int]]:
    """(shape, dtype, chunk bounds) of a write_vectors_dask manifest, checked."""
    if not isinstance(m, dict):
        raise RopeValueError(f"{where} must hold a JSON object, got {describe(m)}")
    shape, dtype, chunks = m.get("shape"), m.get("dtype"), m.get("chunks")
    if not (isinstance(shape, list) and len(shape) == 3 and all(_is_size(v) for v in shape)):
        raise RopeValueError(f"{where}: shape must be [tokens, heads, head_dim], got {shape!r}")
    if dtype not in _DTYPES:
        raise RopeValueError(f"{where}: dtype must be a float dtype name, got {dtype!r}")
    bounds = chunks.get("bounds") if isinstance(chunks, dict) else None
    if not (
        isinstance(bounds, list)
        and len(bounds) >= 1
        and all(_is_size(b) for b in bounds)
        and bounds[0] == 0
        and bounds[-1] == shape[0]
        and all(a < b for a, b in itertools.pairwise(bounds))
    ):
        raise RopeValueError(f"{where}: chunks.bounds must rise from 0 to {shape[0]}")
    files = m.get("files")
    for name in ("x.npy", "y.npy"):
        info = files.get(name) if isinstance(files, dict) else None
        digests = info.get("chunk_sha256") if isinstance(info, dict) else None
        if not (
            isinstance(digests, list)
            and len(digests) == len(bounds) - 1
            and all(isinstance(d, str) and len(d) == 64 and set(d) <= _HEX for d in digests)
            and _is_size(info.get("data_offset"))  # type: ignore[union-attr]
        ):
            raise RopeValueError(
                f"{where}: files[{name!r}] needs a data_offset and one sha256 per chunk"
            )
    return tuple(shape), np.dtype(dtype), bounds


def read_vectors_dask(
    out: str | Path, *, verify: bool = True
) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Read back what :func:`write_vectors_dask` wrote, checking it (NumPy only, no Dask).

    Parameters
    ----------
    out : str or Path
        The directory.
    verify : bool, optional
        Check the sha256 of every chunk of both files, streamed chunk by chunk (default True).

    Returns
    -------
    tuple
        ``(manifest, x, y)``: x and y are read-only memory maps (nothing is loaded whole).

    Raises
    ------
    rope_ref.RopeValueError
        No manifest, a manifest that is not strict JSON or not of the expected structure, a
        file whose .npy header, shape, dtype or data offset disagrees with it, or a chunk
        whose sha256 differs. Files are opened without pickle.

    Examples
    --------
    >>> from rope_ref.testing import read_vectors_dask
    >>> manifest, x, y = read_vectors_dask("golden/")  # doctest: +SKIP
    """
    out = Path(out)
    where = str(out / "manifest.json")
    try:
        raw = _read_file(out / "manifest.json", max_bytes=MAX_HEADER_BYTES)
    except OSError as exc:
        raise RopeValueError(f"{where} cannot be read ({exc.strerror or exc})") from None
    manifest = strict_json(raw, where, max_bytes=MAX_HEADER_BYTES)
    shape, dtype, bounds = _check_manifest(manifest, where)
    arrays = []
    for name in ("x.npy", "y.npy"):
        path = out / name
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as exc:  # missing, not .npy, truncated, object dtype
            raise RopeValueError(f"{path} is not a readable .npy file: {exc}") from None
        offset = manifest["files"][name]["data_offset"]
        if arr.shape != shape or arr.dtype != dtype or arr.offset != offset:
            raise RopeValueError(
                f"{path} holds {arr.dtype} {arr.shape} at byte {arr.offset}; the manifest says "
                f"{dtype} {shape} at byte {offset}"
            )
        if verify:
            row_bytes = math.prod(shape[1:]) * dtype.itemsize
            got = _chunk_digests(str(path), offset, row_bytes, bounds)
            want = manifest["files"][name]["chunk_sha256"]
            for i, (a, b) in enumerate(zip(got, want, strict=True)):
                if a != b:
                    raise RopeValueError(
                        f"{path}: chunk {i} (rows {bounds[i]}..{bounds[i + 1]}) does not match "
                        f"its sha256 in the manifest (changed or corrupt)"
                    )
        arrays.append(arr)
    return manifest, arrays[0], arrays[1]


# --------------------------------------------------------------------------- the CLI

#: The options only ``--backend dask`` reads, as argparse dests, with their flags.
_DASK_ONLY = {
    "scheduler": "--scheduler",
    "tokens": "--tokens",
    "heads": "--heads",
    "head_dim": "--head-dim",
    "base": "--base",
    "chunk_tokens": "--chunk-tokens",
    "seed": "--seed",
}


def add_dask_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--backend`` and the Dask options to the ``rope-ref vectors`` parser.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The ``vectors`` subcommand's parser.

    Examples
    --------
    >>> import argparse
    >>> p = argparse.ArgumentParser()
    >>> add_dask_arguments(p)
    >>> p.parse_args(["--backend", "dask", "--tokens", "8"]).tokens
    8
    """
    g = parser.add_argument_group(
        "at scale with Dask (--backend dask; needs rope-ref[dask])",
        "x (TOKENS, HEADS, HEAD_DIM) of standard normals and y = the exact rotation at "
        "positions 0..TOKENS-1, streamed block by block into x.npy and y.npy with a manifest "
        "holding each block's sha256. The Rope: --preset, --hf-config, or --head-dim/--base.",
    )
    g.add_argument(
        "--backend",
        choices=["numpy", "dask"],
        default="numpy",
        help="numpy: the battery's cases (default); dask: one large golden set",
    )
    g.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="a dask.distributed scheduler (tcp://HOST:PORT; --out must be visible "
        "to its workers), or threads, synchronous, processes (default: threads in "
        "this process)",
    )
    g.add_argument(
        "--tokens",
        type=int,
        metavar="N",
        help="tokens (rows of x); required with --backend dask (no default)",
    )
    g.add_argument("--heads", type=int, metavar="H", help="heads per token (default: 1)")
    g.add_argument(
        "--head-dim",
        type=int,
        metavar="D",
        help="channels per head without --preset/--hf-config (default: 128)",
    )
    g.add_argument(
        "--base",
        type=float,
        metavar="B",
        help="the RoPE base without --preset/--hf-config (default: 10000)",
    )
    g.add_argument(
        "--chunk-tokens", type=int, metavar="C", help="tokens per Dask block (default: 1024)"
    )
    g.add_argument("--seed", type=int, metavar="S", help="seed of the inputs (default: 0)")
    g.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        help="do not print blocks done/total to stderr (default: printed)",
    )


def reject_dask_options(args: argparse.Namespace) -> None:
    """Raise if a ``--backend dask`` option was given without ``--backend dask``.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed ``rope-ref vectors`` arguments.

    Raises
    ------
    rope_ref.RopeValueError
        Naming the option.
    """
    given = [flag for dest, flag in _DASK_ONLY.items() if getattr(args, dest, None) is not None]
    if given:
        raise RopeValueError(f"{', '.join(given)}: only with --backend dask")


def _cli_rope(args: argparse.Namespace) -> Rope:
    preset = getattr(args, "preset", None)
    hf_config = getattr(args, "hf_config", None)
    layer_type = getattr(args, "layer_type", None)
    explicit = [
        f
        for f, v in (
            ("--head-dim", getattr(args, "head_dim", None)),
            ("--base", getattr(args, "base", None)),
        )
        if v is not None
    ]
    sources = [f for f, v in (("--preset", preset), ("--hf-config", hf_config)) if v]
    if len(sources) > 1 or (sources and explicit):
        raise RopeValueError(
            f"give one of --preset, --hf-config or --head-dim/--base (got "
            f"{' and '.join(sources + explicit)})"
        )
    if preset:
        return Rope.preset(preset, layer_type=layer_type)  # None: the preset's default layer
    if hf_config:
        where = f"--hf-config {hf_config}"
        try:
            raw = _read_file(hf_config, max_bytes=MAX_HEADER_BYTES)
        except OSError as exc:
            raise RopeValueError(f"{where}: cannot read it ({exc.strerror or exc})") from None
        config = strict_json(raw, where, max_bytes=MAX_HEADER_BYTES)
        if not isinstance(config, dict):
            raise RopeValueError(f"{where}: must hold a JSON object, got {describe(config)}")
        try:
            return Rope.from_hf_config(config, layer_type=layer_type)
        except (RopeError, ValueError, TypeError) as exc:
            raise RopeValueError(f"{where}: {' '.join(str(exc).split())}") from None
    if layer_type is not None:
        raise RopeValueError("--layer-type needs --preset or --hf-config")
    head_dim = getattr(args, "head_dim", None)
    base = getattr(args, "base", None)
    try:
        return Rope(128 if head_dim is None else head_dim, base=10_000.0 if base is None else base)
    except RopeError as exc:
        flag = "--head-dim" if "head_dim" in str(exc) else "--base"
        raise RopeValueError(f"{flag}: {' '.join(str(exc).split())}") from None


def run_vectors_dask(args: argparse.Namespace, *, stdout: TextIO | None = None) -> int:
    """``rope-ref vectors --backend dask``: validate the options, write, report.

    Reads ``out``, ``tokens``, ``heads``, ``head_dim``, ``base``, ``chunk_tokens``, ``seed``,
    ``scheduler``, ``progress``, ``preset``, ``hf_config``, ``layer_type``, ``dtype`` (a list
    of one name, or None), ``cases`` and ``no_presets`` (both must be unset) from ``args``
    (attributes it lacks count as unset). Progress goes to stderr, the summary to stdout.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed arguments (:func:`add_dask_arguments` adds the Dask ones).
    stdout : file, optional
        Where the one-line summary goes (default: ``sys.stdout``).

    Returns
    -------
    int
        0 (errors are raised).

    Raises
    ------
    DaskUnavailableError
        Dask or dask.distributed is missing ("install rope-ref[dask]"); a RopeError.
    rope_ref.RopeValueError
        A bad option, named as the user wrote it (``--tokens``, ``--scheduler``, ...).
    """

    def opt(name: str, default: Any = None) -> Any:
        value = getattr(args, name, None)
        return default if value is None else value

    if opt("cases"):
        raise RopeValueError("--cases: not with --backend dask (it writes one large set)")
    if opt("no_presets", False):
        raise RopeValueError("--no-presets: not with --backend dask")
    dtypes = opt("dtype", ["float32"])
    if len(dtypes) != 1 or dtypes[0] not in _DTYPES:
        raise RopeValueError(
            f"--dtype: --backend dask writes one of {', '.join(_DTYPES)}, got "
            f"{' '.join(map(str, dtypes))}"
        )
    if opt("tokens") is None:
        raise RopeValueError("--backend dask needs --tokens N (the rows of x)")
    out = opt("out")
    if out is None:
        raise RopeValueError("--backend dask needs --out DIR")
    rope = _cli_rope(args)
    sizes = {}
    for dest, default, least in (
        ("tokens", None, 0),
        ("heads", 1, 1),
        ("chunk_tokens", 1024, 1),
        ("seed", 0, 0),
    ):
        value = opt(dest, default)
        if value < least:
            raise RopeValueError(f"{_DASK_ONLY[dest]} must be >= {least}, got {value}")
        sizes[dest] = value
    p = Path(out)
    if p.exists() and not p.is_dir():
        raise RopeValueError(f"--out {out}: is a file, not a directory")
    scheduler = opt("scheduler")
    progress: bool | ProgressCallback = (
        _StderrProgress("rope-ref vectors") if opt("progress", True) else False
    )
    try:
        manifest = write_vectors_dask(
            p, rope=rope, dtype=dtypes[0], scheduler=scheduler, progress=progress, **sizes
        )
    except RopeValueError as exc:
        text = str(exc)
        if text.startswith("scheduler "):
            text = "--scheduler " + text[len("scheduler ") :]
        raise RopeValueError(text) from None
    except OSError as exc:
        raise RopeValueError(f"--out {out}: cannot write ({exc.strerror or exc})") from None
    tokens, heads, head_dim = manifest["shape"]
    print(
        f"wrote {tokens} tokens x {heads} heads x {head_dim} ({manifest['dtype']}) in "
        f"{len(manifest['chunks']['bounds']) - 1} blocks to {out} (x.npy, y.npy, "
        "manifest.json)",
        file=stdout if stdout is not None else sys.stdout,
    )
    return 0
