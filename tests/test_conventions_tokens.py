"""``rope-ref check`` conventions for token layouts (rope_ref/testing/_twins/_tokens.py):
flash-qkv, flash-qkv-gqa, flashinfer, flashinfer-pos-ids, te, te-cp, vllm-strided.

Each convention is run the way a user runs it: ``rope_ref._cli.main(["check", ...])`` on
targets in a module written to a temporary directory, the outcome read from the ``--json``
report. (a) The library's signature twin (rope_ref's port of its documented formula) passes
every battery case the convention can express; (b) realistic bugs in a target fail; (c) the
cases a convention cannot express are reported as skipped, with the reason.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import uuid

import pytest

from rope_ref._cli import main
from rope_ref.testing._twins._conventions import CONVENTIONS

NEW = (
    "flash-qkv",
    "flash-qkv-gqa",
    "flashinfer",
    "flashinfer-pos-ids",
    "te",
    "te-cp",
    "vllm-strided",
)

TARGETS = """
import numpy as np
from rope_ref.testing import (
    flash_apply_rotary_emb as flash, flash_apply_rotary_emb_qkv as fq,
    flashinfer_apply_rope as fi, flashinfer_apply_rope_pos_ids as fip, flashinfer_positions,
    te_apply_rotary_pos_emb as te, vllm_rotary as vllm)


def shift_rows(t):  # row p holds row p + 1: every position read one too far
    return np.concatenate([t[1:], t[-1:]], axis=0)


# --- flash-attn packed QKV
def fq_good(qkv, cos, sin, **kw):
    return fq(qkv, cos, sin, **kw)

def fq_layout(qkv, cos, sin, interleaved=False, **kw):
    return fq(qkv, cos, sin, interleaved=not interleaved, **kw)

def fq_off_by_one(qkv, cos, sin, **kw):
    return fq(qkv, shift_rows(cos), shift_rows(sin), **kw)

def fq_rotates_v(qkv, cos, sin, interleaved=False, seqlen_offsets=0, num_heads_q=None):
    b, s, d = qkv.shape[0], qkv.shape[1], qkv.shape[-1]
    every_head = np.reshape(qkv, (b, s, -1, d))
    out = flash(every_head, cos, sin, interleaved=interleaved, seqlen_offsets=seqlen_offsets)
    return np.reshape(out, qkv.shape)

def fq_k_swapped(qkv, cos, sin, **kw):  # k's cos and sin swapped
    return fq(qkv, cos, sin, cos_k=sin, sin_k=cos, **kw)

def fq_gqa_only_q(qkv, cos, sin, interleaved=False, seqlen_offsets=0, num_heads_q=None):
    q = flash(qkv[:, :, :num_heads_q], cos, sin, interleaved=interleaved,
              seqlen_offsets=seqlen_offsets)
    return np.concatenate([q, qkv[:, :, num_heads_q:]], axis=2)


# --- flashinfer
def fi_good(q, k, indptr, offsets, **kw):
    return fi(q, k, indptr, offsets, **kw)

def fi_layout(q, k, indptr, offsets, interleave=False, **kw):
    return fi(q, k, indptr, offsets, interleave=not interleave, **kw)

def fi_off_by_one(q, k, indptr, offsets, **kw):
    return fi(q, k, indptr, offsets + 1, **kw)

def fi_wrong_base(q, k, indptr, offsets, rope_theta=1e4, **kw):
    return fi(q, k, indptr, offsets, **kw)  # rope_theta ignored: always 1e4

def fi_no_scale(q, k, indptr, offsets, rope_scale=1, **kw):
    return fi(q, k, indptr, offsets, **kw)  # rope_scale ignored

def fi_first_offset(q, k, indptr, offsets, **kw):  # one offset for every request
    return fi(q, k, indptr, np.full_like(offsets, offsets[0]), **kw)

