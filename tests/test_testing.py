"""rope_ref.testing.assert_close: passes on right data, and every check fails on wrong data
(with each common RoPE mistake diagnosed), on every backend."""

from __future__ import annotations

import numpy as np
import pytest

import rope_ref as rr
from rope_ref import scaling as S
from rope_ref.testing import assert_close, default_tolerance

POS = np.arange(100_000, 100_012)


def setup(bk, rope, dtype="float32", pos=POS, seed=0):
    x = np.random.default_rng(seed).standard_normal((2, pos.size, rope.head_dim))
    xb = bk.from_numpy(x, dtype)
    pb = bk.from_numpy(pos)
    return xb, pb, rr.apply_rope(xb, pb, rope)


def test_passes_on_the_reference_and_on_a_float32_kernel(bk):
    if "float32" not in bk.dtypes:
        pytest.skip(f"{bk.name} has no float32")
    rope = rr.Rope(64, base=5e5)
    xb, pb, want = setup(bk, rope)
    assert_close(want, want, rope=rope, positions=pb)
    # an honest float32 kernel: angles in float32 (HF-style); within the default model
    x = bk.to_numpy(xb).astype(np.float32)
    ang = POS.astype(np.float32)[:, None] * rope.inv_freq(dtype=np.float32)
    c, s = np.cos(ang), np.sin(ang)
    h = 32
    mine = np.concatenate([x[..., :h] * c - x[..., h:] * s, x[..., h:] * c + x[..., :h] * s], -1)
    assert_close(bk.from_numpy(mine, "float32"), want, rope=rope, positions=pb)


def test_structure_checks_fail(bk):
    rope = rr.Rope(16)
    _xb, _pb, want = setup(bk, rope, dtype="float64")
    with pytest.raises(AssertionError, match="shapes differ"):
        assert_close(want[:1, ...], want)
    if "float32" in bk.dtypes:
        with pytest.raises(AssertionError, match="dtypes differ"):
            assert_close(bk.xp.astype(want, bk.xp.float32), want)
    other = np.asarray(bk.to_numpy(want))
    if bk.library != "NumPy":  # declared library: NumPy arrays share a namespace
        with pytest.raises(AssertionError, match="namespaces differ"):
            assert_close(other, want)
    with pytest.raises(ValueError, match="rtol and atol together"):
        assert_close(want, want, rtol=1e-3)


def test_device_check_fails():
    torch = pytest.importorskip("torch")
    a = torch.zeros(3, device="meta")
    with pytest.raises(AssertionError, match="devices differ"):
        assert_close(a, torch.zeros(3))


def test_value_failure_message(bk):
    rope = rr.Rope(32, base=1e4)
    _xb, pb, want = setup(bk, rope, dtype="float64")
    wrong = bk.to_numpy(want).copy()
    wrong[1, 7, 20] += 1e-3
    with pytest.raises(AssertionError) as info:
        assert_close(bk.from_numpy(wrong), want, rope=rope, positions=pb)
    text = str(info.value)
    assert "1 of 768 elements exceed" in text
    assert "worst at index (1, 7, 20)" in text
    assert f"position {POS[7]}" in text and "rotary pair 4 (channel 20, half layout)" in text
    assert "ulp of float64" in text and "abs error 1.000e-03" in text
    assert "|position| in [65536, 1048576)" in text


MISTAKES = {
    "layout": (rr.Rope(64, base=5e5), "the other layout"),
    "shift": (rr.Rope(64, base=5e5), "positions shifted by +1"),
    "sign": (rr.Rope(64, base=5e5), "rotation by -m"),
    "scaling": (
        rr.Rope(64, base=5e5, scaling=S.Llama3(8.0, 1.0, 4.0, 8192)),
        "frequency scaling not applied",
    ),
    "factor": (rr.Rope(64, scaling=S.YaRN(16.0, 4096)), "attention factor 1.27726 missing"),
    "swap": (rr.Rope(64), "cos and sin swapped"),
    "bf16-angles": (rr.Rope(64, base=5e5), "angles formed in bfloat16"),
    "f32-angles": (rr.Rope(64, base=5e5), "angles formed in float32"),
}


def _wrong(kind, rope, x, pos):
    plain = rr.Rope(rope.head_dim, base=rope.base, rotary_dim=rope.rotary_dim, layout=rope.layout)
    if kind == "layout":
        return rr.apply_rope(x, pos, rr.Rope(64, base=5e5, layout="interleaved"))
    if kind == "shift":
        return rr.apply_rope(x, pos + 1, rope)
    if kind == "sign":
        return rr.apply_rope(x, -pos, rope)
    if kind == "scaling":
        return rr.apply_rope(x, pos, plain)
    if kind == "factor":
        return rr.apply_rope(x, pos, rope) / rope.attention_factor
    cos, sin = rope.cos_sin(pos)
    if kind == "swap":
        cos, sin = sin, cos
    if kind in ("bf16-angles", "f32-angles"):
        from rope_ref.testing._assert import _bf16

        r = _bf16 if kind == "bf16-angles" else (lambda a: np.asarray(a, np.float32))
        ang = r(r(pos.astype(np.float32))[:, None] * r(rope.inv_freq(dtype=np.float32)))
        cos, sin = np.cos(ang).astype(np.float64), np.sin(ang).astype(np.float64)
    h = rope.rotary_dim // 2
    return np.concatenate(
        [x[..., :h] * cos - x[..., h:] * sin, x[..., h:] * cos + x[..., :h] * sin], -1
    )


@pytest.mark.parametrize("kind", list(MISTAKES))
def test_each_mistake_fails_and_is_diagnosed(bk, kind):
    rope, phrase = MISTAKES[kind]
    dtype = (
        "float64" if kind == "f32-angles" else ("float32" if "float32" in bk.dtypes else "float64")
    )
    pos = np.arange(2**20, 2**20 + 12) if kind.endswith("angles") else POS
    xb, pb, want = setup(bk, rope, dtype=dtype, pos=pos)
    x = bk.to_numpy(xb).astype(np.float64)
    wrong = bk.from_numpy(_wrong(kind, rope, x, pos), dtype)
    with pytest.raises(AssertionError) as info:
        assert_close(wrong, want, rope=rope, positions=pb, x=xb)
    assert "the data is explained by: " in str(info.value)
    assert phrase in str(info.value).split("the data is explained by: ")[1], str(info.value)


def test_default_tolerance_model():
    rope = rr.Rope(128, base=1e4)
    rtol, atol = default_tolerance("float32", rope=rope, positions=np.array([0, 2**17]))
    theta1 = rope.inv_freq()[1]
    assert rtol == 8 * 2.0**-24
    assert atol == pytest.approx(2 * 2**17 * theta1 * 2.0**-24 + 8 * 2.0**-24)
    assert default_tolerance("bfloat16") == (8 * 2.0**-8, 8 * 2.0**-8)
    with pytest.raises(TypeError, match="real floating"):
        default_tolerance("int32")
