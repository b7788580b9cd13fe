"""Golden vector files for projects that test without Python (C++, Rust, CUDA).

For each case: the input ``x``, the ``positions`` and the expected output ``y`` (the exact
result rounded once to the case's dtype), plus the exact cos/sin tables in float64, written as
safetensors and as .npz, and a ``manifest.json`` with every parameter, layout, dtype, shape,
the tolerances to use, the rope_ref version and the sha256 of each file. Written bytes depend
only on the cases: two runs give identical files.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from .._config_reader import describe, strict_json
from .._errors import RopeTypeError, RopeValueError
from .._rope import Rope
from .._typing import Array
from ._assert import default_tolerance
from ._cases import Case
from ._diagnose import bf16 as _bf16

__all__ = [
    "parse_safetensors",
    "read_case",
    "read_manifest",
    "read_npz",
    "read_safetensors",
    "write_safetensors",
    "write_vectors",
]

_ST_DTYPES = {
    "float64": "F64",
    "float32": "F32",
    "float16": "F16",
    "bfloat16": "BF16",
    "int64": "I64",
    "int32": "I32",
}
_ST_BACK = {v: k for k, v in _ST_DTYPES.items()}
# what zipfile raises on corrupt archives (seen by fuzzing: bad UTF-8 names, negative seeks)
_ZIP_FAULTS = (
    zipfile.BadZipFile,
    zlib.error,
    EOFError,
    NotImplementedError,
    RuntimeError,
    ValueError,
    struct.error,
    OSError,
    OverflowError,
    IndexError,
)
_HEX = "0123456789abcdef"
#: Largest file the readers accept by default (the ``max_bytes`` argument).
MAX_FILE_BYTES = 4 * 2**30
#: Largest safetensors header (the format's own limit) and manifest.
MAX_HEADER_BYTES = 100 * 2**20


def _bf16_bits(a: np.ndarray) -> np.ndarray:
    """bfloat16 values (given exactly in float64/float32) as their 16-bit patterns."""
    return (_bf16(a.astype(np.float32)).view(np.uint32) >> np.uint32(16)).astype(np.uint16)


def write_safetensors(path: Path, tensors: dict[str, tuple[str, np.ndarray]]) -> None:
    """Minimal, deterministic safetensors writer: {name: (dtype name, values)}.

    The format: an 8-byte little-endian header length, a JSON header (sorted keys) with
    dtype, shape and byte offsets of each tensor, then the little-endian bytes.

    Parameters
    ----------
    path : pathlib.Path
        The file to write (replaced if it exists).
    tensors : dict of str to (str, numpy.ndarray)
        Each tensor's name, its stored dtype name (a key of the writer's dtype table, e.g.
        ``"float32"``, ``"bfloat16"``, ``"int64"``) and its values; bfloat16 values must be
        exactly representable (they are stored as their upper 16 bits).
    """
    header: dict[str, Any] = {}
    blobs = []
    offset = 0
    for name in sorted(tensors):
        dtype, arr = tensors[name]
        data = _bf16_bits(arr) if dtype == "bfloat16" else np.ascontiguousarray(arr, dtype=dtype)
        raw = data.astype(data.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {
            "dtype": _ST_DTYPES[dtype],
            "shape": list(arr.shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # align the data to 8 bytes
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def read_safetensors(
    path: str | Path, *, sha256: str | None = None, max_bytes: int = MAX_FILE_BYTES
) -> dict[str, np.ndarray]:
    """Read a safetensors file, checking every byte of its structure.

    Parameters
    ----------
    path : str or Path
        The file.
    sha256 : str, optional
        The expected SHA-256 (64 hex digits) of the whole file, e.g. from a manifest;
        checked before anything is parsed.
    max_bytes : int
        Largest file accepted (4 GiB by default).

    Returns
    -------
    dict of str to numpy.ndarray
        Each tensor, read-only, little-endian values in native order; bfloat16 comes back as
        float32, exactly.

    Raises
    ------
    RopeValueError
        A file that is too large, truncated, has another hash, a header that is not a JSON
        object of tensors, an unknown dtype, a shape with negative or non-integer sizes, data
        offsets that are negative, out of the data, overlapping, leave holes or disagree with
        the shape and dtype.
    OSError
        The file cannot be read.
    """
    raw = _read_file(path, max_bytes=max_bytes, sha256=sha256)
    return parse_safetensors(raw, str(path))


def parse_safetensors(raw: bytes, what: str = "safetensors data") -> dict[str, np.ndarray]:
    """The tensors of safetensors bytes (see :func:`read_safetensors`); ``what`` names the
    source in messages."""
    if len(raw) < 8:
        raise RopeValueError(f"{what} is truncated: {len(raw)} bytes, less than the 8-byte header")
    (n,) = struct.unpack("<Q", raw[:8])
    if n < 2 or n > min(MAX_HEADER_BYTES, len(raw) - 8):
        raise RopeValueError(
            f"{what}: header length {n} does not fit the file of {len(raw)} bytes (truncated "
            "or not safetensors)"
        )
    header = strict_json(raw[8 : 8 + n], f"{what} header", max_bytes=MAX_HEADER_BYTES)
    if not isinstance(header, dict):
        raise RopeValueError(f"{what}: header must be a JSON object, got {describe(header)}")
    data = raw[8 + n :]
    out: dict[str, np.ndarray] = {}
    spans: list[tuple[int, int, str]] = []
    for name, info in header.items():
        if name == "__metadata__":
            _check_metadata(info, what)
            continue
        lo, hi = _tensor_span(name, info, len(data), what)
        spans.append((lo, hi, name))
        out[name] = _tensor(data[lo:hi], info)
    _check_spans(spans, len(data), what)
    return out


def _check_metadata(info: Any, what: str) -> None:
    if not (isinstance(info, dict) and all(isinstance(v, str) for v in info.values())):
        raise RopeValueError(f"{what}: __metadata__ must map strings to strings")


def _tensor_span(name: str, info: Any, size: int, what: str) -> tuple[int, int]:
    """The checked (start, end) of one tensor in the data section."""
    where = f"{what}: tensor {name!r}"
    if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
        raise RopeValueError(
            f"{where} must have exactly dtype, shape and data_offsets, got {describe(info)}"
        )
    if not isinstance(info["dtype"], str) or info["dtype"] not in _ST_BACK:
        raise RopeValueError(f"{where} has dtype {info['dtype']!r}; accepted: {sorted(_ST_BACK)}")
    shape, offsets = info["shape"], info["data_offsets"]
    if not (isinstance(shape, list) and len(shape) <= 64 and all(_is_index(d) for d in shape)):
        raise RopeValueError(f"{where} has shape {_shown(shape)}; expected a list of sizes >= 0")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(_is_index, offsets))):
        raise RopeValueError(
            f"{where} has data_offsets {_shown(offsets)}; expected [start, end] with "
            "0 <= start <= end"
        )
    lo, hi = offsets
    if not lo <= hi <= size:
        raise RopeValueError(
            f"{where} has data_offsets [{lo}, {hi}] outside the {size} bytes of data"
        )
    itemsize = 2 if info["dtype"] == "BF16" else np.dtype(_ST_BACK[info["dtype"]]).itemsize
    if hi - lo != math.prod(shape) * itemsize:
        raise RopeValueError(
            f"{where}: shape {shape} of {info['dtype']} needs {math.prod(shape) * itemsize} "
            f"bytes, data_offsets give {hi - lo}"
        )
    return lo, hi


def _shown(v: Array) -> str:
    """A short repr (the value part of ``describe``)."""
    return describe(v).split(" ", 1)[1]


def _is_index(v: Array) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _check_spans(spans: list[tuple[int, int, str]], size: int, what: str) -> None:
    """The tensors tile the data section: no overlap, no hole, nothing after."""
    end, last = 0, None
    for lo, hi, name in sorted(spans):
        if lo != end:
            problem = "overlaps" if lo < end else "leaves a hole after"
            raise RopeValueError(
                f"{what}: tensor {name!r} at bytes [{lo}, {hi}] {problem} "
                f"{'the start' if last is None else repr(last)} (data ends at {end})"
            )
        end, last = hi, name
    if end != size:
        raise RopeValueError(f"{what}: {size - end} bytes after the last tensor")


def _tensor(buf: bytes, info: dict[str, Any]) -> np.ndarray:
    dt = _ST_BACK[info["dtype"]]
    if dt == "bfloat16":
        bits = np.frombuffer(buf, dtype="<u2").astype(np.uint32) << np.uint32(16)
        arr = bits.view(np.float32)
    else:
        arr = np.frombuffer(buf, dtype=np.dtype(dt).newbyteorder("<"))
    return arr.reshape(info["shape"])


def read_npz(
    path: str | Path, *, sha256: str | None = None, max_bytes: int = MAX_FILE_BYTES
) -> dict[str, np.ndarray]:
    """Read an .npz archive without pickle, checking it (size, hash, each member).

    Parameters
    ----------
    path : str or Path
        The file.
    sha256 : str, optional
        The expected SHA-256 of the whole file, checked before anything is parsed.
    max_bytes : int
        Largest file, and largest total of its uncompressed members, accepted.

    Returns
    -------
    dict of str to numpy.ndarray
        Each ``name.npy`` member as ``name`` (numeric dtypes only; bfloat16 vectors are
        stored as their uint16 bit patterns).

    Raises
    ------
    RopeValueError
        A file too large, with another hash, not a zip archive, with members that are not
        .npy arrays of a numeric dtype, truncated or corrupt.
    OSError
        The file cannot be read.
    """
    raw = _read_file(path, max_bytes=max_bytes, sha256=sha256)
    what = str(path)
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as zf:
            infos = zf.infolist()
            if sum(i.file_size for i in infos) > max_bytes:
                raise RopeValueError(f"{what}: members expand beyond {max_bytes} bytes")
            return {_member_name(i.filename, what): _npy(zf, i, what) for i in infos}
    except RopeValueError:
        raise
    except _ZIP_FAULTS as exc:  # zipfile reports corrupt archives in many ways
        raise RopeValueError(
            f"{what} is not a readable .npz archive: {type(exc).__name__}: {exc}"
        ) from None


def _member_name(filename: str, what: str) -> str:
    stem = filename[:-4]
    if not filename.endswith(".npy") or not stem or "/" in stem or "\\" in stem:
        raise RopeValueError(f"{what}: member {filename!r} is not a NAME.npy array")
    return stem


def _npy(zf: zipfile.ZipFile, info: zipfile.ZipInfo, what: str) -> np.ndarray:
    """One .npy member: header checked against its size before the data is read."""
    where = f"{what}: member {info.filename!r}"
    with zf.open(info) as f:
        raw = f.read(info.file_size + 1)
    bio = io.BytesIO(raw)
    try:
        version = np.lib.format.read_magic(bio)
        read_header = {
            (1, 0): np.lib.format.read_array_header_1_0,
            (2, 0): np.lib.format.read_array_header_2_0,
        }[version]
        shape, fortran, dtype = read_header(bio)
    except (ValueError, KeyError, SyntaxError, TypeError) as exc:
        raise RopeValueError(f"{where} has no valid .npy header: {exc}") from None
    if dtype.hasobject or dtype.kind not in "biuf" or fortran:
        raise RopeValueError(
            f"{where} has dtype {dtype} (fortran_order={fortran}); expected a numeric C-order "
            "array (object arrays would need pickle, never used)"
        )
    data = raw[bio.tell() :]
    if len(data) != math.prod(shape) * dtype.itemsize:
        raise RopeValueError(
            f"{where}: shape {shape} of {dtype} needs {math.prod(shape) * dtype.itemsize} "
            f"bytes, the member holds {len(data)}"
        )
    return np.frombuffer(data, dtype=dtype).reshape(shape)


def _read_file(path: str | Path, *, max_bytes: int, sha256: str | None = None) -> bytes:
    """The bytes of a file of at most ``max_bytes``, its SHA-256 checked when given."""
    if sha256 is not None and not (
        isinstance(sha256, str) and len(sha256) == 64 and set(sha256) <= set(_HEX)
    ):
        raise RopeValueError(f"sha256 must be 64 lower-case hex digits, got {describe(sha256)}")
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size > max_bytes:
            raise RopeValueError(f"{path} is too large: {size} bytes (at most {max_bytes})")
        raw = f.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise RopeValueError(f"{path} is too large: more than {max_bytes} bytes")
    if sha256 is not None and hashlib.sha256(raw).hexdigest() != sha256:
        raise RopeValueError(
            f"{path} does not match its sha256: expected {sha256}, the file has "
            f"{hashlib.sha256(raw).hexdigest()} (changed or corrupt)"
        )
    return raw


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """An .npz with fixed timestamps (np.savez would stamp the current time)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(arrays):
            member = io.BytesIO()
            np.lib.format.write_array(
                member, np.ascontiguousarray(arrays[name]), allow_pickle=False
            )
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, member.getvalue())
    path.write_bytes(buf.getvalue())


