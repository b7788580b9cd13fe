"""Fuzzing the config and file readers (issue 13): from_hf_config on mutated real configs
(the presets' stored configs with keys deleted, values replaced by hostile ones, types
changed, junk keys added) and on configs built from scratch; read_safetensors / read_npz on
mutated bytes. Only a typed error (a RopeError) or a valid result is allowed: never another
exception, never a hang (a watchdog fails any example over its time limit).

Example counts follow the hypothesis profile of tests/conftest.py: ten times its
``max_examples`` up to 3000 (300 by default, 3000 with HYPOTHESIS_PROFILE=thorough), or the
profile's own count when larger (HYPOTHESIS_PROFILE=fuzz).
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import io
import json
import math
import shutil
import signal
import struct
import zipfile

import hypothesis
import numpy as np
from hypothesis import HealthCheck, given
from hypothesis import strategies as st

import rope_ref as rr
from rope_ref._presets import preset_default_layer
from rope_ref.testing._vectors import parse_safetensors, read_npz, write_safetensors

# each example is cheap (about 10 ms): ten times the profile's count, at most 3000 (the long
# "fuzz" profile's own count is used as it is)
_BASE = hypothesis.settings().max_examples
EXAMPLES = max(_BASE, min(10 * _BASE, 3000))
SETTINGS = hypothesis.settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
LIMIT_S = 20.0  # per example; a hang fails instead of blocking the suite


@contextlib.contextmanager
def no_hang(seconds=LIMIT_S):
    def _alarm(signum, frame):
        raise TimeoutError(f"example ran longer than {seconds} s")

    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


# ---------------------------------------------------------------- hostile values
HOSTILE = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, 2, -1, 2**53, 2**63, 10**400, 4096, 131072]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1e-320, 1e308, 0.5, 1.0, 1.5, 64.0, 64.5]),
    st.booleans(),
    st.sampled_from(["true", "false", "8", "", "yarn", "linear", "llama3", "longrope"]),
    st.none(),
    st.lists(st.integers(-5, 100), max_size=6),
    st.lists(st.floats(-2, 100), max_size=6),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
    st.sampled_from([np.int64(64), np.float32(1e4), np.bool_(True), np.float64(np.nan)]),
)
KEY_VOCAB = [
    "rope_theta", "rope_scaling", "rope_parameters", "partial_rotary_factor", "head_dim",
    "hidden_size", "num_attention_heads", "max_position_embeddings", "rotary_pct",
    "original_max_position_embeddings", "qk_rope_head_dim", "rotary_dim", "model_type",
    "rope_interleave", "rope_local_base_freq", "text_config", "layer_types",
    "rope_type", "type", "factor", "beta_fast", "beta_slow", "mscale", "mscale_all_dim",
    "attention_factor", "truncate", "short_factor", "long_factor", "low_freq_factor",
    "high_freq_factor", "mrope_section", "mrope_interleaved",
]  # fmt: skip
ROPE_TYPES = ["default", "linear", "dynamic", "yarn", "longrope", "su", "llama3",
              "proportional", "mrope", "ntk", 3, None]  # fmt: skip
PRESETS = [rr.preset_info(n)["config"] for n in rr.presets()]


def _dicts(cfg):
    """Every dict inside a config (the config, text_config, rope_scaling, ...)."""
    out = [cfg]
    for v in cfg.values():
        if isinstance(v, dict):
            out += _dicts(v)
    return out


@st.composite
def mutated_configs(draw):
    cfg = copy.deepcopy(draw(st.sampled_from(PRESETS)))
    for _ in range(draw(st.integers(1, 4))):
        target = draw(st.sampled_from(_dicts(cfg)))
        op = draw(st.sampled_from(["delete", "replace", "retype", "add", "rope_type"]))
        keys = sorted(target, key=str)
        if op == "delete" and keys:
            del target[draw(st.sampled_from(keys))]
        elif op == "replace" and keys:
            target[draw(st.sampled_from(keys))] = draw(HOSTILE)
        elif op == "retype" and keys:
            k = draw(st.sampled_from(keys))
            target[k] = _retype(target[k], draw(st.integers(0, 4)))
        elif op == "add":
            key = draw(st.one_of(st.sampled_from(KEY_VOCAB), st.text(max_size=8), st.integers()))
            target[key] = draw(HOSTILE)
        else:
            target["rope_type" if "rope_type" in target else "type"] = draw(
                st.sampled_from(ROPE_TYPES)
            )
    return cfg


def _retype(value, how):
    """The same value in another type: str, float, int, list, numpy."""
    with contextlib.suppress(Exception):
        return [str, float, int, lambda v: [v], np.float64][how](value)
    return str(value)


@st.composite
def scratch_configs(draw):
    params = draw(st.dictionaries(st.sampled_from(KEY_VOCAB[17:]), HOSTILE, max_size=6))
    params["rope_type"] = draw(st.sampled_from(ROPE_TYPES))
    top = draw(st.dictionaries(st.sampled_from(KEY_VOCAB[:17]), HOSTILE, max_size=6))
    top[draw(st.sampled_from(["rope_scaling", "rope_parameters"]))] = params
    if draw(st.booleans()):
        top.setdefault("head_dim", draw(st.sampled_from([2, 8, 64, 80, 128, 256])))
    return top


def _check_outcome(cfg, layer_type):
    """A RopeError, or a Rope whose tables are finite and correct in norm."""
    with no_hang():
        try:
            rope = rr.Rope.from_hf_config(cfg, layer_type=layer_type)
        except rr.RopeError:
            return "error"
        assert isinstance(rope, rr.Rope)
        assert 0 < rope.rotary_dim <= rope.head_dim <= 16384 and rope.rotary_dim % 2 == 0
        assert rope.explain().startswith("Rope(")
        if rope.head_dim > 1024:
            return "rope"
        pos = np.array([0, 1, 4095, 2**20])
        n_axes = getattr(rope.axis_scheme, "n_axes", 1)  # scaling= or axes= spelling
        if n_axes > 1:  # M-RoPE: one row of positions per axis
            pos = np.stack([pos + k for k in range(n_axes)])
        # an accepted Rope must give its tables: no error here
        inv = rope.inv_freq()
        cos, sin = rope.cos_sin(pos)
        assert np.all(np.isfinite(inv)) and np.all(inv >= 0)
        assert np.all(np.isfinite(cos)) and np.all(np.isfinite(sin))
        # cos^2 + sin^2 = attention factor^2 for every entry (an independent identity)
        a = rope._attention_factor(None)
        np.testing.assert_allclose(cos**2 + sin**2, a * a, rtol=1e-12, atol=1e-300)
        return "rope"


LAYERS = st.sampled_from([None, "full_attention", "sliding_attention", "global"])


@SETTINGS
@given(cfg=mutated_configs(), layer_type=LAYERS)
def test_fuzz_mutated_real_configs(cfg, layer_type):
    outcome = _check_outcome(cfg, layer_type)
    hypothesis.event(outcome)


@SETTINGS
@given(cfg=scratch_configs(), layer_type=LAYERS)
def test_fuzz_configs_from_scratch(cfg, layer_type):
    outcome = _check_outcome(cfg, layer_type)
    hypothesis.event(outcome)


def test_unmutated_presets_all_build():
    # the starting points are valid: mutations start from real, accepted configs
    for cfg, name in zip(PRESETS, rr.presets(), strict=True):
        layer = preset_default_layer(name)
        assert _check_outcome(copy.deepcopy(cfg), layer) == "rope", name


# ---------------------------------------------------------------- files
def _good_safetensors():
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "g.safetensors"
        write_safetensors(
            p,
            {
                "x": ("float32", np.arange(12.0).reshape(3, 4)),
                "b": ("bfloat16", np.array([1.0, -2.0, 0.5])),
                "pos": ("int64", np.array([0, 7])),
            },
        )
        return p.read_bytes()


GOOD_ST = _good_safetensors()
HEADER_LEN = struct.unpack("<Q", GOOD_ST[:8])[0]


@st.composite
def mutated_safetensors(draw):
    raw = bytearray(GOOD_ST)
    op = draw(st.sampled_from(["flip", "truncate", "insert", "length", "header"]))
    if op == "flip":
        for _ in range(draw(st.integers(1, 8))):
            i = draw(st.integers(0, len(raw) - 1))
            raw[i] = draw(st.integers(0, 255))
    elif op == "truncate":
        raw = raw[: draw(st.integers(0, len(raw) - 1))]
    elif op == "insert":
        i = draw(st.integers(0, len(raw)))
        raw[i:i] = draw(st.binary(min_size=1, max_size=16))
    elif op == "length":
        raw[:8] = struct.pack("<Q", draw(st.integers(0, 2**64 - 1)))
    else:  # a mutated header, re-serialised with a consistent length
        header = json.loads(GOOD_ST[8 : 8 + HEADER_LEN])
        name = draw(st.sampled_from(sorted(header)))
        field = draw(st.sampled_from(["dtype", "shape", "data_offsets"]))
        header[name][field] = draw(
            st.one_of(
                HOSTILE,
                st.lists(st.integers(-(2**40), 2**40), max_size=3),
                st.sampled_from(["F32", "F64", "I64", "BF16", "F16", "I32", "U8", "O"]),
            )
        )
        text = json.dumps(header, default=str).encode()
        raw = bytearray(struct.pack("<Q", len(text)) + text + GOOD_ST[8 + HEADER_LEN :])
    return bytes(raw)


@SETTINGS
@given(raw=mutated_safetensors())
def test_fuzz_safetensors_bytes(raw):
    with no_hang():
        try:
            out = parse_safetensors(raw, "fuzz")
        except rr.RopeError:
            hypothesis.event("error")
            return
    hypothesis.event("read")
    for a in out.values():
        assert isinstance(a, np.ndarray) and a.dtype.kind in "fiu"
    # the safetensors library (a peer, when installed) reads the same values: what came
    # back is the data section's, never header bytes
    peer = _peer_load(raw)
    if peer is not None:
        assert set(peer) == set(out)
        for k, v in peer.items():
            if v.dtype != np.uint16:  # BF16: the peer gives bit patterns, we give float32
                np.testing.assert_array_equal(out[k], v)
                assert out[k].dtype == v.dtype


def _peer_load(raw):
    try:
        from safetensors import safe_open  # noqa: F401
        from safetensors.numpy import load
    except ImportError:
        return None
    try:
        return load(raw)
    except Exception as exc:  # the peer reads BF16 only as raw bytes in numpy
        if "bfloat16" in str(exc).lower() or "BF16" in str(exc):
            return None
        raise AssertionError(f"rope_ref read bytes that safetensors refuses: {exc}") from exc


def _good_npz():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, arr in (("x", np.arange(6.0).reshape(2, 3)), ("p", np.arange(4))):
            member = io.BytesIO()
            np.lib.format.write_array(member, arr, allow_pickle=False)
            zf.writestr(f"{name}.npy", member.getvalue())
    return buf.getvalue()


GOOD_NPZ = _good_npz()


@SETTINGS
@given(
    edits=st.lists(st.tuples(st.integers(0, len(GOOD_NPZ) - 1), st.integers(0, 255)), max_size=6),
    cut=st.one_of(st.just(len(GOOD_NPZ)), st.integers(1, len(GOOD_NPZ))),
)
def test_fuzz_npz_bytes(tmp_path, edits, cut):
    raw = bytearray(GOOD_NPZ[:cut])
    for i, b in edits:
        if i < len(raw):
            raw[i] = b
    path = tmp_path / "f.npz"
    path.write_bytes(bytes(raw))
    with no_hang():
        try:
            out = read_npz(path)
        except rr.RopeError:
            hypothesis.event("error")
            return
    hypothesis.event("read")
    for a in out.values():
        assert isinstance(a, np.ndarray) and a.dtype.kind in "biuf"
        assert math.prod(a.shape) * a.dtype.itemsize == a.nbytes


@st.composite
def npy_members(draw):
    """An .npy member whose header dict is mutated (the archive itself stays valid)."""
    descr = draw(st.sampled_from(["<f8", "<f4", ">i4", "|u1", "|b1", "|O", "<U3", "<c16", "|V8"]))
    dims = st.one_of(st.integers(0, 4), st.integers(-3, 2**40))
    shape = draw(st.lists(dims, max_size=3).map(tuple))
    fortran = draw(st.sampled_from([False, True, "no"]))
    size = math.prod(shape) * np.dtype(descr).itemsize if min(shape, default=0) >= 0 else 0
    exact = st.binary(min_size=size, max_size=size) if 0 <= size <= 256 else st.nothing()
    payload = draw(st.one_of(exact, st.binary(max_size=64)))
    header = repr({"descr": descr, "fortran_order": fortran, "shape": shape}).encode()
    if draw(st.booleans()):
        header = header.replace(b"'shape'", draw(st.sampled_from([b"'shap'", b"'shape'"])))
    header += b" " * (-(len(header) + 11) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + payload


@SETTINGS
@given(member=npy_members())
def test_fuzz_npy_headers(tmp_path, member):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("x.npy", member)
    path = tmp_path / "h.npz"
    path.write_bytes(buf.getvalue())
    with no_hang():
        try:
            out = read_npz(path)
        except rr.RopeError:
            hypothesis.event("error")
            return
    hypothesis.event("read")
    # an independent reader (NumPy's own, without pickle) gives the same array
    with np.load(path, allow_pickle=False) as ref:
        np.testing.assert_array_equal(out["x"], ref["x"])
        assert out["x"].dtype == ref["x"].dtype


def _vectors_dir():
    import tempfile
    from pathlib import Path

    from rope_ref.testing import cases
    from rope_ref.testing._vectors import write_vectors

    d = Path(tempfile.mkdtemp(prefix="rr-fuzz-vectors-"))
    atexit.register(shutil.rmtree, d, ignore_errors=True)
    return d, write_vectors(cases(presets=False)[:1], d)


@st.composite
def mutated_manifests(draw, manifest):
    m = copy.deepcopy(manifest)
    for _ in range(draw(st.integers(1, 3))):
        cases = m.get("cases") if isinstance(m.get("cases"), list) else []
        target = draw(st.sampled_from(_dicts(m) + [c for c in cases if isinstance(c, dict)]))
        keys = sorted(target, key=str)
        if keys and draw(st.booleans()):
            target[draw(st.sampled_from(keys))] = draw(HOSTILE)
        elif keys:
            del target[draw(st.sampled_from(keys))]
    return m


VEC_DIR, VEC_MANIFEST = _vectors_dir()


@SETTINGS
@given(m=mutated_manifests(VEC_MANIFEST))
def test_fuzz_manifests(m):
    from rope_ref.testing._vectors import read_manifest

    (VEC_DIR / "manifest.json").write_text(json.dumps(m, default=str))
    with no_hang():
        try:
            out = read_manifest(VEC_DIR)
        except rr.RopeError:
            hypothesis.event("error")
            return
    hypothesis.event("read")
    # accepted only when every listed file still has its recorded hash
    for entry in out["cases"]:
        assert set(entry["files"].values()) <= set(entry["sha256"])
