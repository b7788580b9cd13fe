"""Axis schemes (M-RoPE, axial RoPE) composed with frequency schedules: ``Rope(...,
scaling=<schedule>, axes=<scheme>)``, against constructions by hand in mpmath, the older
``scaling=<scheme>`` spelling, the error model's pair positions and Hugging Face configs."""

from __future__ import annotations

import mpmath
import numpy as np
import pytest

import rope_ref as rr
from rope_ref import scaling as S

mpmath.mp.dps = 60
EPS = 2.0**-52


def _sections_by_hand(sections, n_pairs, interleaved):
    """Axis of each pair, written from the Qwen-VL descriptions: consecutive sections
    (Qwen2/2.5-VL), or axis k >= 1 on pairs j = k mod n below n * s_k, axis 0 elsewhere
    (Qwen3-VL)."""
    n = len(sections)
    if not interleaved:
        return [k for k, s in enumerate(sections) for _ in range(s)]
    out = [0] * n_pairs
    for k in range(1, n):
        for j in range(k, min(n * sections[k], n_pairs), n):
            out[j] = k
    return out


def _rotate_mp(x, angles, factor, layout):
    """y = factor * R(angles) x for one head in mpmath, rounded to float64 at the end."""
    r = 2 * len(angles)
    y = [mpmath.mpf(float(v)) for v in x]
    out = list(y)
    for j, t in enumerate(angles):
        a, b = (j, j + r // 2) if layout == "half" else (2 * j, 2 * j + 1)
        c, s = mpmath.cos(t) * factor, mpmath.sin(t) * factor
        out[a] = c * y[a] - s * y[b]
        out[b] = c * y[b] + s * y[a]
    return np.array([float(v) for v in out])


def _bound(x, factor):
    """Each output is c x_a - s x_b from tables within an ulp: a few ulps of the terms."""
    return 6 * EPS * factor * np.abs(x).max() + 2.0**-1000


@pytest.mark.parametrize("interleaved", [False, True])
@pytest.mark.parametrize("layout", ["half", "interleaved"])
def test_mrope_with_yarn_equals_per_axis_construction(bk, interleaved, layout, rng):
    yarn = S.YaRN(4.0, original_max_position_embeddings=4096)
    sections = (6, 5, 5) if interleaved else (4, 6, 6)  # interleaved: n * s_k <= n_pairs
    rope = rr.Rope(32, base=1e6, layout=layout, scaling=yarn,
                   axes=S.MRope(sections, interleaved=interleaved))  # fmt: skip
    # the frequencies are YaRN's over the whole rotary_dim (the 1-D rope, no axes)
    plain = rr.Rope(32, base=1e6, layout=layout, scaling=yarn)
    assert rope.thetas() == plain.thetas()
    assert rope.attention_factor == plain.attention_factor > 1.0
    s = 6
    pos = np.stack([rng.integers(0, 30_000, size=s) for _ in range(3)])  # (3, seq): t, h, w
    x = rng.standard_normal((2, s, 32))
    got = bk.to_numpy(rr.apply_rope(bk.from_numpy(x), bk.from_numpy(pos), rope))
    axis_of = _sections_by_hand(sections, 16, interleaved)
    thetas = [mpmath.mpf(str(t)) for t in plain.thetas()]
    factor = mpmath.mpf(plain.attention_factor)
    for h in range(2):
        for i in range(s):
            angles = [int(pos[axis_of[j], i]) * thetas[j] for j in range(16)]
            want = _rotate_mp(x[h, i], angles, factor, layout)
            assert np.abs(got[h, i] - want).max() <= _bound(x[h, i], float(factor))
    # with equal positions on every axis (text tokens) M-RoPE is the 1-D rope
    p1 = rng.integers(0, 30_000, size=s)
    np.testing.assert_array_equal(
        rr.apply_rope(x, np.stack([p1] * 3), rope), rr.apply_rope(x, p1, plain)
    )


def test_axial_with_linear_by_hand(bk, rng):
    base, d, n, f = 100.0, 24, 3, 2.5
    rope = rr.Rope(d, base=base, scaling=S.Linear(f), axes=S.Axial(n))
    g = d // (2 * n)  # pairs per axis: a 1-D rope of d / n channels, frequencies / f
    thetas = [mpmath.power(base, mpmath.mpf(-2 * t) / (d // n)) / mpmath.mpf(f) for t in range(g)]
    inv = rope.inv_freq()
    for j in range(d // 2):
        assert inv[j] == float(thetas[j % g])  # correctly rounded from the exact value
    pos = rng.integers(-5000, 5000, size=(4, 5, n))  # trailing axis: one position per axis
    x = rng.standard_normal((4, 5, d))
    got = bk.to_numpy(rr.apply_rope(bk.from_numpy(x), bk.from_numpy(pos), rope))
    for idx in np.ndindex(4, 5):
        angles = [int(pos[idx][j // g]) * thetas[j % g] for j in range(d // 2)]
        want = _rotate_mp(x[idx], angles, mpmath.mpf(1), "half")
        assert np.abs(got[idx] - want).max() <= _bound(x[idx], 1.0)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (rr.Rope(16, scaling=S.MRope((2, 3, 3))), rr.Rope(16, axes=S.MRope((2, 3, 3)))),
        (
            rr.Rope(16, scaling=S.MRope((4, 2, 2), interleaved=True), layout="interleaved"),
            rr.Rope(16, axes=S.MRope((4, 2, 2), interleaved=True), layout="interleaved"),
        ),
        (
            rr.Rope(24, rotary_dim=16, scaling=S.Axial(2)),
            rr.Rope(24, rotary_dim=16, axes=S.Axial(2)),
        ),
        (rr.Rope(24, scaling=S.Axial(3), base=50.0), rr.Rope(24, axes=S.Axial(3), base=50.0)),
    ],
    ids=["mrope", "mrope-interleaved", "axial-partial", "axial-3"],
)
def test_old_and_new_spellings_agree(bk, old, new, rng):
    assert old.axis_scheme == new.axis_scheme and old.schedule is None and new.schedule is None
    np.testing.assert_array_equal(old.inv_freq(), new.inv_freq())
    scheme = new.axes
    shape = (scheme.n_axes, 3, 7) if scheme.axis_position == "leading" else (3, 7, scheme.n_axes)
    pos = rng.integers(-(2**35), 2**35, size=shape)
    assert old.token_shape(shape) == new.token_shape(shape) == (3, 7)
    x = bk.from_numpy(rng.standard_normal((2, 3, 7, old.head_dim)))
    p = bk.from_numpy(pos)
    for route in (rr.apply_rope, rr.apply_rope_complex, rr.apply_rope_matrix, rr.apply_rope_vjp):
        np.testing.assert_array_equal(bk.to_numpy(route(x, p, old)), bk.to_numpy(route(x, p, new)))
    for a, b in zip(old.cos_sin(pos), new.cos_sin(pos), strict=True):
        np.testing.assert_array_equal(a, b)


def test_error_model_pair_positions_with_axes(rng):
    from rope_ref.testing._error_model import pair_positions

    sections = (2, 3, 3)
    rope = rr.Rope(16, scaling=S.YaRN(8.0, original_max_position_embeddings=64),
                   axes=S.MRope(sections))  # fmt: skip
    pos = rng.integers(0, 10_000, size=(3, 5))
    pp = pair_positions(rope, pos.astype(np.float64))
    axis_of = _sections_by_hand(sections, 8, False)
    assert pp.shape == (5, 8)
    for j in range(8):
        np.testing.assert_array_equal(pp[:, j], pos[axis_of[j]])
    x = rng.standard_normal((2, 5, 16))
    y = rr.apply_rope(x, pos, rope)
    rr.testing.assert_close(y, y.copy(), rope=rope, positions=pos, x=x)
    # the temporal and height rows swapped: a different rotation, which the verdict sees
    wrong = rr.apply_rope(x, pos[[1, 0, 2]], rope)
    with pytest.raises(AssertionError):
        rr.testing.assert_close(wrong, y, rope=rope, positions=pos, x=x)


def test_axes_errors():
    with pytest.raises(rr.RopeTypeError, match=r"axes must be None or a multi-axis scheme .*YaRN"):
        rr.Rope(16, axes=S.YaRN(2.0, original_max_position_embeddings=64))
    with pytest.raises(rr.RopeValueError, match=r"pass the scheme once, as axes="):
        rr.Rope(16, scaling=S.MRope((2, 3, 3)), axes=S.MRope((2, 3, 3)))
    with pytest.raises(rr.RopeValueError, match=r"XPos.*does not compose with axes=MRope"):
        rr.Rope(16, scaling=S.XPos(), axes=S.MRope((2, 3, 3)))
    with pytest.raises(rr.RopeValueError, match=r"MRope.sections \(2, 3, 2\) sum to 7"):
        rr.Rope(16, scaling=S.Linear(2.0), axes=S.MRope((2, 3, 2)))
    with pytest.raises(rr.RopeValueError, match=r"multiple of n_axes"):
        rr.Rope(12, scaling=S.Linear(2.0), axes=S.Axial(4))
    with pytest.raises(rr.RopeValueError, match=r"leading axis of size 3"):
        rr.apply_rope(np.zeros((4, 16)), np.arange(4), rr.Rope(16, axes=S.MRope((2, 3, 3))))


def _qwen_config(rope_scaling):
    return {
        "model_type": "qwen2_5_vl", "hidden_size": 256, "num_attention_heads": 2,
        "num_key_value_heads": 2, "rope_theta": 1e6, "max_position_embeddings": 131072,
        "rope_scaling": rope_scaling,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("rope_scaling", "schedule"),
    [
        (
            {
                "type": "yarn",
                "factor": 4.0,
                "original_max_position_embeddings": 32768,
                "mrope_section": [16, 24, 24],
            },
            S.YaRN(4.0, original_max_position_embeddings=32768),
        ),
        (
            {
                "rope_type": "linear",
                "factor": 2.0,
                "mrope_section": [16, 24, 24],
                "mrope_interleaved": True,
            },
            S.Linear(2.0),
        ),
        ({"type": "dynamic", "factor": 2.0, "mrope_section": [16, 24, 24]}, None),
    ],
    ids=["yarn", "linear-interleaved", "dynamic"],
)
def test_config_mrope_with_a_schedule(rope_scaling, schedule):
    rope = rr.Rope.from_hf_config(_qwen_config(rope_scaling))
    assert rope.axes == S.MRope((16, 24, 24), interleaved=rope_scaling.get("mrope_interleaved",
                                                                           False))  # fmt: skip
    if schedule is not None:
        assert rope.scaling == schedule
    else:
        assert isinstance(rope.scaling, S.DynamicNTK) and rope.scaling.factor == 2.0
    assert "mrope_section = [16, 24, 24]" in rope.explain()
    pos = np.stack([np.arange(8), np.arange(8) // 2, np.arange(8) % 3])
    cos, sin = rope.cos_sin(pos)
    assert cos.shape == sin.shape == (8, 64) and np.all(np.isfinite(cos) & np.isfinite(sin))


def test_config_mrope_without_schedule_keeps_old_spelling():
    rope = rr.Rope.from_hf_config(_qwen_config({"type": "mrope", "mrope_section": [16, 24, 24]}))
    assert rope.scaling == S.MRope((16, 24, 24)) and rope.axes is None


def test_config_mrope_yarn_matches_transformers():
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from transformers.models.qwen2_5_vl.configuration_qwen2_5_vl import Qwen2_5_VLTextConfig
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLRotaryEmbedding

    rs = {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768,
          "mrope_section": [16, 24, 24]}  # fmt: skip
    cfg = _qwen_config(dict(rs))
    hf_cfg = Qwen2_5_VLTextConfig(**{k: v for k, v in cfg.items() if k != "model_type"})
    emb = Qwen2_5_VLRotaryEmbedding(hf_cfg)
    rope = rr.Rope.from_hf_config(cfg)
    # transformers builds inv_freq in float32: agreement to float32 rounding of each entry
    hf_inv = emb.inv_freq.double().numpy()
    assert np.all(np.abs(hf_inv - rope.inv_freq()) <= 2.0**-22 * rope.inv_freq())
    assert emb.attention_scaling == pytest.approx(rope.attention_factor, rel=1e-15)
    pos = np.stack([np.arange(40), np.arange(40) // 4, np.arange(40) % 5 + 7])
    with torch.no_grad():
        cos, sin = emb(torch.zeros(1, dtype=torch.float64), torch.from_numpy(pos)[:, None, :])
    c, s = rope.cos_sin(pos)
    # positions < 64 and float32 angles (|m theta| < 64): errors far below 1e-5
    np.testing.assert_allclose(cos[0, :, :64].numpy(), c, atol=1e-5, rtol=0)
    np.testing.assert_allclose(sin[0, :, 64:].numpy(), s, atol=1e-5, rtol=0)
    # a different section split (the only thing the axes change) is far off
    swapped = rr.Rope(rope.head_dim, base=rope.base, scaling=rope.scaling,
                      axes=S.MRope((24, 24, 16)))  # fmt: skip
    assert np.abs(swapped.cos_sin(pos)[0] - cos[0, :, :64].numpy()).max() > 0.1


def test_linear_attention_reads_the_axes_spelling(rng):
    # linear_attention slices trailing-axis positions per token: the axes= spelling too
    q = rng.standard_normal((2, 5, 16))
    pos = np.stack([np.arange(5), 3 * np.arange(5)], axis=-1)
    old = rr.linear_attention(q, q, q, rope=rr.Rope(16, scaling=S.Axial(2)), positions=pos)
    new = rr.linear_attention(q, q, q, rope=rr.Rope(16, axes=S.Axial(2)), positions=pos)
    np.testing.assert_array_equal(old, new)


def test_axes_with_rotary_offset_is_the_sliced_rope(bk, rng):
    # placement (rotary_offset) and axis scheme are independent: the placed rope equals the
    # unplaced one on its channels, the other channels pass through
    kw = {"scaling": S.YaRN(2.0, original_max_position_embeddings=64), "layout": "interleaved"}
    placed = rr.Rope(30, rotary_dim=16, rotary_offset=9, axes=S.MRope((2, 3, 3)), **kw)
    inner = rr.Rope(16, axes=S.MRope((2, 3, 3)), **kw)
    pos = rng.integers(0, 5000, size=(3, 2, 6))
    x = rng.standard_normal((2, 6, 30))
    got = bk.to_numpy(rr.apply_rope(bk.from_numpy(x), bk.from_numpy(pos), placed))
    want = x.copy()
    want[..., 9:25] = rr.apply_rope(x[..., 9:25], pos, inner)
    np.testing.assert_array_equal(got, want)


def test_attention_takes_the_axes_spelling():
    # rr.attention reads multi-axis positions for a Rope built with axes= (M-RoPE with a
    # schedule), as for the older scaling=MRope(...) spelling
    g = np.random.default_rng(3)
    q, k, v = (g.standard_normal((1, 2, 5, 16)) for _ in range(3))
    pos = np.stack([np.arange(5), np.arange(5) // 2, np.arange(5) % 3])
    new = rr.Rope(16, axes=S.MRope(sections=(2, 3, 3)))
    old = rr.Rope(16, scaling=S.MRope(sections=(2, 3, 3)))
    keep = np.tril(np.ones((5, 5), dtype=bool))
    a = rr.attention(q, k, v, rope=new, q_positions=pos, k_positions=pos, mask=keep)
    b = rr.attention(q, k, v, rope=old, q_positions=pos, k_positions=pos, mask=keep)
    np.testing.assert_array_equal(a, b)
    # and it is RoPE at work: the one-axis rope at the first axis differs
    c = rr.attention(q, k, v, rope=rr.Rope(16), q_positions=pos[0], k_positions=pos[0], mask=keep)
    assert not np.allclose(a, c)
