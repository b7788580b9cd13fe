"""Hostile files for the readers (issue 13): safetensors, npz, vectors manifests, the presets
file. Each fault is a RopeValueError naming the file and the fault; nothing is read through
pickle; hashes given are verified. Files are built by hand here (struct, json, zipfile), an
independent route from rope_ref's writers."""

from __future__ import annotations

import io
import json
import struct
import zipfile

import numpy as np
import pytest

import rope_ref as rr
from rope_ref._presets import parse_presets
from rope_ref.testing import cases
from rope_ref.testing._vectors import (
    parse_safetensors,
    read_case,
    read_manifest,
    read_npz,
    read_safetensors,
    write_vectors,
)


def st_bytes(header, data=b"", pad=True):
    text = json.dumps(header).encode() if not isinstance(header, bytes) else header
    if pad:
        text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


A = np.arange(6, dtype="<f4")  # 24 bytes
B = np.array([7, -8], dtype="<i8")  # 16 bytes
GOOD = {
    "a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
    "b": {"dtype": "I64", "shape": [2], "data_offsets": [24, 40]},
}
DATA = A.tobytes() + B.tobytes()


def _bad(raw, pattern):
    with pytest.raises(rr.RopeValueError, match=pattern):
        parse_safetensors(raw, "t.safetensors")


def test_hand_built_safetensors_reads_back():
    out = parse_safetensors(st_bytes(GOOD, DATA))
    np.testing.assert_array_equal(out["a"], A.reshape(2, 3))
    np.testing.assert_array_equal(out["b"], [7, -8])
    assert out["b"].dtype == np.int64


def test_bfloat16_values_exact():
    bits = np.array([0x3F80, 0xC000, 0x7F80], dtype="<u2")  # 1.0, -2.0, inf
    hdr = {"x": {"dtype": "BF16", "shape": [3], "data_offsets": [0, 6]}}
    out = parse_safetensors(st_bytes(hdr, bits.tobytes() + b"\0\0"[:0]))
    np.testing.assert_array_equal(out["x"], np.array([1.0, -2.0, np.inf], dtype=np.float32))


@pytest.mark.parametrize(
    ("offsets", "pattern"),
    [
        ([-8, 24], r"data_offsets \[-8, 24\]; expected \[start, end\]"),
        ([0, 24, 1], "expected"),
        ([24, 0], r"outside the 40 bytes"),
        ([0, 48], r"outside the 40 bytes"),
        ([0, 1.5], "expected"),
        ([True, 24], "expected"),
    ],
)
def test_bad_offsets(offsets, pattern):
    hdr = json.loads(json.dumps(GOOD))
    hdr["a"]["data_offsets"] = offsets
    _bad(st_bytes(hdr, DATA), pattern)


def test_overlapping_offsets_and_header_bytes_never_returned():
    hdr = json.loads(json.dumps(GOOD))
    hdr["b"]["data_offsets"] = [8, 24]
    hdr["b"]["shape"] = [2]
    _bad(st_bytes(hdr, DATA), r"tensor 'b' at bytes \[8, 24\] overlaps 'a'")


def test_holes_and_trailing_bytes():
    hdr = {"b": {"dtype": "I64", "shape": [2], "data_offsets": [24, 40]}}
    _bad(st_bytes(hdr, DATA), r"leaves a hole after the start")
    _bad(st_bytes(GOOD, DATA + b"\0" * 8), "8 bytes after the last tensor")


@pytest.mark.parametrize(
    ("shape", "pattern"),
    [
        ([-1], r"shape \[-1\]; expected a list of sizes >= 0"),
        ([2, 2], "needs 16 bytes, data_offsets give 24"),
        ("6", "shape '6'"),
        ([2.0, 3], r"shape \[2\.0, 3\]"),
        ([10**30], "needs"),
    ],
)
def test_bad_shapes(shape, pattern):
    hdr = json.loads(json.dumps(GOOD))
    hdr["a"]["shape"] = shape
    _bad(st_bytes(hdr, DATA), pattern)


