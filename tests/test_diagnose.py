"""Diagnosis by fitting: each family of mistakes, injected into a kernel written here, fails
and is named (with the fraction of the error it explains) on every backend, beside the same
pipeline without the mistake, which passes."""

from __future__ import annotations

import math

import numpy as np
import pytest
from _helpers import bf16, f32, inv_freq_f32, per_pair

import rope_ref as rr
from rope_ref import scaling as S
from rope_ref.testing import assert_close, compare


def f16(a):
    return np.asarray(a, dtype=np.float16).astype(np.float32)


def pairs(rope, layout=None):
    h = rope.rotary_dim // 2
    j = np.arange(h)
    return (j, j + h) if (layout or rope.layout) == "half" else (2 * j, 2 * j + 1)


def rotate(x, c, s, rope, layout=None):
    ia, ib = pairs(rope, layout)
    y = np.array(x, dtype=np.float64, copy=True)
    xa, xb = y[..., ia].copy(), y[..., ib].copy()
    y[..., ia] = xa * c - xb * s
    y[..., ib] = xb * c + xa * s
    return y


def exact_tables(rope, pos):
    c, s = rope.cos_sin(pos)
    return np.asarray(c, dtype=np.float64), np.asarray(s, dtype=np.float64)


def kernel(
    x,
    pos,
    rope,
    *,
    formula="rounded",
    pos_round=f32,
    theta_round=f32,
    prod_round=f32,
    fast_math=False,
):
    """Angles in low precision: inv_freq by ``formula`` (then ``theta_round``), positions
    through ``pos_round``, the product through ``prod_round``; cos/sin of the float32 angle
    (``fast_math``: reduced modulo 2 pi in float32 first); the rotation in float64."""
    th = theta_round(inv_freq_f32(rope, formula, None))
    p = pos_round(f32(pos))
    ang = prod_round(per_pair(rope, p) * th)
    if fast_math:
        k = np.floor(f32(ang * np.float32(1 / (2 * math.pi))))
        ang = f32(ang - f32(k * np.float32(2 * math.pi)))
        c, s = np.cos(ang.astype(np.float64)), np.sin(ang.astype(np.float64))
        c, s = f32(c), f32(s)
    else:
        c, s = np.cos(ang), np.sin(ang)
    f = rope.attention_factor
    return rotate(x, c.astype(np.float64) * f, s.astype(np.float64) * f, rope)


def with_(rope, **kw):
    args = dict(
        base=rope.base, rotary_dim=rope.rotary_dim, layout=rope.layout, scaling=rope.scaling
    )
    args.update(kw)
    return rr.Rope(rope.head_dim, **args)


FAR = np.arange(100_000, 100_012)
PLAIN = rr.Rope(96, base=5e5)
YARN = rr.Rope(64, scaling=S.YaRN(16.0, 4096))
LLAMA3 = rr.Rope(64, base=5e5, scaling=S.Llama3(8.0, 1.0, 4.0, 8192))
PARTIAL = rr.Rope(64, rotary_dim=16)

