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
import struct
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from .._rope import Rope
from ._assert import _bf16, default_tolerance
from ._cases import Case

__all__ = ["read_safetensors", "write_safetensors", "write_vectors"]

_ST_DTYPES = {
    "float64": "F64",
    "float32": "F32",
    "float16": "F16",
    "bfloat16": "BF16",
    "int64": "I64",
    "int32": "I32",
}


def _bf16_bits(a: np.ndarray) -> np.ndarray:
    """bfloat16 values (given exactly in float64/float32) as their 16-bit patterns."""
    return (_bf16(a.astype(np.float32)).view(np.uint32) >> np.uint32(16)).astype(np.uint16)


def write_safetensors(path: Path, tensors: dict[str, tuple[str, np.ndarray]]) -> None:
    """Minimal, deterministic safetensors writer: {name: (dtype name, values)}.

    The format: an 8-byte little-endian header length, a JSON header (sorted keys) with
    dtype, shape and byte offsets of each tensor, then the little-endian bytes.
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


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Read a safetensors file (bfloat16 comes back as float32, exactly)."""
    raw = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    out = {}
    back = {v: k for k, v in _ST_DTYPES.items()}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        lo, hi = info["data_offsets"]
        buf = raw[8 + n + lo : 8 + n + hi]
        dt = back[info["dtype"]]
        if dt == "bfloat16":
            bits = np.frombuffer(buf, dtype="<u2").astype(np.uint32) << np.uint32(16)
            arr = bits.view(np.float32)
        else:
            arr = np.frombuffer(buf, dtype=np.dtype(dt).newbyteorder("<"))
        out[name] = arr.reshape(info["shape"])
    return out


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
    return hashlib.sha256(path.read_bytes()).hexdigest()


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
    """
    from .. import __version__
    from .._apply import apply_rope

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