def test_bad_dtypes_and_entries():
    for dtype in ("F128", "O", ["F32"], None):
        hdr = json.loads(json.dumps(GOOD))
        hdr["a"]["dtype"] = dtype
        _bad(st_bytes(hdr, DATA), "has dtype")
    hdr = json.loads(json.dumps(GOOD))
    hdr["a"]["extra"] = 1
    _bad(st_bytes(hdr, DATA), "must have exactly dtype, shape and data_offsets")
    _bad(st_bytes({"a": [1, 2]}, DATA), "must have exactly")
    _bad(st_bytes({**GOOD, "__metadata__": {"k": 1}}, DATA), "__metadata__ must map strings")


def test_truncated_and_corrupt_headers():
    raw = st_bytes(GOOD, DATA)
    _bad(raw[:5], r"truncated: 5 bytes")
    _bad(raw[:40], "header length .* does not fit")
    _bad(struct.pack("<Q", 2**63) + raw[8:], "does not fit")
    _bad(struct.pack("<Q", 0) + raw[8:], "does not fit")
    _bad(st_bytes(b'{"a": {', DATA), "header is not valid JSON")
    _bad(st_bytes(b"[1, 2]", DATA), "header must be a JSON object, got list")
    _bad(st_bytes(b"\xff\xfe{}", b""), "not UTF-8")
    dup = b'{"a": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}, "a": 1}'
    _bad(st_bytes(dup), "duplicate key 'a'")
    _bad(st_bytes(b'{"__metadata__": {"k": NaN}}'), "NaN is not JSON")
    _bad(st_bytes(b"[" * 100_000 + b"]" * 100_000), "nested too deeply|not valid JSON")


def test_read_safetensors_verifies_sha256_and_size(tmp_path):
    import hashlib

    path = tmp_path / "t.safetensors"
    raw = st_bytes(GOOD, DATA)
    path.write_bytes(raw)
    good = hashlib.sha256(raw).hexdigest()
    assert set(read_safetensors(path, sha256=good)) == {"a", "b"}
    with pytest.raises(rr.RopeValueError, match="does not match its sha256"):
        read_safetensors(path, sha256="0" * 64)
    with pytest.raises(rr.RopeValueError, match="sha256 must be 64 lower-case hex digits"):
        read_safetensors(path, sha256="xyz")
    with pytest.raises(rr.RopeValueError, match="too large"):
        read_safetensors(path, max_bytes=10)


# ---------------------------------------------------------------- npz
def npz_bytes(members):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def npy(arr, allow_pickle=False):
    b = io.BytesIO()
    np.lib.format.write_array(b, arr, allow_pickle=allow_pickle)
    return b.getvalue()