# kind: (rope, positions, dtype under test, make(x, pos, rope, bug) -> float64, family, phrase)
#   make(..., bug=False) is the same pipeline without the mistake (it must pass)
KINDS = {
    "layout": (
        PLAIN,
        FAR,
        "float32",
        lambda x, p, r, bug: rr.apply_rope(x, p, with_(r, layout="interleaved") if bug else r),
        "layout",
        "the other layout ('interleaved' instead of 'half')",
    ),
    "permutation": (
        PLAIN,
        FAR,
        "float32",
        lambda x, p, r, bug: (
            _permuted(rr.apply_rope(x, p, r), r) if bug else rr.apply_rope(x, p, r)
        ),
        "permutation",
        "the interleave permutation",
    ),
    "shift+1": (
        PLAIN,
        FAR,
        "float32",
        lambda x, p, r, bug: rr.apply_rope(x, p + bug, r),
        "shift",
        "positions shifted by +1",
    ),
    "shift-3": (
        PLAIN,
        FAR,
        "float32",
        lambda x, p, r, bug: rr.apply_rope(x, p - 3 * bug, r),
        "shift",
        "positions shifted by -3",
    ),
    "sign": (
        PLAIN,
        FAR,
        "float32",
        lambda x, p, r, bug: rotate(x, *_signed(r, p, bug), r),
        "sign",
        "rotation by -m",
    ),
    "no-scaling": (
        LLAMA3,
        FAR,
        "float32",
        lambda x, p, r, bug: rr.apply_rope(x, p, with_(r, scaling=None) if bug else r),
        "no-scaling",
        "the frequency scaling not applied",
    ),
    "factor": (
        YARN,
        FAR,
        "float32",
        lambda x, p, r, bug: rr.apply_rope(x, p, r) / (r.attention_factor if bug else 1),
        "factor",
        "the attention factor 1.27726 missing from cos and sin",
    ),
    "swap": (
        PLAIN,
        FAR,
        "float32",
        lambda x, p, r, bug: rotate(x, *exact_tables(r, p)[:: -1 if bug else 1], r),
        "swap",
        "cos and sin swapped",
    ),
    # angles in float32: a bug in a float64 kernel, the class "lower-precision angles" in a
    # float32 one (the bug=False twin is the same kernel judged in float32)
    "f32-rounded": (
        PLAIN,
        FAR,
        "float64",
        lambda x, p, r, bug: kernel(x, p, r),
        "float32-angles",
        "angles formed in float32 (inv_freq correctly rounded",
    ),
    "f32-reciprocal": (
        PLAIN,
        FAR,
        "float64",
        lambda x, p, r, bug: kernel(x, p, r, formula="reciprocal"),
        "float32-angles",
        "angles formed in float32 (inv_freq = 1.0 / base **",
    ),
    "f32-power": (
        PLAIN,
        FAR,
        "float64",
        lambda x, p, r, bug: kernel(x, p, r, formula="power"),
        "float32-angles",
        "angles formed in float32 (inv_freq = base ** (-arange",
    ),
    "bf16-angles": (
        PLAIN,
        FAR,
        "float32",
        lambda x, p, r, bug: kernel(
            x,
            p,
            r,
            pos_round=bf16 if bug else f32,
            theta_round=bf16 if bug else f32,
            prod_round=bf16 if bug else f32,
        ),
        "bfloat16-angles",
        "angles formed in bfloat16",
    ),
    "bf16-positions": (
        PLAIN,
        np.arange(300, 3300, 250),
        "float32",
        lambda x, p, r, bug: kernel(x, p, r, pos_round=bf16 if bug else f32),
        "half-positions",
        "positions rounded to bfloat16",
    ),
    "f16-positions": (
        PLAIN,
        np.arange(3000, 6300, 275),
        "float32",
        lambda x, p, r, bug: kernel(x, p, r, pos_round=f16 if bug else f32),
        "half-positions",
        "positions rounded to float16",
    ),
    "bf16-inv-freq": (
        PLAIN,
        FAR,
        "float32",
        lambda x, p, r, bug: kernel(
            x, p, r, formula="reciprocal", theta_round=bf16 if bug else f32
        ),
        "half-inv-freq",
        "inv_freq stored in bfloat16",
    ),
    "fast-math": (
        PLAIN,
        np.arange(2_000_000, 2_000_012),
        "float64",
        lambda x, p, r, bug: kernel(x, p, r, fast_math=True),
        "fast-math",
        "fast-math sin/cos",
    ),
    "bf16-tables": (
        PLAIN,
        FAR,
        "float32",
        lambda x, p, r, bug: rotate(
            x, *(bf16(t).astype(np.float64) if bug else t for t in exact_tables(r, p)), r
        ),
        "table-dtype",
        "cos/sin tables rounded to bfloat16",
    ),
    "wrong-base": (
        PLAIN,
        FAR,
        "float32",
        lambda x, p, r, bug: rr.apply_rope(x, p, with_(r, base=1e4) if bug else r),
        "base",
        "a wrong base: 10000 instead of 500000",
    ),
    "odd-base": (
        PLAIN,
        FAR,
        "float32",
        lambda x, p, r, bug: rr.apply_rope(x, p, with_(r, base=123_456.0) if bug else r),
        "base",
        "a wrong base: 123456 instead of 500000 (estimated",
    ),
    "end-channels": (
        PARTIAL,
        FAR,
        "float32",
        lambda x, p, r, bug: _at_end(x, p, r) if bug else rr.apply_rope(x, p, r),
        "channels",
        "rotary applied to channels 48..63 instead of 0..15",
    ),
    "whole-head": (
        PARTIAL,
        FAR,
        "float32",
        lambda x, p, r, bug: rr.apply_rope(x, p, with_(r, rotary_dim=64) if bug else r),
        "channels",
        "rotary applied to the whole head",
    ),
    "yarn-beta": (
        YARN,
        FAR,
        "float32",
        lambda x, p, r, bug: rr.apply_rope(
            x, p, with_(r, scaling=S.YaRN(16.0, 4096, beta_fast=16.0)) if bug else r
        ),
        "schedule",
        "wrong YaRN parameters: beta_fast=16 instead of 32",
    ),
    "yarn-omax": (
        YARN,
        FAR,
        "float32",
        lambda x, p, r, bug: rr.apply_rope(
            x, p, with_(r, scaling=S.YaRN(16.0, 8192)) if bug else r
        ),
        "schedule",
        "original_max_position_embeddings=8192 instead of 4096",
    ),
    "llama3-low": (
        LLAMA3,
        FAR,
        "float32",
        lambda x, p, r, bug: rr.apply_rope(
            x, p, with_(r, scaling=S.Llama3(8.0, 2.0, 4.0, 8192)) if bug else r
        ),
        "schedule",
        "wrong Llama3 parameters: low_freq_factor=2 instead of 1",
    ),
    "linear-factor": (
        rr.Rope(64, scaling=S.Linear(4.0)),
        FAR,
        "float32",
        lambda x, p, r, bug: rr.apply_rope(x, p, with_(r, scaling=S.Linear(2.0)) if bug else r),
        "schedule",
        "wrong Linear parameters: factor=2 instead of 4",
    ),
}


