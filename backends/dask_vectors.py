"""Golden outputs at scale with Dask: millions of tokens, written chunk by chunk.

A repository tool beside the Dask adapter, not part of the installed package: it needs what
the Array API lacks (chunked random inputs, ``da.store``), and rope_ref itself never imports an
array framework. Import it from a checkout (``from backends.dask_vectors import ...``).

:func:`write_vectors_dask` builds the inputs and rope_ref's exact output as lazy, chunked Dask
arrays (``rr.apply_rope`` on Dask arrays is the same Array-API code as on NumPy) and streams
both into two ``.npy`` files, each chunk written at its own offset by whichever worker
computed it. Nothing is ever held whole: peak memory is a few chunks per worker, whatever the
number of tokens. The ``client`` may be a ``dask.distributed`` client of a LocalCluster or of
a real cluster (then ``out`` must be on a file system every worker sees); without one, Dask's
threaded scheduler runs in this process.

The files: ``x.npy`` (inputs, (tokens, heads, head_dim)), ``y.npy`` (the exact rotation at
positions 0 .. tokens-1, rounded once to ``dtype``), and ``manifest.json`` with the rope
parameters, shapes, dtype, tolerances, chunk boundaries and the sha256 of every chunk's bytes
in each file (so a reader can verify any part without reading the rest). The ``.npy`` format
is a short text header then raw little-endian values: C++ and Rust read it with a few lines.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np

import rope_ref as rr
from rope_ref._config_reader import describe, strict_json
from rope_ref.testing import default_tolerance
from rope_ref.testing._vectors import MAX_HEADER_BYTES, _read_file, _rope_record

_HEX = set("0123456789abcdef")

__all__ = ["read_vectors_dask", "write_vectors_dask"]


class _NpyChunkWriter:
    """A picklable ``da.store`` target: writes each chunk (whole trailing axes) in place."""

    def __init__(self, path: str, offset: int, shape: tuple[int, ...], itemsize: int) -> None:
        self.path, self.offset, self.trailing = path, offset, tuple(shape[1:])
        self.row_bytes = int(np.prod(self.trailing)) * itemsize

    def __setitem__(self, key: Any, value: np.ndarray) -> None:
        rows = key[0] if isinstance(key, tuple) else key
        if tuple(value.shape[1:]) != self.trailing:
            raise ValueError(f"chunk {key} does not span the trailing axes {self.trailing}")
        data = np.ascontiguousarray(value)
        with open(self.path, "r+b") as f:
            f.seek(self.offset + rows.start * self.row_bytes)
            data.tofile(f)


def _create_npy(path: Path, shape: tuple[int, ...], dtype: np.dtype) -> int:
    """Write the header and size the file (sparse); return the data offset."""
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
              "shape": shape}
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        offset = f.tell()
        f.truncate(offset + int(np.prod(shape)) * dtype.itemsize)
    return offset


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
                    raise rr.RopeValueError(f"{path} is truncated (chunk rows {a}..{b})")
                h.update(block)
                left -= len(block)
            out.append(h.hexdigest())
    return out


def write_vectors_dask(
    out: str | Path,
    *,
    rope: rr.Rope,
    tokens: int,
    heads: int,
    chunk_tokens: int = 1024,
    dtype: str = "float32",
    seed: int = 0,
    client: Any = None,
) -> dict[str, Any]:
    """Write x, y = rr.apply_rope(x, arange(tokens)) and a manifest, chunk by chunk.

    Parameters
    ----------
    out : directory (created); on a cluster, a path every worker can write.
    rope : the specification; ``rope.head_dim`` is the last axis.
    tokens, heads : the leading axes of x, (tokens, heads, head_dim) (the "thd" layout).
    chunk_tokens : tokens per Dask chunk; memory per worker is a few times
        ``chunk_tokens * heads * head_dim * 8`` bytes.
    dtype : "float32", "float16" or "float64" (inputs and outputs).
    seed : inputs are ``dask.array.random.default_rng(seed).standard_normal`` in float64,
        rounded to ``dtype`` (they are in x.npy: readers never regenerate them).
    client : a ``dask.distributed.Client``; None runs on Dask's local threads.

    Returns
    -------
    The manifest (also written as ``manifest.json``).
    """
    import dask
    import dask.array as da

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    np_dtype = np.dtype(dtype)
    shape = (int(tokens), int(heads), rope.head_dim)
    chunks = (int(chunk_tokens), int(heads), rope.head_dim)
    x = da.random.default_rng(seed).standard_normal(shape, chunks=chunks).astype(np_dtype)
    positions = da.arange(shape[0], chunks=chunks[0])[:, None]
    # one chunk per token range, whole trailing axes (the half layout's concat splits them)
    y = rr.apply_rope(x, positions, rope).rechunk(chunks)

    row_bytes = heads * rope.head_dim * np_dtype.itemsize
    targets = []
    for name in ("x", "y"):
        path = out / f"{name}.npy"
        offset = _create_npy(path, shape, np_dtype)
        targets.append(_NpyChunkWriter(str(path), offset, shape, np_dtype.itemsize))
    stored = da.store([x, y], targets, lock=False, compute=False)  # type: ignore[arg-type]
    biggest = da.max(da.abs(y))  # for the absolute tolerance, in the same pass over y
    _, max_abs = dask.compute(stored, biggest, **({} if client is None else {"scheduler": client}))

    bounds = [0]
    for c in x.chunks[0]:
        bounds.append(bounds[-1] + int(c))
    rtol, atol_unit = default_tolerance(dtype, rope=rope, positions=np.array([0, shape[0] - 1]))
    manifest: dict[str, Any] = {
        "rope_ref_version": rr.__version__,
        "generator": "backends.dask_vectors.write_vectors_dask",
        "rope": _rope_record(rope),
        "layout": "thd",
        "shape": list(shape),
        "dtype": dtype,
        "positions": f"arange({shape[0]}) along axis 0 (every head of token t at position t)",
        "seed": seed,
        "inputs": "dask.array.random.default_rng(seed).standard_normal(shape, chunks) in float64, "
                  f"rounded to {dtype}",
        "output": "exact rotation (float64 on exact cos/sin), rounded once to dtype",
        "tolerance": {"rtol": rtol, "atol": atol_unit * float(max_abs),
                      "rule": "|y_impl - y| <= atol + rtol * |y| elementwise"},
        "files": {},
        "chunks": {"axis": 0, "bounds": bounds},
    }
    for name, target in zip(("x", "y"), targets, strict=True):
        manifest["files"][f"{name}.npy"] = {
            "data_offset": target.offset,
            "chunk_sha256": _chunk_digests(target.path, target.offset, row_bytes, bounds),
        }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def _check_manifest(m: Any, where: str) -> tuple[tuple[int, ...], np.dtype, list[int]]:
    """(shape, dtype, chunk bounds) of a write_vectors_dask manifest, checked."""
    if not isinstance(m, dict):
        raise rr.RopeValueError(f"{where} must hold a JSON object, got {describe(m)}")
    shape, dtype, chunks = m.get("shape"), m.get("dtype"), m.get("chunks")
    if not (isinstance(shape, list) and len(shape) == 3 and all(_is_size(v) for v in shape)):
        raise rr.RopeValueError(f"{where}: shape must be [tokens, heads, head_dim], got {shape!r}")
    if dtype not in ("float16", "float32", "float64"):
        raise rr.RopeValueError(f"{where}: dtype must be a float dtype name, got {dtype!r}")
    bounds = chunks.get("bounds") if isinstance(chunks, dict) else None
    if not (
        isinstance(bounds, list)
        and len(bounds) >= 2
        and all(_is_size(b) for b in bounds)
        and bounds[0] == 0
        and bounds[-1] == shape[0]
        and all(a < b for a, b in itertools.pairwise(bounds))
    ):
        raise rr.RopeValueError(f"{where}: chunks.bounds must rise from 0 to {shape[0]}")
    files = m.get("files")
    for name in ("x.npy", "y.npy"):
        info = files.get(name) if isinstance(files, dict) else None
        digests = info.get("chunk_sha256") if isinstance(info, dict) else None
        if not (
            isinstance(digests, list)
            and len(digests) == len(bounds) - 1
            and all(isinstance(d, str) and len(d) == 64 and set(d) <= _HEX for d in digests)
            and _is_size(info.get("data_offset"))
        ):
            raise rr.RopeValueError(
                f"{where}: files[{name!r}] needs a data_offset and one sha256 per chunk"
            )
    return tuple(shape), np.dtype(dtype), bounds


def _is_size(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def read_vectors_dask(
    out: str | Path, *, verify: bool = True
) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Read back what :func:`write_vectors_dask` wrote, checking it.

    Parameters
    ----------
    out : the directory.
    verify : check the sha256 of every chunk of both files (streamed, chunk by chunk).

    Returns
    -------
    (manifest, x, y): x and y are read-only memory maps (nothing is loaded whole).

    Raises
    ------
    rope_ref.RopeValueError
        A manifest that is not strict JSON or not of the expected structure, a file whose
        .npy header, shape, dtype or data offset disagrees with it, or a chunk whose sha256
        differs. Files are opened without pickle.
    """
    out = Path(out)
    where = str(out / "manifest.json")
    raw = _read_file(out / "manifest.json", max_bytes=MAX_HEADER_BYTES)
    manifest = strict_json(raw, where, max_bytes=MAX_HEADER_BYTES)
    shape, dtype, bounds = _check_manifest(manifest, where)
    arrays = []
    for name in ("x.npy", "y.npy"):
        path = out / name
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except ValueError as exc:  # not an .npy file, truncated, object dtype
            raise rr.RopeValueError(f"{path} is not a readable .npy file: {exc}") from None
        offset = manifest["files"][name]["data_offset"]
        if arr.shape != shape or arr.dtype != dtype or arr.offset != offset:
            raise rr.RopeValueError(
                f"{path} holds {arr.dtype} {arr.shape} at byte {arr.offset}; the manifest says "
                f"{dtype} {shape} at byte {offset}"
            )
        if verify:
            row_bytes = int(np.prod(shape[1:])) * dtype.itemsize
            got = _chunk_digests(str(path), offset, row_bytes, bounds)
            want = manifest["files"][name]["chunk_sha256"]
            for i, (a, b) in enumerate(zip(got, want, strict=True)):
                if a != b:
                    raise rr.RopeValueError(
                        f"{path}: chunk {i} (rows {bounds[i]}..{bounds[i + 1]}) does not match "
                        f"its sha256 in the manifest (changed or corrupt)"
                    )
        arrays.append(arr)
    return manifest, arrays[0], arrays[1]