def test_npz_reads_numeric_arrays(tmp_path):
    p = tmp_path / "a.npz"
    p.write_bytes(npz_bytes({"x.npy": npy(np.arange(5.0)), "y.npy": npy(np.eye(2, dtype="<i4"))}))
    out = read_npz(p)
    np.testing.assert_array_equal(out["x"], [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(out["y"], [[1, 0], [0, 1]])


@pytest.mark.parametrize(
    ("members", "pattern"),
    [
        ({"x.npy": npy(np.array([{"a": 1}], dtype=object), True)}, "would need pickle"),
        ({"x.npy": npy(np.array(["ab"]))}, "has dtype <U2"),
        ({"x.npy": npy(np.arange(4.0))[:-8]}, "needs 32 bytes, the member holds 24"),
        ({"x.npy": b"\x93NUMPY\x01\x00" + b"garbage"}, "no valid .npy header"),
        ({"x.npy": b"not npy at all"}, "no valid .npy header"),
        ({"x.txt": npy(np.arange(2.0))}, "is not a NAME.npy array"),
        ({"../x.npy": npy(np.arange(2.0))}, "is not a NAME.npy array"),
        ({"x.npy": npy(np.asfortranarray(np.eye(3)))}, "fortran_order=True"),
    ],
)
def test_npz_faults(tmp_path, members, pattern):
    p = tmp_path / "a.npz"
    p.write_bytes(npz_bytes(members))
    with pytest.raises(rr.RopeValueError, match=pattern):
        read_npz(p)


def test_npz_huge_declared_shape_is_not_allocated(tmp_path):
    header = npy(np.zeros(1))
    big = header.replace(b"(1,)", b"(10000000000000,)")
    p = tmp_path / "a.npz"
    p.write_bytes(npz_bytes({"x.npy": big}))
    with pytest.raises(rr.RopeValueError, match="needs 80000000000000 bytes"):
        read_npz(p)


def test_npz_not_a_zip_or_truncated_or_bomb(tmp_path):
    p = tmp_path / "a.npz"
    p.write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(rr.RopeValueError, match=r"not a readable \.npz archive"):
        read_npz(p)
    raw = npz_bytes({"x.npy": npy(np.arange(100.0))})
    p.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(rr.RopeValueError, match=r"not a readable \.npz archive"):
        read_npz(p)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("x.npy", npy(np.zeros(200_000)))  # 1.6 MB that compresses to ~2 kB
    p.write_bytes(buf.getvalue())
    assert p.stat().st_size < 10_000
    with pytest.raises(rr.RopeValueError, match="members expand beyond 100000 bytes"):
        read_npz(p, max_bytes=100_000)


def test_npz_corrupt_directory_found_by_fuzzing(tmp_path):
    raw = npz_bytes({"x.npy": npy(np.arange(4.0))})
    p = tmp_path / "a.npz"
    # a name flagged UTF-8 that is not UTF-8: zipfile raises UnicodeDecodeError
    bad = bytearray(raw)
    c = bad.index(b"PK\x01\x02")
    bad[c + 9] |= 0x08  # general purpose flag bit 11: UTF-8 name
    bad[c + 46] = 0x80
    p.write_bytes(bytes(bad))
    with pytest.raises(
        rr.RopeValueError, match=r"not a readable \.npz archive: UnicodeDecodeError"
    ):
        read_npz(p)
    # a central directory offset past its real place: zipfile seeks to a negative offset
    bad = bytearray(raw)
    e = bad.rindex(b"PK\x05\x06")
    (offset,) = struct.unpack("<I", bad[e + 16 : e + 20])
    bad[e + 16 : e + 20] = struct.pack("<I", offset + 256)
    p.write_bytes(bytes(bad))
    with pytest.raises(rr.RopeValueError, match=r"not a readable \.npz archive"):
        read_npz(p)


def test_npz_corrupt_member_crc(tmp_path):
    raw = bytearray(npz_bytes({"x.npy": npy(np.arange(64.0))}))
    i = raw.index(b"\x00\x00\x00\x00\x00\x00\xf0?")  # the bytes of 1.0 in the member
    raw[i + 7] ^= 0x10
    p = tmp_path / "a.npz"
    p.write_bytes(bytes(raw))
    with pytest.raises(rr.RopeValueError, match=r"not a readable \.npz archive"):
        read_npz(p)


# ---------------------------------------------------------------- vectors manifests
@pytest.fixture(scope="module")
def vectors(tmp_path_factory):
    out = tmp_path_factory.mktemp("vec")
    chosen = [c for c in cases(dtypes=("float32", "bfloat16"), presets=False)][:2]
    manifest = write_vectors(chosen, out)
    return out, manifest


def test_manifest_read_back_and_verified(vectors, tmp_path):
    import shutil

    src, manifest = vectors
    assert read_manifest(src) == manifest
    name = manifest["cases"][0]["name"]
    for fmt in ("safetensors", "npz"):
        arrays = read_case(src, name, fmt=fmt)
        assert list(arrays["x"].shape) == manifest["cases"][0]["shapes"]["x"]
    # a flipped byte in one data file: read_manifest and read_case both refuse it
    out = tmp_path / "v"
    shutil.copytree(src, out)
    f = out / manifest["cases"][0]["files"]["safetensors"]
    raw = bytearray(f.read_bytes())
    raw[-1] ^= 1
    f.write_bytes(bytes(raw))
    with pytest.raises(rr.RopeValueError, match="does not match its sha256"):
        read_manifest(out)
    with pytest.raises(rr.RopeValueError, match="does not match its sha256"):
        read_case(out, name)
    read_case(out, name, fmt="npz")  # the other file is intact
    with pytest.raises(rr.RopeValueError, match="no case 'nope'"):
        read_case(out, "nope")
    with pytest.raises(rr.RopeValueError, match="fmt must be"):
        read_case(out, name, fmt="pickle")


@pytest.mark.parametrize(
    ("edit", "pattern"),
    [
        (
            lambda m: m["cases"][0]["files"].update(safetensors="../../etc/passwd"),
            "is not a plain file name",
        ),
        (lambda m: m["cases"][0]["sha256"].clear(), "has no valid sha256"),
        (lambda m: m["cases"].append(dict(m["cases"][0])), "case names are not unique"),
        (lambda m: m.update(cases={}), "must be an object with a list of cases"),
        (lambda m: m["cases"][0]["shapes"].update(x=[-1]), "invalid shapes"),
        (lambda m: m["cases"][0]["shapes"].update(x=[1, 2, 3]), None),
    ],
)
def test_manifest_structure_faults(vectors, tmp_path, edit, pattern):
    import shutil

    src, manifest = vectors
    out = tmp_path / "v"
    shutil.copytree(src, out)
    m = json.loads(json.dumps(manifest))
    edit(m)
    (out / "manifest.json").write_text(json.dumps(m))
    name = manifest["cases"][0]["name"]
    if pattern is None:  # a shape that disagrees with the file: read_case says so
        with pytest.raises(rr.RopeValueError, match=r"x has shape \[.*\]; the manifest says"):
            read_case(out, name)
        return
    with pytest.raises(rr.RopeValueError, match=pattern):
        read_manifest(out)


def test_manifest_not_json(vectors, tmp_path):
    import shutil

    src, _ = vectors
    out = tmp_path / "v"
    shutil.copytree(src, out)
    text = (out / "manifest.json").read_text()
    (out / "manifest.json").write_text(text[: len(text) // 2])
    with pytest.raises(rr.RopeValueError, match="not valid JSON"):
        read_manifest(out)


# ---------------------------------------------------------------- the presets file
def test_presets_file_parsed_strictly():
    from importlib import resources

    raw = resources.files("rope_ref").joinpath("presets", "configs.json").read_bytes()
    assert set(parse_presets(raw)) == set(rr.presets())
    with pytest.raises(rr.RopeValueError, match=r"configs\.json is not valid JSON"):
        parse_presets(raw[: len(raw) // 2])
    with pytest.raises(rr.RopeValueError, match="too large"):
        parse_presets(b" " * (4 * 2**20 + 1))
    good = {"hf_id": "a/b", "source": "s", "config": {"head_dim": 64}}
    bad_entries = [
        ({"x": {**good, "config": [1]}}, r"x\.config must be a dict"),
        ({"x": {**good, "hf_id": None}}, r"x\.hf_id must be a str"),
        ({"X": good}, "lower-case"),
        ({"x": {**good, "layer_types": "full"}}, r"x\.layer_types must be a list"),
        ({"x": {**good, "layer_types": ["a", "a"]}}, "distinct"),
        ({"x": {**good, "layer_types": ["a"], "layer_type": "b"}}, r"x\.layer_type must be one"),
        ([good], "must hold a JSON object"),
    ]
    for data, pattern in bad_entries:
        with pytest.raises(rr.RopeValueError, match=pattern):
            parse_presets(json.dumps(data))
    with pytest.raises(rr.RopeValueError, match="duplicate key 'x'"):
        g = json.dumps(good)
        parse_presets(f'{{"x": {g}, "x": {g}}}')
    assert parse_presets(json.dumps({"_comment": "c", "x": good})) == {"x": good}