def _permuted(y, rope):
    ia, ib = pairs(rope)
    oa, ob = pairs(rope, "interleaved" if rope.layout == "half" else "half")
    out = y.copy()
    out[..., oa], out[..., ob] = y[..., ia], y[..., ib]
    return out


def _signed(rope, p, bug):
    c, s = exact_tables(rope, p)
    return c, (-s if bug else s)


def _at_end(x, p, rope):
    r = rope.rotary_dim
    y = np.array(x, dtype=np.float64, copy=True)
    y[..., -r:] = rr.apply_rope(x[..., -r:], p, rr.Rope(r, base=rope.base))
    return y


@pytest.mark.parametrize("kind", list(KINDS))
def test_each_family_fails_and_is_named(bk, kind):
    rope, pos, dtype, make, family, phrase = KINDS[kind]
    if dtype not in bk.dtypes:
        pytest.skip(f"{bk.name} has no {dtype}")
    x = np.random.default_rng(7).standard_normal((pos.size, rope.head_dim))
    xb, pb = bk.from_numpy(x, dtype), bk.from_numpy(pos)
    x_used = bk.to_numpy(xb).astype(np.float64)
    want = rr.apply_rope(xb, pb, rope)
    wrong = bk.from_numpy(make(x_used, pos, rope, True), dtype)
    with pytest.raises(AssertionError) as info:
        assert_close(wrong, want, rope=rope, positions=pb, x=xb)
    report = compare(wrong, want, rope=rope, positions=pb, x=xb)
    assert not report.passed and report.accuracy_class == "fail"
    best = report.diagnosis[0]
    assert best.params["family"] == family, (kind, [h.text for h in report.diagnosis[:3]])
    assert phrase in best.name, (kind, best.name)
    assert 0.9 <= best.explained <= 1.0
    text = str(info.value)
    assert "  the data is explained by: " + best.text in text
    assert "% of the squared error" in text
    # the same pipeline without the mistake passes
    if kind.startswith(("f32-", "fast-math")):
        xf = bk.from_numpy(x, "float32") if "float32" in bk.dtypes else None
        if xf is None:
            return
        x32 = bk.to_numpy(xf).astype(np.float64)
        right = bk.from_numpy(make(x32, pos, rope, False), "float32")
        ok = compare(right, rr.apply_rope(xf, pb, rope), rope=rope, positions=pb, x=xf)
        assert ok.passed and ok.accuracy_class == "lower-precision angles", ok.message
        # far out (fast-math case, 2e6) a one-position error hides in the float32 budget
        assert bool(ok.blind_spots) == (pos.max() > 1e6)
    else:
        right = bk.from_numpy(make(x_used, pos, rope, False), dtype)
        ok = assert_close(right, want, rope=rope, positions=pb, x=xb)
        assert ok.passed and ok.diagnosis == ()