def _as_list(a: np.ndarray | None) -> list[int] | None:
    return None if a is None else [int(v) for v in a]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _rope_record(rope: Rope) -> dict[str, Any]:
    scaling = None
    if rope.scaling is not None:
        scaling = {
            "type": type(rope.scaling).__name__,
            **{k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(rope.scaling).items()},
        }
    return {
        "head_dim": rope.head_dim,
        "base": rope.base,
        "rotary_dim": rope.rotary_dim,
        "layout": rope.layout,
        "scaling": scaling,
        "attention_factor": rope.attention_factor,
        "inv_freq": [float(t) for t in rope.inv_freq()],
    }


def write_vectors(
    cases: list[Case],
    out: str | Path,
    *,
    rope: Rope | None = None,
    config: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write golden files for ``cases`` into directory ``out``; returns the manifest.

    ``rope`` replaces each case's own Rope (e.g. one read from a config.json, recorded in the
    manifest as ``config``); the cases then supply shapes, positions, data and dtypes.

    Parameters
    ----------
    cases : list of Case
        The cases to write (e.g. ``rope_ref.testing.cases()``).
    out : str or pathlib.Path
        The directory (created if missing): one ``.safetensors`` and one ``.npz`` per case,
        and ``manifest.json``.
    rope : Rope, optional
        A specification replacing each case's own.
    config : dict, optional
        The config ``rope`` was read from, recorded in the manifest.

    Returns
    -------
    dict
        The manifest written to ``manifest.json``: the rope_ref version, the format, the
        ``config`` if given, and per case its files, SHA-256 digests, shapes, rope and
        tolerance.

    Raises
    ------
    RopeTypeError
        ``cases`` is not a list (or other iterable) of ``Case`` (a single ``Case`` or a
        name included), or ``rope`` is not a ``Rope``.
    RopeValueError
        ``rope`` whose head_dim differs from a case's, a case whose own ``Rope`` cannot
        be built, or a quantized case (float8 golden files are not written).
    OSError
        ``out`` cannot be created or written.
    """
    from .. import __version__
    from .._apply import apply_rope

    cases = _case_list(cases)
    if rope is not None and not isinstance(rope, Rope):
        raise RopeTypeError(f"rope must be a rope_ref.Rope or None, got {describe(rope)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    override = rope
    for c in cases:
        rope = override if override is not None else c.rope()
        x = c.x()
        pos = c.positions_for(rope).astype(np.int64)
        if override is None:
            y = c.expected()
        else:
            y = apply_rope(x, pos, rope)
            y = _bf16(y.astype(np.float32)) if c.dtype == "bfloat16" else y.astype(c.dtype)
            y = y.astype(np.float64)
        cos, sin = rope.cos_sin(pos)
        stem = c.name.replace("=", "_")
        tensors = {
            "x": (c.dtype, x),
            "y": (c.dtype, y),
            "positions": ("int64", pos),
            "cos": ("float64", cos),
            "sin": ("float64", sin),
        }
        st_path = out / f"{stem}.safetensors"
        write_safetensors(st_path, tensors)
        npz = {
            k: (_bf16_bits(v) if d == "bfloat16" else v.astype(d)) for k, (d, v) in tensors.items()
        }
        npz_path = out / f"{stem}.npz"
        _write_npz(npz_path, npz)
        rtol, atol_unit = default_tolerance(c.dtype, rope=rope, positions=pos)
        scale = float(np.max(np.abs(y))) if y.size else 1.0
        entries.append(
            {
                "name": c.name,
                "files": {"safetensors": st_path.name, "npz": npz_path.name},
                "sha256": {st_path.name: _sha256(st_path), npz_path.name: _sha256(npz_path)},
                "dtype": c.dtype,
                "bfloat16_in_npz": "uint16 bit patterns (upper half of float32)"
                if c.dtype == "bfloat16"
                else None,
                "shapes": {k: list(v.shape) for k, (_, v) in tensors.items()},
                "x_axes": {
                    "bshd": "batch, seq, heads, head_dim",
                    "bhsd": "batch, heads, seq, head_dim",
                    "thd": "tokens, heads, head_dim (packed)",
                }[c.family],
                "cu_seqlens": _as_list(c.cu_seqlens()),
                "rope": _rope_record(rope),
                "tolerance": {
                    "rtol": rtol,
                    "atol": atol_unit * scale,
                    "rule": "|y_impl - y| <= atol + rtol * |y| elementwise",
                },
            }
        )
    manifest: dict[str, Any] = {
        "rope_ref_version": __version__,
        "format": "each case: x (input), positions (int64, broadcast against x.shape[:-1]), "
        "y (exact result rounded once to dtype), cos/sin (float64 exact tables, "
        "attention factor included)",
        "cases": entries,
    }
    if config is not None:
        manifest["config"] = config
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return manifest


def _case_list(cases: Any) -> list[Case]:
    """``cases`` as a list of Case; typed errors for anything else."""
    if isinstance(cases, Case | str | bytes | dict) or not hasattr(cases, "__iter__"):
        hint = " (wrap one case in a list; rebuild a name with case(name))"
        raise RopeTypeError(f"cases must be a list of Case, got {describe(cases)}{hint}")
    out = list(cases)
    for i, c in enumerate(out):
        if not isinstance(c, Case):
            raise RopeTypeError(f"cases[{i}] must be a Case, got {describe(c)}")
        if getattr(c, "quant", None) is not None:
            raise RopeValueError(
                f"cases[{i}] {c.name!r} is quantized (float8): write_vectors writes "
                "unquantized golden files only"
            )
    return out


def _plain_name(name: Any, what: str) -> str:
    if not (
        isinstance(name, str)
        and name
        and name not in (".", "..")
        and "/" not in name
        and "\\" not in name
        and "\0" not in name
    ):
        raise RopeValueError(f"{what}: {describe(name)} is not a plain file name")
    return name


def _check_entry(entry: Any, what: str) -> None:
    """One case of a manifest: name, files (plain names) and a sha256 for each file."""
    if not (isinstance(entry, dict) and isinstance(entry.get("name"), str)):
        raise RopeValueError(f"{what}: each case must be an object with a name")
    where = f"{what}: case {entry['name']!r}"
    files, digests = entry.get("files"), entry.get("sha256")
    if not (isinstance(files, dict) and files and isinstance(digests, dict)):
        raise RopeValueError(f"{where} must have files and sha256 objects")
    for fname in files.values():
        _plain_name(fname, where)
        digest = digests.get(fname)
        if not (isinstance(digest, str) and len(digest) == 64 and set(digest) <= set(_HEX)):
            raise RopeValueError(f"{where} has no valid sha256 for {fname!r}: {describe(digest)}")
    shapes = entry.get("shapes", {})
    if not (
        isinstance(shapes, dict)
        and all(isinstance(v, list) and all(map(_is_index, v)) for v in shapes.values())
    ):
        raise RopeValueError(f"{where} has invalid shapes {describe(shapes)}")


def read_manifest(directory: str | Path, *, verify: bool = True) -> dict[str, Any]:
    """Read the ``manifest.json`` of a vectors directory and check it.

    Parameters
    ----------
    directory : str or Path
        A directory written by :func:`write_vectors`.
    verify : bool
        Also check the SHA-256 of every file the manifest lists (streamed).

    Returns
    -------
    dict
        The manifest.

    Raises
    ------
    RopeValueError
        A manifest that is too large, not strict JSON, not of the expected structure (cases
        with plain file names and a sha256 for each), or a file whose hash differs.
    OSError
        A file cannot be read (a listed file missing, for instance).
    """
    directory = Path(directory)
    path = directory / "manifest.json"
    raw = _read_file(path, max_bytes=MAX_HEADER_BYTES)
    manifest = strict_json(raw, str(path), max_bytes=MAX_HEADER_BYTES)
    if not (isinstance(manifest, dict) and isinstance(manifest.get("cases"), list)):
        raise RopeValueError(f"{path} must be an object with a list of cases")
    for entry in manifest["cases"]:
        _check_entry(entry, str(path))
    names = [e["name"] for e in manifest["cases"]]
    if len(set(names)) != len(names):
        raise RopeValueError(f"{path}: case names are not unique")
    if verify:
        for entry in manifest["cases"]:
            for fname in entry["files"].values():
                got = _sha256(directory / fname)
                if got != entry["sha256"][fname]:
                    raise RopeValueError(
                        f"{directory / fname} does not match its sha256 in {path}: expected "
                        f"{entry['sha256'][fname]}, the file has {got} (changed or corrupt)"
                    )
    return manifest


def read_case(
    directory: str | Path, name: str, *, fmt: str = "safetensors"
) -> dict[str, np.ndarray]:
    """The arrays of one case of a vectors directory, its file's hash and shapes checked.

    Parameters
    ----------
    directory : str or Path
        A directory written by :func:`write_vectors`.
    name : str
        The case name (``manifest["cases"][i]["name"]``).
    fmt : {"safetensors", "npz"}
        Which of the two files to read (bfloat16 values: float32 from safetensors, uint16 bit
        patterns from npz).

    Returns
    -------
    dict of str to numpy.ndarray
        x, y, positions, cos and sin.

    Raises
    ------
    RopeValueError
        An unknown case or format, a file whose hash or shapes differ from the manifest, or
        any fault :func:`read_safetensors` / :func:`read_npz` reports.

    Examples
    --------
    >>> import tempfile
    >>> from rope_ref.testing import cases
    >>> from rope_ref.testing._vectors import read_case, read_manifest, write_vectors
    >>> with tempfile.TemporaryDirectory() as d:
    ...     m = write_vectors(cases()[:1], d)
    ...     _ = read_manifest(d)  # every sha256 checked
    ...     arrays = read_case(d, m["cases"][0]["name"])
    >>> sorted(arrays)
    ['cos', 'positions', 'sin', 'x', 'y']
    """
    directory = Path(directory)
    if fmt not in ("safetensors", "npz"):
        raise RopeValueError(f"fmt must be 'safetensors' or 'npz', got {describe(fmt)}")
    manifest = read_manifest(directory, verify=False)
    entry = next((e for e in manifest["cases"] if e["name"] == name), None)
    if entry is None:
        raise RopeValueError(f"no case {name!r} in {directory / 'manifest.json'}")
    fname = entry["files"].get(fmt)
    if fname is None:
        raise RopeValueError(f"case {name!r} has no {fmt} file")
    reader = read_safetensors if fmt == "safetensors" else read_npz
    arrays = reader(directory / fname, sha256=entry["sha256"][fname])
    for key, shape in entry.get("shapes", {}).items():
        if key not in arrays or list(arrays[key].shape) != shape:
            got = list(arrays[key].shape) if key in arrays else "missing"
            raise RopeValueError(
                f"{directory / fname}: {key} has shape {got}; the manifest says {shape}"
            )
    return arrays