def np_rope(x, pos, rotary_dim, interleave, rope_scale, rope_theta, swap=False):
    r = rotary_dim
    inv = rope_theta ** (-np.arange(0, r, 2) / r) / rope_scale
    ang = pos.astype(np.float64)[:, None, None] * inv
    c, s = np.cos(ang), np.sin(ang)
    if swap:
        c, s = s, c
    y = x.astype(np.float64)
    a, b = (y[..., 0:r:2], y[..., 1:r:2]) if interleave else (y[..., : r // 2], y[..., r // 2 : r])
    ra, rb = a * c - b * s, b * c + a * s
    if interleave:
        rot = np.stack([ra, rb], -1).reshape(ra.shape[:-1] + (r,))
    else:
        rot = np.concatenate([ra, rb], -1)
    return np.concatenate([rot, y[..., r:]], -1).astype(x.dtype)

def fi_k_swapped(q, k, indptr, offsets, **kw):  # k rotated with cos and sin swapped
    q_out, _ = fi(q, k, indptr, offsets, **kw)
    return q_out, np_rope(k, np.asarray(flashinfer_positions(indptr, offsets)), swap=True, **kw)

def fip_good(q, k, pos_ids, **kw):
    return fip(q, k, pos_ids, **kw)

def fip_layout(q, k, pos_ids, interleave=False, **kw):
    return fip(q, k, pos_ids, interleave=not interleave, **kw)

def fip_off_by_one(q, k, pos_ids, **kw):
    return fip(q, k, pos_ids + 1, **kw)

def fip_wrong_base(q, k, pos_ids, rope_theta=1e4, **kw):
    return fip(q, k, pos_ids, rope_theta=2 * rope_theta, **kw)

def fip_k_swapped(q, k, pos_ids, **kw):
    q_out, _ = fip(q, k, pos_ids, **kw)
    return q_out, np_rope(k, np.asarray(pos_ids), swap=True, **kw)


# --- TransformerEngine
def te_good(t, freqs, **kw):
    return te(t, freqs, **kw)

def te_layout(t, freqs, interleaved=False, **kw):
    return te(t, freqs, interleaved=not interleaved, **kw)

def te_off_by_one(t, freqs, **kw):
    return te(t, shift_rows(freqs), **kw)

def te_no_start_positions(t, freqs, start_positions=None, **kw):
    return te(t, freqs, **kw)

def te_swapped(t, freqs, **kw):  # cos and sin swapped: the angle pi/2 - f
    return te(t, np.pi / 2 - freqs, **kw)

def te_thd_one_sequence(t, freqs, tensor_format="sbhd", cu_seqlens=None, **kw):
    if tensor_format == "thd":  # cu_seqlens ignored: the batch as one long sequence
        cu_seqlens = np.array([0, t.shape[0]], dtype=np.int32)
        kw.pop("start_positions", None)
    return te(t, freqs, tensor_format=tensor_format, cu_seqlens=cu_seqlens, **kw)

def te_cp_contiguous(t, freqs, tensor_format="sbhd", cp_size=1, cp_rank=0, cu_seqlens=None,
                     **kw):
    # the shard taken for the contiguous slice cp_rank of each sequence
    if tensor_format == "thd":
        local = np.diff(np.asarray(cu_seqlens)) // cp_size
        cu = np.concatenate([[0], np.cumsum(local)]).astype(np.int32)
        return te(t, freqs, tensor_format, start_positions=cp_rank * local, cu_seqlens=cu, **kw)
    s, b = (t.shape[0], t.shape[1]) if tensor_format == "sbhd" else (t.shape[1], t.shape[0])
    return te(t, freqs, tensor_format, start_positions=np.full(b, cp_rank * s), **kw)

def te_cp_rank_swapped(t, freqs, cp_size=1, cp_rank=0, **kw):
    return te(t, freqs, cp_size=cp_size, cp_rank=cp_size - 1 - cp_rank, **kw)

def te_cp_rank0(t, freqs, cp_rank=0, **kw):  # every rank given rank 0's rows
    return te(t, freqs, cp_rank=0, **kw)


# --- vLLM with strided views
def vs_good(positions, query, key, **kw):
    return vllm(positions, query, key, **kw)

def vs_in_place(positions, query, key, **kw):  # as vLLM's kernel: writes into the views
    q, k = vllm(positions, query, key, **kw)
    query[...], key[...] = q, k
    return query, key

def vs_in_place_none(positions, query, key, **kw):  # as vLLM's ops.rotary_embedding: None
    q, k = vllm(positions, query, key, **kw)
    query[...], key[...] = q, k

def vs_in_place_none_layout(positions, query, key, is_neox_style=True, **kw):
    q, k = vllm(positions, query, key, is_neox_style=not is_neox_style, **kw)
    query[...], key[...] = q, k

def returns_none(*args, **kw):
    return None

def fi_swapped(q, k, indptr, offsets, **kw):  # returns (k, q)
    q_out, k_out = fi(q, k, indptr, offsets, **kw)
    return k_out, q_out

def fi_returns_one(q, k, indptr, offsets, **kw):
    return fi(q, k, indptr, offsets, **kw)[0]

def _as_if(t, token_stride, head_stride):
    n, h, d = t.shape
    it = t.itemsize
    return np.lib.stride_tricks.as_strided(t, shape=(n, h, d),
                                           strides=(token_stride * it, head_stride * it, it))

def _kernel_with_strides(positions, query, key, head_size, tok, head, **kw):
    rq, rk = _as_if(query, tok(query), head), _as_if(key, tok(key), head)
    q, k = vllm(positions, rq.copy(), rk.copy(), head_size=head_size, **kw)
    rq[...], rk[...] = q, k  # in place, through the strides it assumed
    return query, key

def vs_head_stride_ignored(positions, query, key, head_size, **kw):
    return _kernel_with_strides(positions, query, key, head_size,
                                lambda t: t.strides[0] // t.itemsize, head_size, **kw)

def vs_token_stride_ignored(positions, query, key, head_size, **kw):
    def tok(t):  # tokens assumed packed: heads * head stride apart
        return t.shape[1] * t.strides[1] // t.itemsize
    return _kernel_with_strides(positions, query, key, head_size, tok,
                                query.strides[1] // query.itemsize, **kw)
"""

# small cases: every shape family, both layouts, partial rotary, each position form
D_ARANGE = "bshd-b2-s8-h4-d32-half-r32-base=10000-pos=arange-float32"
D_PERSEQ = "bhsd-b2-s8-h4-d32-interleaved-r16-base=1e+06-pos=perseq-float32"
D_OFFSET = "bshd-b2-s8-h3-d32-half-r16-base=500000-pos=offset-float32"
D_LARGE = "bshd-b2-s8-h2-d32-half-r32-base=10000-pos=large-float32"
S_ARANGE = "bhsd-b2-s6-h2-d32-interleaved-r32-base=10000-pos=arange-float32"
T_ARANGE = "thd-b3-s8-h2-d32-half-r32-base=500000-pos=arange-float32"
T_PERSEQ = "thd-b3-s8-h2-d32-interleaved-r32-base=10000-pos=perseq-float32"
RANDOM = "bshd-b2-s8-h2-d32-half-r32-base=10000-pos=random-float32"
T_RANDOM = "thd-b2-s8-h2-d32-half-r32-base=10000-pos=random-float32"
DENSE = [D_ARANGE, D_PERSEQ, D_OFFSET, D_LARGE]
PACKED = [T_ARANGE, T_PERSEQ]


@pytest.fixture
def targets(tmp_path, monkeypatch):
    """A module of targets, importable by ``main`` (a fresh name per test)."""
    name = f"rr_tokens_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(TARGETS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def check(capsys, tmp_path, target, convention, *options):
    """Run ``rope-ref check``; return (exit code, stdout, the --json report)."""
    path = tmp_path / f"report-{uuid.uuid4().hex[:6]}.json"
    code = main(["check", target, "--convention", convention, "--json", str(path), *options])
    out, _ = capsys.readouterr()
    report = json.loads(path.read_text(encoding="utf-8"))
    assert report["summary"]["exit_code"] == code
    return code, out, report


def results(report):
    return {row["case"]: row["result"] for row in report["cases"]}


def notes(report):
    return [row.get("note", "") for row in report["cases"] if row["result"] == "ok"]


def test_every_new_convention_is_registered_with_its_signature(capsys):
    for name in NEW:
        conv = CONVENTIONS[name]
        assert conv.kind == "function" and conv.signature and conv.prepare.__doc__
    assert main(["check", "--help"]) == 0
    out = " ".join(capsys.readouterr()[0].split())
    for name in NEW:
        assert " ".join(CONVENTIONS[name].signature.split()) in out


# ---------------------------------------------------------------------------- (a) twins pass
GOOD = {
    "flash-qkv": "fq_good",
    "flash-qkv-gqa": "fq_good",
    "flashinfer": "fi_good",
    "flashinfer-pos-ids": "fip_good",
    "te": "te_good",
    "te-cp": "te_good",
    "vllm-strided": "vs_good",
}

# what each convention may skip in the default battery (float32 with the presets)
SKIPS = {
    "flash-qkv": ("no cu_seqlens (packed)", "one position per token", "offset + arange"),
    "flashinfer": ("one position per token", "no frequency schedule", "offsets[i] + arange"),
    "flashinfer-pos-ids": ("one position per token", "no frequency schedule"),
    "te": ("one position per token", "no attention factor", "start_positions[i] + arange"),
    "te-cp": ("one position per token", "no attention factor", "0 .. length - 1"),
    "vllm-strided": ("one position per token",),
}
SKIPS["flash-qkv-gqa"] = SKIPS["flash-qkv"]


@pytest.mark.parametrize("convention", NEW)
def test_the_libraries_twin_passes_every_case_it_can_express(convention, targets, capsys, tmp_path):
    code, out, rep = check(capsys, tmp_path, f"{targets}:{GOOD[convention]}", convention)
    s = rep["summary"]
    assert code == 0 and s["failed"] == s["errors"] == s["timeouts"] == 0, out
    assert s["passed"] == s["ran"] >= 25
    assert s["passed"] + s["skipped"] == len(rep["cases"])
    for reason in rep["skipped"]:
        assert any(r in reason for r in SKIPS[convention]), reason
    ran = [n for n, r in results(rep).items() if r == "ok"]
    families = {n.split("-")[0] for n in ran}
    where = {
        "flash-qkv": {"bshd", "bhsd"},
        "flash-qkv-gqa": {"bshd", "bhsd"},
        "te-cp": {"bshd", "bhsd", "thd"},
    }
    assert families == where.get(convention, {"bshd", "bhsd", "thd"})
    if convention == "te":
        assert {n.split(",")[0] for n in notes(rep)} == {"bshd", "sbhd", "thd"}
    if convention == "te-cp":
        assert all("cp_size=2" in n for n in notes(rep))
    if convention == "flash-qkv-gqa":  # 4 heads: 6 query heads (2 of them keys), 2 key heads
        assert any("num_heads_q=6, num_heads_k=2" in n for n in notes(rep))


def test_twins_pass_on_torch_in_every_dtype_strictly(targets, capsys, tmp_path):
    # bfloat16/float16 need torch; --strict: only the exact class passes (TE's float64
    # angles are exact angles reduced to [-pi, pi], so even float64 cases are exact)
    names = [
        D_PERSEQ.replace("float32", "float16"),
        D_PERSEQ.replace("float32", "bfloat16"),
        T_ARANGE.replace("float32", "float64"),
    ]
    for convention in NEW:
        code, out, rep = check(
            capsys,
            tmp_path,
            f"{targets}:{GOOD[convention]}",
            convention,
            "--backend",
            "torch",
            "--strict",
            "--cases",
            *names,
        )
        s = rep["summary"]
        assert code == 0 and s["passed"] == s["ran"] >= 1, (convention, out)


def test_flashinfer_passes_rope_scale_for_a_linear_schedule(targets, capsys, tmp_path):
    # Gemma 3's global layers: linear schedule of factor 8 (rope_scale=8)
    names = [
        f"bshd-b2-s16-h4-d256-preset=gemma-3-global-pos={f}-float32" for f in ("arange", "large")
    ]
    code, out, rep = check(capsys, tmp_path, f"{targets}:fi_good", "flashinfer", "--cases", *names)
    assert code == 0 and rep["summary"]["passed"] == 2, out
    code, out, rep = check(
        capsys, tmp_path, f"{targets}:fi_no_scale", "flashinfer", "--cases", *names
    )
    assert code == 1 and rep["summary"]["passed"] == 0 and rep["summary"]["ran"] == 2, out


# ---------------------------------------------------------------------------- (b) bugs fail
BUGS = [
    # convention, target, cases (two each, both sensitive to the bug), what the report says
    ("flash-qkv", "fq_layout", [D_PERSEQ, D_OFFSET], "FAIL"),
    ("flash-qkv", "fq_off_by_one", [D_PERSEQ, D_OFFSET], "FAIL"),
    ("flash-qkv", "fq_rotates_v", [D_PERSEQ, D_OFFSET], "v (qkv[:, :, 2]) was changed"),
    ("flash-qkv", "fq_k_swapped", [D_PERSEQ, D_OFFSET], "FAIL k"),
    ("flash-qkv-gqa", "fq_layout", [D_PERSEQ, D_OFFSET], "FAIL"),
    ("flash-qkv-gqa", "fq_off_by_one", [D_PERSEQ, D_OFFSET], "FAIL"),
    ("flash-qkv-gqa", "fq_rotates_v", [D_PERSEQ, D_OFFSET], "heads) was changed"),
    ("flash-qkv-gqa", "fq_k_swapped", [D_PERSEQ, D_OFFSET], "FAIL k"),
    ("flash-qkv-gqa", "fq_gqa_only_q", [D_PERSEQ, D_OFFSET], "FAIL k"),
    ("flashinfer", "fi_layout", [D_PERSEQ, T_PERSEQ], "FAIL"),
    ("flashinfer", "fi_off_by_one", [D_OFFSET, T_ARANGE], "FAIL"),
    ("flashinfer", "fi_wrong_base", [D_PERSEQ, T_ARANGE], "FAIL"),
    ("flashinfer", "fi_first_offset", [D_PERSEQ, T_PERSEQ], "FAIL"),
    ("flashinfer", "fi_k_swapped", [D_PERSEQ, T_PERSEQ], "FAIL k"),
    ("flashinfer-pos-ids", "fip_layout", [D_PERSEQ, T_RANDOM], "FAIL"),
    ("flashinfer-pos-ids", "fip_off_by_one", [D_OFFSET, T_RANDOM], "FAIL"),
    ("flashinfer-pos-ids", "fip_wrong_base", [D_LARGE, T_RANDOM], "FAIL"),
    ("flashinfer-pos-ids", "fip_k_swapped", [D_PERSEQ, T_RANDOM], "FAIL k"),
    ("te", "te_layout", [S_ARANGE, T_PERSEQ], "FAIL"),
    ("te", "te_off_by_one", [D_ARANGE, T_PERSEQ], "FAIL"),
    ("te", "te_swapped", [D_PERSEQ, T_ARANGE], "FAIL"),
    ("te", "te_no_start_positions", [D_PERSEQ, T_PERSEQ], "FAIL"),
    ("te", "te_thd_one_sequence", [T_ARANGE, T_PERSEQ], "FAIL"),
    ("te-cp", "te_layout", [S_ARANGE, T_ARANGE], "FAIL"),
    ("te-cp", "te_off_by_one", [D_ARANGE, T_ARANGE], "FAIL"),
    ("te-cp", "te_cp_contiguous", [D_ARANGE, S_ARANGE, T_ARANGE], "FAIL"),
    ("te-cp", "te_cp_rank_swapped", [S_ARANGE, T_ARANGE], "FAIL"),
    ("vllm-strided", "vs_head_stride_ignored", [D_PERSEQ, T_PERSEQ], "outside the query/key"),
    ("vllm-strided", "vs_token_stride_ignored", [D_OFFSET, T_ARANGE], "written"),
]


@pytest.mark.parametrize(
    ("convention", "target", "names", "says"), BUGS, ids=[f"{b[0]}-{b[1]}" for b in BUGS]
)
def test_injected_bug_fails_every_case(convention, target, names, says, targets, capsys, tmp_path):
    code, out, rep = check(capsys, tmp_path, f"{targets}:{target}", convention, "--cases", *names)
    s = rep["summary"]
    assert code == 1, out
    assert s["skipped"] == 0 and s["passed"] == 0 and s["ran"] == len(names), out
    assert says in out


def test_an_in_place_vllm_kernel_on_strided_views_passes(targets, capsys, tmp_path):
    code, out, rep = check(
        capsys, tmp_path, f"{targets}:vs_in_place", "vllm-strided", "--cases", *DENSE, *PACKED
    )
    assert code == 0 and rep["summary"]["passed"] == len(DENSE) + len(PACKED), out


def test_an_in_place_kernel_returning_none_is_read_back_from_the_views(targets, capsys, tmp_path):
    # vLLM's ops.rotary_embedding rotates the strided views in place and returns None
    names = [*DENSE, *PACKED]
    code, out, rep = check(
        capsys, tmp_path, f"{targets}:vs_in_place_none", "vllm-strided", "--cases", *names
    )
    assert code == 0 and rep["summary"]["passed"] == len(names), out
    # on every backend with writable arrays (a Dask slice is a new array that item
    # assignment updates: the views the target was given are read, not the buffer)
    for backend, module in (("torch", "torch"), ("dask", "dask"), ("strict", "array_api_strict")):
        if importlib.util.find_spec(module) is None:
            continue
        argv = ["--backend", backend, "--cases", D_ARANGE, T_PERSEQ]
        code, out, rep = check(
            capsys, tmp_path, f"{targets}:vs_in_place_none", "vllm-strided", *argv
        )
        assert code == 0 and rep["summary"]["passed"] == 2, (backend, out)
    # what is read back is judged: an in-place kernel of the other layout fails, diagnosed
    target = f"{targets}:vs_in_place_none_layout"
    code, out, _ = check(capsys, tmp_path, target, "vllm-strided", "--cases", D_ARANGE)
    assert code == 1 and "FAIL q,k: the other layout" in out, out


def test_none_from_a_kernel_on_immutable_arrays_says_to_return_query_and_key(
    targets, capsys, tmp_path
):
    pytest.importorskip("jax")
    for convention in ("vllm", "vllm-strided"):
        argv = ["--backend", "jax", "--cases", D_ARANGE]
        code, out, rep = check(capsys, tmp_path, f"{targets}:returns_none", convention, *argv)
        assert code == 1 and rep["summary"]["errors"] == 1
        assert (
            "the target returned None, as an in-place kernel (vLLM's ops.rotary_embedding) "
            "does, but JAX arrays are immutable: the kernel must return (query, key)"
        ) in out


def test_flash_qkv_returning_none_says_the_library_returns_qkv(targets, capsys, tmp_path):
    # flash-attn's apply_rotary_emb_qkv_ works in place and still returns qkv
    for convention in ("flash-qkv", "flash-qkv-gqa"):
        argv = ["--cases", D_ARANGE]
        code, out, _ = check(capsys, tmp_path, f"{targets}:returns_none", convention, *argv)
        assert (
            code == 1
            and (
                "the target must return qkv rotated (an array: flash-attn's apply_rotary_emb_qkv_ "
                "rotates it in place and returns it), got NoneType"
            )
            in out
        )


def test_a_te_cp_failure_shows_where_it_fails_under_its_row(targets, capsys, tmp_path):
    # rank 1 rotated with rank 0's rows: no usual mistake fits, but the rows under the case
    # say which tokens fail (bshd, 8 tokens in chunks of 2: chunks 1 and 2, tokens 2-5, are
    # rank 1's)
    code, out, _ = check(capsys, tmp_path, f"{targets}:te_cp_rank0", "te-cp", "--cases", D_ARANGE)
    lines = out.splitlines()
    (i,) = [n for n, ln in enumerate(lines) if ln.startswith(D_ARANGE)]
    assert code == 1 and "FAIL x" in lines[i]
    details = [ln for ln in lines[i + 1 :] if ln.startswith("    x: ")]
    assert "    x: failing indices along axis 1 (size 8, positions per index): 2-5 (4 of 8)" in (
        details
    ), out


def test_q_and_k_returned_swapped_is_diagnosed(targets, capsys, tmp_path):
    names = [D_ARANGE, D_PERSEQ, T_ARANGE]
    code, out, rep = check(capsys, tmp_path, f"{targets}:fi_swapped", "flashinfer", "--cases",
                           *names)  # fmt: skip
    assert code == 1 and out.count("FAIL q,k: q and k outputs swapped") == len(names), out
    for row in rep["cases"]:
        for o in ("q", "k"):
            assert row["outputs"][o]["diagnosis"][0].startswith("q and k outputs swapped")
    code, out, _ = check(capsys, tmp_path, f"{targets}:fi_returns_one", "flashinfer", "--cases",
                         D_ARANGE)  # fmt: skip
    assert code == 1 and "must return a tuple of 2 arrays (q_rope, k_rope), got ndarray" in out


# ---------------------------------------------------------------------------- (c) Unfit reasons
UNFIT = [
    ("flash-qkv", "fq_good", T_ARANGE, "takes (batch, seqlen, ...) tensors: no cu_seqlens"),
    ("flash-qkv", "fq_good", RANDOM, "takes positions offset + arange(seqlen) per sequence"),
    ("flash-qkv-gqa", "fq_good", T_PERSEQ, "no cu_seqlens (packed) cases"),
    ("flashinfer", "fi_good", RANDOM, "takes positions offsets[i] + arange(length) per request"),
    ("flashinfer", "fi_good", T_RANDOM, "takes positions offsets[i] + arange(length)"),
    (
        "flashinfer",
        "fi_good",
        "bshd-b2-s16-h4-d128-preset=llama-3.1-8b-pos=arange-float32",
        "has no frequency schedule (Llama3 cases)",
    ),
    (
        "flashinfer-pos-ids",
        "fip_good",
        "bshd-b2-s16-h4-d128-preset=qwen2-vl-7b-pos=arange-float32",
        "takes one position per token (no multi-axis",
    ),
    ("te", "te_good", T_RANDOM, "takes positions start_positions[i] + arange(length)"),
    (
        "te",
        "te_good",
        "bshd-b2-s16-h4-d128-preset=qwen2.5-7b-yarn-pos=arange-float32",
        "takes angles: no attention factor",
    ),
    ("te-cp", "te_good", D_OFFSET, "takes positions 0 .. length - 1 per sequence"),
    ("te-cp", "te_good", T_PERSEQ, "no start_positions with cp_size > 1"),
    (
        "vllm-strided",
        "vs_good",
        "bshd-b2-s16-h4-d128-preset=qwen2-vl-7b-pos=arange-float32",
        "vLLM takes one position per token",
    ),
]


@pytest.mark.parametrize(
    ("convention", "target", "name", "reason"), UNFIT, ids=[f"{u[0]}-{u[2][:12]}" for u in UNFIT]
)
def test_cases_a_convention_cannot_express_are_skipped_with_the_reason(
    convention, target, name, reason, targets, capsys, tmp_path
):
    # with one case that runs: exit 0, the other skipped (not passed), its reason shown
    code, out, rep = check(
        capsys, tmp_path, f"{targets}:{target}", convention, "--cases", name, S_ARANGE
    )
    assert code == 0, out
    assert rep["summary"]["passed"] == 1 and rep["summary"]["skipped"] == 1
    assert results(rep)[name] == "skipped"
    (why,) = rep["skipped"]
    assert why.startswith(f"{convention} convention: ") and reason in why
    assert rep["skipped"][why] == [name]
    assert reason in out and "1 passed, 0 failed, 1 skipped" in out
    # alone: nothing ran, which is a failure to check anything (exit 2), not a pass
    code, out, rep = check(capsys, tmp_path, f"{targets}:{target}", convention, "--cases", name)
    assert code == 2 and rep["summary"]["ran"] == 0 and rep["summary"]["skipped"] == 1