def hf_llama_rotary(x, position_ids, base, dim, attention_scaling=1.0):
    """Hugging Face's LlamaRotaryEmbedding.forward and apply_rotary_pos_emb (transformers
    4.4x-5.x, default rope type), with torch, as written there."""
    import torch

    inv_freq = 1.0 / (
        base ** (torch.arange(0, dim, 2, dtype=torch.int64).to(dtype=torch.float) / dim)
    )
    inv_freq_expanded = inv_freq[None, :, None].float().expand(position_ids.shape[0], -1, 1)
    position_ids_expanded = position_ids[:, None, :].float()
    freqs = (inv_freq_expanded.float() @ position_ids_expanded.float()).transpose(1, 2)
    emb = torch.cat((freqs, freqs), dim=-1)
    cos = (emb.cos() * attention_scaling).to(dtype=x.dtype)
    sin = (emb.sin() * attention_scaling).to(dtype=x.dtype)
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # (batch, 1, seq, dim)

    def rotate_half(t):
        return torch.cat((-t[..., t.shape[-1] // 2 :], t[..., : t.shape[-1] // 2]), dim=-1)

    return x * cos + rotate_half(x) * sin


@pytest.mark.parametrize("dim", [128, 96])
def test_hf_llama_rotary_embedding_on_float64_is_named(dim):
    torch = pytest.importorskip("torch")
    rope = rr.Rope(dim, base=5e5)
    pos = np.arange(60_000, 60_016)
    x = torch.from_numpy(np.random.default_rng(3).standard_normal((1, 2, pos.size, dim)))
    got = hf_llama_rotary(x, torch.from_numpy(pos)[None, :], rope.base, dim)
    pt = torch.from_numpy(pos)[None, None, :]
    report = compare(got, rr.apply_rope(x, pt, rope), rope=rope, positions=pt, x=x)
    assert not report.passed
    best = report.diagnosis[0]
    assert best.params == {"family": "float32-angles", "formula": "reciprocal"}, best.text
    assert "Hugging Face" in best.text and "matmul" in best.text and best.explained > 0.99
    # the same code on float32 inputs: within the float32 angle budget
    x32 = x.float()
    got32 = hf_llama_rotary(x32, torch.from_numpy(pos)[None, :], rope.base, dim)
    ok = assert_close(got32, rr.apply_rope(x32, pt, rope), rope=rope, positions=pt, x=x32)
    assert ok.accuracy_class == "lower-precision angles"


@pytest.mark.slow
def test_transformers_llama_rotary_embedding_on_float64_is_named():
    torch = pytest.importorskip("torch")
    llama = pytest.importorskip("transformers.models.llama.modeling_llama")
    from transformers import LlamaConfig

    cfg = LlamaConfig(
        hidden_size=256, num_attention_heads=2, rope_theta=500_000.0, max_position_embeddings=131072
    )
    emb = llama.LlamaRotaryEmbedding(cfg)
    rope = rr.Rope.from_hf_config(cfg.to_dict())
    pos = torch.arange(70_000, 70_016)[None, :]
    x = torch.from_numpy(np.random.default_rng(4).standard_normal((1, 2, 16, 128)))
    cos, sin = emb(x, pos)
    got, _ = llama.apply_rotary_pos_emb(x, x, cos, sin)
    report = compare(
        got, rr.apply_rope(x, pos[:, None, :], rope), rope=rope, positions=pos[:, None, :], x=x
    )
    assert not report.passed
    assert report.diagnosis[0].params.get("formula") == "reciprocal", report.message


def test_diagnosis_runs_only_on_failure_and_needs_x():
    rope = PLAIN
    x = np.random.default_rng(0).standard_normal((12, 96))
    want = rr.apply_rope(x, FAR, rope)
    assert compare(want, want, rope=rope, positions=FAR, x=x).diagnosis == ()
    wrong = rr.apply_rope(x, FAR + 1, rope)
    no_x = compare(wrong, want, rope=rope, positions=FAR)
    assert no_x.diagnosis == () and "explained" not in no_x.message
    noisy = want.copy()
    noisy.reshape(-1)[::100] += 1e-3
    r = compare(noisy, want, rope=rope, positions=FAR, x=x)
    assert r.message.endswith("none of the usual mistakes explains the data")
    assert all(h.explained < 0.9 for h in r.diagnosis)


def test_indistinguishable_formulas_are_said_to_be():
    # head_dim 64, base 10 000: 1/base**(j/32) and base**(-j/32) round to the same float32
    # values for some pairs only; where the whole inv_freq agrees the texts say so
    rope = rr.Rope(64)
    pos = np.arange(100_000, 100_012)
    x = np.random.default_rng(1).standard_normal((12, 64))
    th_r, th_p = inv_freq_f32(rope, "reciprocal", None), inv_freq_f32(rope, "power", None)
    got = kernel(x, pos, rope, formula="reciprocal")
    report = compare(got, rr.apply_rope(x, pos, rope), rope=rope, positions=pos, x=x)
    best = report.diagnosis[0]
    assert best.params["family"] == "float32-angles"
    if np.array_equal(th_r, th_p):
        assert "indistinguishable here from" in best.text
    else:
        assert best.params["formula"] == "reciprocal"


def test_multi_axis_failure_has_a_message_and_a_diagnosis():
    rope = rr.Rope(64, scaling=S.MRope((8, 12, 12)))
    t = np.arange(16)
    pos = np.stack([t, t // 4, t % 4])
    x = np.random.default_rng(2).standard_normal((16, 64))
    want = rr.apply_rope(x, pos, rope)
    with pytest.raises(AssertionError) as info:
        assert_close(rr.apply_rope(x, pos + 1, rope), want, rope=rope, positions=pos, x=x)
    text = str(info.value)
    assert "positions (" in text and "per axis" in text
    assert "the data is explained by: positions shifted by +1" in text


def test_xpos_role_swapped_is_named():
    rope = rr.Rope(32, scaling=S.XPos())
    pos = np.arange(200, 212)
    x = np.random.default_rng(5).standard_normal((12, 32))
    want = rr.apply_rope(x, pos, rope, role="key")
    # a kernel that scales keys like queries: zeta ** (+m / 512) instead of ** (-m / 512)
    d = rope.rotary_dim
    zeta = (np.arange(0, d, 2) / d + 0.4) / 1.4
    c, s = exact_tables(rr.Rope(32), pos)
    mag = zeta[None, :] ** (pos[:, None] / 512)
    wrong = rotate(x, c * mag, s * mag, rope)
    r = compare(wrong, want, rope=rope, positions=pos, x=x, role="key")
    assert not r.passed and r.diagnosis[0].params == {"family": "role", "role": "query"}
    right = rotate(x, c / mag, s / mag, rope)
    assert compare(right, want, rope=rope, positions=pos, x=x, role="key").passed


def test_legacy_diagnose_returns_the_explaining_texts():
    from rope_ref.testing._assert import diagnose

    x = np.random.default_rng(6).standard_normal((12, 96))
    found = diagnose(rr.apply_rope(x, FAR - 1, PLAIN), x, FAR, PLAIN, rtol=0, atol=0, error=1)
    assert found and found[0].startswith("positions shifted by -1 (explains")
    assert diagnose(rr.apply_rope(x, FAR, PLAIN), x, FAR, PLAIN) == []


def test_large_outputs_are_diagnosed_on_a_sample_of_tokens(monkeypatch):
    import rope_ref.testing._diagnose as dg

    monkeypatch.setattr(dg, "LIMIT", 2**10)  # force the sampled path on a small case
    rope = rr.Rope(32, scaling=S.MRope((4, 6, 6)))
    t = np.arange(64)
    pos = np.stack([t, t // 8, t % 8])
    x = np.random.default_rng(9).standard_normal((2, 64, 32))
    want = rr.apply_rope(x, pos, rope)
    r = compare(rr.apply_rope(x, pos - 1, rope), want, rope=rope, positions=pos, x=x)
    assert r.diagnosis[0].name == "positions shifted by -1" and r.diagnosis[0].explained > 0.99


def _named(got, want, pos, x, rope):
    r = compare(got.astype(np.float32), want.astype(np.float32), rope=rope, positions=pos, x=x)
    assert not r.passed
    best = r.diagnosis[0]
    assert best.explained > 0.99, r.message
    return best


def test_common_pipeline_bugs_are_named():
    # the most common real bugs, each simulated by an independent route (apply_rope with the
    # buggy positions or width), named, with the fitted parameter
    rng = np.random.default_rng(0)
    rope = rr.Rope(128)
    x = rng.standard_normal((2, 4, 64, 128)).astype(np.float32)
    xd = x.astype(np.float64)
    pos = np.arange(1000, 1064)
    want = rr.apply_rope(xd, pos, rope)
    best = _named(xd, want, pos, x, rope)  # no rotation at all
    assert best.name.startswith("rotation not applied")
    best = _named(rr.apply_rope(xd, pos - 1000, rope), want, pos, x, rope)  # KV offset dropped
    assert best.name == "positions offset by a constant -1000"
    assert best.params["offset"] == -1000
    best = _named(rr.apply_rope(want, pos, rope), want, pos, x, rope)  # rotated twice
    assert best.name.startswith("positions scaled by 2") and best.params["scale"] == 2.0
    half = rr.apply_rope(xd, pos, rr.Rope(128, rotary_dim=64))  # wrong rotary_dim
    best = _named(half, want, pos, x, rope)
    assert best.name.startswith("rotary on the first 64 channels only")
    # batch 0's positions used for every sequence of a (batch, 1, seq) position array
    pb = np.stack([np.arange(64) + 1000, np.arange(64) + 37])[:, None, :]
    want_b = rr.apply_rope(xd, pb, rope)
    best = _named(rr.apply_rope(xd, pb[:1], rope), want_b, pb, x, rope)
    assert best.name.startswith("one batch's positions used for all")
    assert best.params["batch"] == 0


def test_hypothesis_texts_do_not_repeat_themselves():
    # a bug in one head only: partial hypotheses, two inv_freq formulas with the same text
    rng = np.random.default_rng(0)
    rope = rr.Rope(128)
    pos = np.arange(200, 264)
    x = rng.standard_normal((2, 4, 64, 128)).astype(np.float32)
    want = rr.apply_rope(x.astype(np.float64), pos, rope).astype(np.float32)
    got = want.copy()
    got[:, 2] = rr.apply_rope(x[:, 2].astype(np.float64), pos + 1, rope).astype(np.float32)
    r = compare(got, want, rope=rope, positions=pos, x=x)
    assert not r.passed and r.diagnosis
    for h in r.diagnosis:
        if "(indistinguishable here from: " in h.text:
            first, rest = h.text.split(" (indistinguishable here from: ", 1)
            assert first not in rest, h.text


def test_exp_log_inv_freq_angles_are_named():
    # a float64 kernel whose angles come from the flax/T5X float32 formula, written out here
    rope = rr.Rope(96, base=7.5e5)
    pos = np.arange(2**20, 2**20 + 16)
    x = np.random.default_rng(9).standard_normal((16, 96))
    b = np.float32(7.5e5)
    inv = np.exp(
        np.arange(0, 96, 2, dtype=np.float32) * (-np.log(b) / np.float32(96)).astype(np.float32)
    ).astype(np.float32)
    ang = (pos.astype(np.float32)[:, None] * inv).astype(np.float32).astype(np.float64)
    c, s = np.cos(ang), np.sin(ang)
    got = np.concatenate([x[:, :48] * c - x[:, 48:] * s, x[:, 48:] * c + x[:, :48] * s], -1)
    r = compare(got, rr.apply_rope(x, pos, rope), rope=rope, positions=pos, x=x)
    assert not r.passed
    best = r.diagnosis[0]
    assert best.explained > 0.9 and best.params.get("formula") == "explog", r.message


# ------------------------------------------------------------------ constant factors, float8
def test_an_output_off_by_a_constant_factor_is_named_once():
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, 16, 4, 96))
    pos = np.arange(16)[None, :, None]
    y = rr.apply_rope(x, pos, PLAIN)
    r = compare(y * 1.25, y, rope=PLAIN, positions=pos, x=x)
    assert not r.passed
    full = [h for h in r.diagnosis if h.explained >= 0.9]
    assert full and full[0].name.startswith("the output off by a constant factor 1.25")
    assert full[0].params["family"] == "constant-factor"
    # an attention factor applied twice is a constant factor too: named by its own family,
    # not twice
    x = x[..., :64]
    yy = rr.apply_rope(x, pos, YARN)
    r = compare(yy * YARN.attention_factor, yy, rope=YARN, positions=pos, x=x)
    names = [h.name for h in r.diagnosis]
    assert any("applied twice" in n for n in names), names
    assert not any("constant factor" in n for n in names), names


def _fp8_kernels(x, pos, rope, s, ml):
    """float32 rotation, then the float8 mistakes (e4m3fn, saturating)."""
    f32_ = np.float32

    def q(v, div):
        return np.clip(np.asarray(v, dtype=f32_) / f32_(div), -448, 448).astype(ml.float8_e4m3fn)

    y32 = rr.apply_rope(x.astype(f32_), pos, rope)
    yield "ok", q(y32, s), None
    yield "x1.25", q(y32, 1.25 * s), "the scale off by a factor 1.25"
    yield "twice", q(y32 / f32_(s), s), "the scale applied twice"
    yield "multiplied", q(y32 * f32_(s) * f32_(s), s), "y * scale, not y / scale"
    x8 = q(x, s).astype(np.float64) * s
    yield "quantize first", q(rr.apply_rope(x8, pos, rope), s), "quantized before the rotation"


def test_float8_scale_mistakes_are_diagnosed():
    ml = pytest.importorskip("ml_dtypes")
    rng = np.random.default_rng(12)
    x = rng.standard_normal((2, 16, 4, 96))
    pos = np.arange(16)[None, :, None]
    y = rr.apply_rope(x, pos, PLAIN)
    s = float(np.float32(np.quantile(np.abs(y), 0.98) / 448))  # ~2% saturate
    for label, q, want in _fp8_kernels(x, pos, PLAIN, s, ml):
        r = compare(q, y, scale=s, rope=PLAIN, positions=pos, x=x)
        if want is None:
            assert r.passed, r.message
            continue
        assert not r.passed, label
        full = [h.text for h in r.diagnosis if h.explained >= 0.9]
        assert full and want in full[0], (label, full, r.message[-600:])
    # the user passing a multiplier scale (flashinfer's quant_scale): the kernel computes
    # y * m, and scale=m is given; the diagnosis says to pass 1/m
    m = 1 / s
    codes = np.clip(np.asarray(y, dtype=np.float32) * np.float32(m), -448, 448)
    r = compare(codes.astype(ml.float8_e4m3fn), y, scale=m, rope=PLAIN, positions=pos, x=x)
    assert not r.passed and "pass scale=1/quant_scale" in r.message


def test_inverted_linear_factor_and_estimated_position_scale_are_named():
    # flashinfer's rope_scale read as a multiplier (pos * f instead of pos / f) turns every
    # pair f**2 times too fast relative to the reference; a kernel scaling positions by an
    # arbitrary factor (1.5 here) is named with the factor estimated from the phase slopes
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 4, 32, 64))
    pos = np.arange(32)
    lin = rr.Rope(64, scaling=S.Linear(4.0))
    want = rr.apply_rope(x, pos, lin)
    best = _named(rr.apply_rope(x, pos * 16, lin), want, pos, x, lin)
    assert best.name.startswith("the Linear factor inverted") and best.params["scale"] == 16.0
    plain = rr.Rope(64)
    want = rr.apply_rope(x, pos, plain)
    best = _named(rr.apply_rope(x, pos * 1.5, plain), want, pos, x, plain)
    assert best.name.startswith("positions scaled by 1.5") and best.params["scale"] == 1.5


def test_a_lone_nan_is_named_and_not_fitted():
    # one NaN in an otherwise exact output: the message names it, and no family is fitted to
    # the finite elements' rounding noise
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 8, 4, 64)).astype(np.float32)
    pos = np.arange(8)[None, :, None]
    rope = rr.Rope(64)
    want = rr.apply_rope(x.astype(np.float64), pos, rope).astype(np.float32)
    got = want.copy()
    got[1, 2, 3, 5] = np.nan
    rep = compare(got, want, rope=rope, positions=pos, x=x)
    assert not rep.passed and rep.diagnosis == ()
    assert "  1 NaN element where desired is finite (the first at (1, 2, 3, 5))" in rep.message
    assert "only non-finite elements fail" in rep.message
