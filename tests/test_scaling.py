"""Every schedule against numbers computed independently of its implementation.

Independent routes: mpmath formulas written from the papers / HF code, a float64 NumPy
transcription of Hugging Face's algorithm, and published worked numbers (the scaling pages of
docs/scaling/, which give their sources), each cited where used.
"""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
from _helpers import ulps

import rope_ref as rr
from rope_ref import scaling as S

mpmath.mp.prec = 300


def mp_theta(base, d, j):
    return mpmath.mpf(base) ** (mpmath.mpf(-2 * j) / d)


def assert_inv_freq_exact(rope, want_mp, seq_len=None):
    """inv_freq is the exact value correctly rounded: compare with mpmath's rounding."""
    got = rope.inv_freq(seq_len=seq_len)
    want = np.array([float(w) for w in want_mp])
    np.testing.assert_array_equal(got, want)


# ------------------------------------------------------------------------------ NTK family
@pytest.mark.parametrize("factor", [2.0, 4.0, 8.5])
def test_ntk_matches_mpmath(factor):
    d, b = 128, 1e4
    rope = rr.Rope(d, base=b, scaling=S.NTK(factor))
    b2 = mpmath.mpf(b) * mpmath.mpf(factor) ** (mpmath.mpf(d) / (d - 2))
    assert_inv_freq_exact(rope, [b2 ** (mpmath.mpf(-2 * j) / d) for j in range(d // 2)])
    inv, plain = rope.inv_freq(), rr.Rope(d, base=b).inv_freq()
    assert inv[0] == 1.0  # the highest frequency is untouched
    assert ulps(inv[-1], plain[-1] / factor) <= 1  # the lowest is interpolated like PI


def test_ntk_worked_number():
    # docs/scaling/ntk.md: d=128, b=1e4, s=4 -> b' = 40889.9
    rope = rr.Rope(128, scaling=S.NTK(4.0))
    b2 = rope.inv_freq()[1] ** (-128 / 2)
    assert abs(b2 - 40889.9) < 0.1


def test_dynamic_ntk_hf_semantics():
    d, lmax = 128, 4096
    dyn = rr.Rope(d, scaling=S.DynamicNTK(2.0, lmax))
    plain = rr.Rope(d)
    # up to the trained length the base is unchanged (never below the original)
    np.testing.assert_array_equal(dyn.inv_freq(seq_len=100), plain.inv_freq())
    np.testing.assert_array_equal(dyn.inv_freq(seq_len=lmax), plain.inv_freq())
    # docs/scaling/dynamic-ntk.md: alpha=2, length 2L -> effective s = 3, b' = 30528 (d=128)
    b2 = mpmath.mpf(1e4) * mpmath.mpf(3) ** (mpmath.mpf(d) / (d - 2))
    assert abs(b2 - 30528) < 1
    assert_inv_freq_exact(
        dyn, [b2 ** (mpmath.mpf(-2 * j) / d) for j in range(d // 2)], seq_len=2 * lmax
    )
    # without seq_len, cos_sin takes max(position) + 1
    pos = np.arange(3 * lmax - 10, 3 * lmax)
    np.testing.assert_array_equal(dyn.cos_sin(pos)[0], dyn.cos_sin(pos, seq_len=3 * lmax)[0])
    assert not np.array_equal(dyn.cos_sin(pos)[0], plain.cos_sin(pos)[0])


def test_dynamic_ntk_vllm_variant_is_static():
    d, lmax, a = 64, 2048, 4.0
    v = rr.Rope(d, scaling=S.DynamicNTK(a, lmax, variant="vllm"))
    static = rr.Rope(d, scaling=S.NTK(a * a - a + 1))  # b (a^2 - a + 1)^(d/(d-2))
    np.testing.assert_array_equal(v.inv_freq(seq_len=10), static.inv_freq())
    np.testing.assert_array_equal(v.inv_freq(), static.inv_freq())


# ------------------------------------------------------------------------------ YaRN
def hf_yarn_numpy(d, base, factor, l0, beta_fast=32, beta_slow=1, truncate=True):
    """A float64 NumPy transcription of HF _compute_yarn_parameters (independent route)."""

    def corr_dim(r):
        return (d * math.log(l0 / (r * 2 * math.pi))) / (2 * math.log(base))

    low, high = corr_dim(beta_fast), corr_dim(beta_slow)
    if truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, d - 1)
    if low == high:
        high += 0.001
    pos_freqs = base ** (np.arange(0, d, 2, dtype=np.float64) / d)
    extrap = 1.0 / pos_freqs
    interp = 1.0 / (factor * pos_freqs)
    ramp = np.clip((np.arange(d // 2, dtype=np.float64) - low) / (high - low), 0, 1)
    extrap_factor = 1 - ramp
    return interp * (1 - extrap_factor) + extrap * extrap_factor


@pytest.mark.parametrize(
    ("d", "base", "l0", "raw", "trunc"),
    [  # YaRN's correction range worked out for these sizes (docs/scaling/yarn.md)
        (64, 150000.0, 4096, (8.0928, 17.3980), (8, 18)),
        (64, 10000.0, 4096, (10.4722, 22.5134), (10, 23)),
        (128, 10000.0, 4096, (20.9445, 45.0269), (20, 46)),
        (128, 1e6, 32768, (23.5959, 39.6509), (23, 40)),
    ],
)
def test_yarn_correction_range(d, base, l0, raw, trunc):
    rope = rr.Rope(d, base=base)
    lo, hi = S.YaRN(8.0, l0, truncate=False).correction_range(rope)
    assert abs(float(lo) - raw[0]) < 1e-4 and abs(float(hi) - raw[1]) < 1e-4
    lo, hi = S.YaRN(8.0, l0).correction_range(rope)
    assert (int(lo), int(hi)) == trunc


@pytest.mark.parametrize("truncate", [True, False])
@pytest.mark.parametrize(
    ("d", "base", "factor", "l0"),
    [
        (128, 1e4, 16.0, 4096),
        (64, 1e4, 40.0, 4096),
        (128, 1e6, 4.0, 32768),
        (64, 150000.0, 32.0, 4096),
    ],
)
def test_yarn_matches_hf_transcription(d, base, factor, l0, truncate):
    rope = rr.Rope(d, base=base, scaling=S.YaRN(factor, l0, truncate=truncate))
    want = hf_yarn_numpy(d, base, factor, l0, truncate=truncate)
    # the transcription rounds pow and the blend in float64; near the ramp's end 1 - ramp
    # cancels, so it is up to ~16 ulps from exact there (the mpmath test below is exact)
    np.testing.assert_allclose(rope.inv_freq(), want, rtol=4e-15, atol=0)


@pytest.mark.parametrize("truncate", [True, False])
def test_yarn_matches_mpmath(truncate):
    d, base, s, l0 = 128, 1e4, 16.0, 4096
    rope = rr.Rope(d, base=base, scaling=S.YaRN(s, l0, truncate=truncate))

    def corr(r):
        return d * mpmath.log(l0 / (2 * mpmath.pi * r)) / (2 * mpmath.log(base))

    lo, hi = corr(32), corr(1)
    if truncate:
        lo, hi = mpmath.floor(lo), mpmath.ceil(hi)
    want = []
    for j in range(d // 2):
        rho = min(max((j - lo) / (hi - lo), 0), 1)
        t = mp_theta(base, d, j)
        want.append(t * (1 - rho) + t / s * rho)
    assert_inv_freq_exact(rope, want)


@pytest.mark.parametrize(
    ("s", "want"),
    [(4, 1.13863), (8, 1.20794), (16, 1.27726), (32, 1.34657), (40, 1.36889), (64, 1.41589)],
)
def test_yarn_attention_factor_worked_numbers(s, want):
    rope = rr.Rope(64, scaling=S.YaRN(float(s), 4096))
    assert abs(rope.attention_factor - want) < 5e-6
    assert rope.attention_factor == float(mpmath.mpf("0.1") * mpmath.log(s) + 1)


def test_yarn_deepseek_mscale():
    y = S.YaRN(40.0, 4096, mscale=1.0, mscale_all_dim=1.0)
    assert rr.Rope(64, scaling=y).attention_factor == 1.0  # g(s,1)/g(s,1)
    g = mpmath.mpf("0.1") * mpmath.log(40) + 1
    assert y.softmax_scale_multiplier() == float(g * g)
    assert abs(y.softmax_scale_multiplier() - 1.874) < 1e-3  # (0.1 ln 40 + 1)^2
    y2 = S.YaRN(40.0, 4096, mscale=0.707, mscale_all_dim=1.0)
    want = (mpmath.mpf("0.1") * mpmath.mpf(0.707) * mpmath.log(40) + 1) / g
    assert rr.Rope(64, scaling=y2).attention_factor == float(want)
    assert rr.Rope(64, scaling=S.YaRN(4.0, 4096, attention_factor=1.5)).attention_factor == 1.5


def test_yarn_paper_ramp_differs_from_code():
    # docs/scaling/yarn.md: d=128, b=1e4, L=4096, s=16: the code's theta' is up to 3.04x the
    # paper's; the paper ramp is linear in r_j = L theta_j / 2pi. (The sheet also places the
    # largest absolute gap at j=30; by hand, j=25 has 0.00678 against 0.00459 at j=30.)
    d, b, l0, s = 128, 1e4, 4096, 16.0
    code = rr.Rope(d, base=b, scaling=S.YaRN(s, l0)).inv_freq()
    paper = rr.Rope(d, base=b, scaling=S.YaRN(s, l0, ramp="ratio")).inv_freq()
    theta = rr.Rope(d, base=b).inv_freq()
    r = l0 * theta / (2 * np.pi)
    gamma = np.clip((r - 1) / (32 - 1), 0, 1)
    np.testing.assert_allclose(paper, (1 - gamma) * theta / s + gamma * theta, rtol=1e-14)
    assert abs((code / paper).max() - 3.04) < 0.01
    assert abs(np.abs(code - paper)[25] - 0.00678) < 1e-5


# ------------------------------------------------------------------------------ Llama 3
def test_llama3_bands_worked_numbers():
    # docs/scaling/llama3.md: b=5e5, d=128, L=8192, lf=1, hf=4, s=8
    rope = rr.Rope(128, base=5e5, scaling=S.Llama3(8.0, 1.0, 4.0, 8192))
    inv, theta = rope.inv_freq(), rr.Rope(128, base=5e5).inv_freq()
    np.testing.assert_array_equal(inv[:29], theta[:29])
    assert ulps(inv[35:], theta[35:] / 8).max() <= 1
    kappa = (inv[29:35] - theta[29:35] / 8) / (theta[29:35] - theta[29:35] / 8)
    np.testing.assert_allclose(kappa, [0.804, 0.593, 0.421, 0.281, 0.167, 0.075], atol=6e-4)


def test_llama3_blend_matches_mpmath():
    s, lf, hf, big_l = 32.0, 1.0, 4.0, 8192
    rope = rr.Rope(64, base=5e5, scaling=S.Llama3(s, lf, hf, big_l))
    want = []
    for j in range(32):
        t = mp_theta(5e5, 64, j)
        wave = 2 * mpmath.pi / t
        if wave < big_l / hf:
            want.append(t)
        elif wave > big_l / lf:
            want.append(t / s)
        else:
            g = (big_l / wave - lf) / (hf - lf)
            want.append((1 - g) * t / s + g * t)
    assert_inv_freq_exact(rope, want)


def test_llama4_equal_factors_no_nan():
    # Llama 4 Scout: high_freq_factor == low_freq_factor == 1: an empty middle band.
    rope = rr.Rope(128, base=5e5, scaling=S.Llama3(16.0, 1.0, 1.0, 8192))
    inv = rope.inv_freq()
    theta = rr.Rope(128, base=5e5).inv_freq()
    assert np.all(np.isfinite(inv))
    wave = 2 * np.pi / theta
    np.testing.assert_array_equal(inv[wave < 8192], theta[wave < 8192])
    assert ulps(inv[wave > 8192], theta[wave > 8192] / 16).max() <= 1
    c, s = rope.cos_sin(np.arange(0, 2**20, 4099))
    assert np.all(np.isfinite(c)) and np.all(np.isfinite(s))


# ------------------------------------------------------------------------------ LongRoPE
def test_longrope_lists_and_attention_factor():
    d = 96
    short = [1.0 + 0.01 * j for j in range(d // 2)]
    long = [1.0 + 0.5 * j for j in range(d // 2)]
    sc = S.LongRoPE(short, long, 4096, factor=32.0)
    rope = rr.Rope(d, scaling=sc)
    for seq_len, lam in ((None, short), (4096, short), (4097, long), (131072, long)):
        assert_inv_freq_exact(
            rope, [mp_theta(1e4, d, j) / mpmath.mpf(lam[j]) for j in range(d // 2)], seq_len=seq_len
        )
    # sqrt(1 + ln 32 / ln 4096) = sqrt(17/12) (docs/scaling/longrope.md: 1.1902)
    assert rope.attention_factor == float(mpmath.sqrt(mpmath.mpf(17) / 12))
    # cos_sin switches lists on max(position) + 1
    short_tab = rope.cos_sin(np.arange(4000, 4096))[0]
    long_tab = rope.cos_sin(np.arange(4000, 4097))[0][:-1]
    assert not np.array_equal(short_tab, long_tab)
    np.testing.assert_array_equal(long_tab, rope.cos_sin(np.arange(4000, 4096), seq_len=5000)[0])


# ------------------------------------------------------------------------------ Proportional
def test_proportional_zero_frequencies(bk):
    d = 16
    rope = rr.Rope(d, base=1e4, scaling=S.Proportional(partial_rotary_factor=0.25, factor=2.0))
    inv = rope.inv_freq()
    r = 2  # int(0.25 * 16 // 2)
    assert_inv_freq_exact(rope, [mp_theta(1e4, d, j) / 2 if j < r else 0 for j in range(d // 2)])
    assert np.all(inv[r:] == 0)
    x = np.random.default_rng(0).standard_normal((5, d))
    y = bk.to_numpy(rr.apply_rope(bk.from_numpy(x), bk.from_numpy(np.arange(5) * 1000), rope))
    moving = [0, 1, 8, 9]  # [0, R) and [D/2, D/2 + R) in the half layout
    still = [i for i in range(d) if i not in moving]
    np.testing.assert_array_equal(y[:, still], x[:, still])
    assert np.abs(y[1:, moving] - x[1:, moving]).max() > 0.01


# ------------------------------------------------------------------------------ xPos
def test_xpos_score_decay(bk):
    d, big_b = 16, 512.0
    rope = rr.Rope(d, layout="interleaved", scaling=S.XPos(scale_base=big_b))
    plain = rr.Rope(d, layout="interleaved")
    g = np.random.default_rng(1)
    q, k = g.standard_normal(d), g.standard_normal(d)
    m, n = 700, 300
    qx = bk.to_numpy(rr.apply_rope(bk.from_numpy(q), m, rope, role="query"))
    kx = bk.to_numpy(rr.apply_rope(bk.from_numpy(k), n, rope, role="key"))
    qp = rr.apply_rope(q, m, plain)
    kp = rr.apply_rope(k, n, plain)
    zeta = (np.arange(0, d, 2) + 0.4 * d) / (1.4 * d)  # lucidrains' formula
    want = np.sum((qp * kp).reshape(-1, 2).sum(-1) * zeta ** ((m - n) / big_b))
    assert abs(float(qx @ kx) - want) <= 1e-13 * np.linalg.norm(q) * np.linalg.norm(k)
    # queries scale up and keys down by exactly inverse factors
    cq, _ = rope.cos_sin(np.array([m]), role="query")
    ck, _ = rope.cos_sin(np.array([m]), role="key")
    c0, _ = plain.cos_sin(np.array([m]))
    np.testing.assert_allclose((cq / c0) * (ck / c0), 1.0, rtol=1e-14)
    np.testing.assert_allclose(cq / c0, zeta[None] ** (m / big_b), rtol=1e-14)


def test_xpos_centering_keeps_scores():
    rope_c = rr.Rope(8, scaling=S.XPos(center=True))
    rope_0 = rr.Rope(8, scaling=S.XPos())
    q = np.random.default_rng(2).standard_normal((40, 8))
    pos = np.arange(2000, 2040)
    s_c = rr.apply_rope(q, pos, rope_c) @ rr.apply_rope(q, pos, rope_c, role="key").T
    s_0 = rr.apply_rope(q, pos, rope_0) @ rr.apply_rope(q, pos, rope_0, role="key").T
    np.testing.assert_allclose(s_c, s_0, rtol=0, atol=1e-13 * np.abs(s_0).max())


def test_xpos_max_offset_values_and_bad_p():
    # the bound is EXP_LIMIT[p] / max_j |ln(zeta_j)| * B; the largest |ln zeta_j| is j = 0:
    # zeta_0 = gamma / (1 + gamma) = 0.4 / 1.4 (mpmath, far from an integer boundary)
    rope = rr.Rope(128, scaling=S.XPos())
    top = abs(mpmath.log(mpmath.mpf("0.4") / mpmath.mpf("1.4"))) / 512
    assert rope.scaling.max_offset(rope) == int(660 / top) == 269_739  # the docstring's value
    assert rope.scaling.max_offset(rope, 24) == int(60 / top)
    assert rope.scaling.max_offset(rope, np.int64(24)) == int(60 / top)
    for p in (32, 64, 0):
        with pytest.raises(rr.RopeValueError, match=rf"p must be one of \(53, 24\).*got {p}"):
            rope.scaling.max_offset(rope, p)
    with pytest.raises(rr.RopeTypeError, match="p must be an integer"):
        rope.scaling.max_offset(rope, 53.0)


# ------------------------------------------------------------------------------ multi-axis
def test_mrope_text_tokens_are_plain_rope(bk):
    rope = rr.Rope(128, base=1e6, scaling=S.MRope((16, 24, 24)))
    plain = rr.Rope(128, base=1e6)
    pos = np.arange(50, 70)
    x = np.random.default_rng(3).standard_normal((2, 20, 128))
    a = bk.to_numpy(rr.apply_rope(bk.from_numpy(x), bk.from_numpy(np.stack([pos] * 3)), rope))
    np.testing.assert_array_equal(a, rr.apply_rope(x, pos, plain))


@pytest.mark.parametrize("interleaved", [False, True])
def test_mrope_pairs_follow_sections(bk, interleaved):
    sections = (24, 20, 20) if interleaved else (16, 24, 24)
    rope = rr.Rope(128, base=1e6, scaling=S.MRope(sections, interleaved=interleaved))
    g = np.random.default_rng(4)
    pos3 = g.integers(0, 5000, size=(3, 2, 7))
    got = bk.to_numpy(rope.cos_sin(bk.from_numpy(pos3))[0])
    assert got.shape == (2, 7, 64)
    per_axis = [rr.Rope(128, base=1e6).cos_sin(pos3[k])[0] for k in range(3)]
    want = per_axis[0].copy()
    if interleaved:  # HF apply_interleaved_mrope: axis k takes slice(k, 3 * s_k, 3)
        for k in (1, 2):
            want[..., k : 3 * sections[k] : 3] = per_axis[k][..., k : 3 * sections[k] : 3]
    else:  # HF: split into sections, chunk i takes axis i
        bounds = np.cumsum((0, *sections))
        for k in range(3):
            want[..., bounds[k] : bounds[k + 1]] = per_axis[k][..., bounds[k] : bounds[k + 1]]
    np.testing.assert_array_equal(got, want)


def test_axial_two_d(bk):
    rope = rr.Rope(64, base=100.0, layout="interleaved", scaling=S.Axial(n_axes=2))
    g = np.random.default_rng(5)
    grid = np.stack(np.meshgrid(np.arange(4), np.arange(6), indexing="ij"), -1).reshape(-1, 2)
    c = bk.to_numpy(rope.cos_sin(bk.from_numpy(grid))[0])
    sub = rr.Rope(32, base=100.0)  # the 1-D ladder of a 32-channel head, per axis
    want = np.concatenate([sub.cos_sin(grid[:, 0])[0], sub.cos_sin(grid[:, 1])[0]], -1)
    np.testing.assert_array_equal(c, want)
    x = g.standard_normal((24, 64))
    y = bk.to_numpy(rr.apply_rope(bk.from_numpy(x), bk.from_numpy(grid), rope))
    assert y.shape == x.shape
    # relative in both axes: shifting the whole grid keeps every score
    y2 = rr.apply_rope(x, grid + np.array([7, -3]), rope)
    np.testing.assert_allclose(y @ y.T, y2 @ y2.T, rtol=0, atol=1e-11)


def test_multi_axis_position_shape_errors():
    with pytest.raises(ValueError, match="leading axis of size 3"):
        rr.Rope(128, scaling=S.MRope()).cos_sin(np.arange(5))
    with pytest.raises(ValueError, match="trailing axis of size 2"):
        rr.Rope(64, scaling=S.Axial(n_axes=2)).cos_sin(np.zeros((5, 3), dtype=int))
    with pytest.raises(ValueError, match="sum to"):
        rr.Rope(64, scaling=S.MRope((16, 24, 24)))


# ------------------------------------------------------------------------------ everywhere
SCHEDULES = [
    ("linear", rr.Rope(64, scaling=S.Linear(4.0)), None),
    ("ntk", rr.Rope(64, scaling=S.NTK(8.0)), None),
    ("dynamic", rr.Rope(64, scaling=S.DynamicNTK(2.0, 1024)), 3000),
    (
        "yarn",
        rr.Rope(64, base=1e4, scaling=S.YaRN(40.0, 4096, mscale=0.707, mscale_all_dim=1.0)),
        None,
    ),
    ("llama3", rr.Rope(64, base=5e5, scaling=S.Llama3(32.0, 1.0, 4.0, 8192)), None),
    ("longrope", rr.Rope(32, scaling=S.LongRoPE([1.1] * 16, [3.0] * 16, 4096, factor=32.0)), 5000),
    ("proportional", rr.Rope(32, scaling=S.Proportional(0.5, 2.0)), None),
    ("xpos", rr.Rope(32, layout="interleaved", scaling=S.XPos()), None),
]


@pytest.mark.parametrize(("name", "rope", "seq_len"), SCHEDULES, ids=[s[0] for s in SCHEDULES])
def test_schedules_same_bits_on_every_backend(bk, name, rope, seq_len):
    pos = np.concatenate([np.arange(8), np.array([2**20 + 3, 2**31 - 1])])
    if name == "xpos":  # zeta ** (m / 512) leaves float64's range past m ~ 2.9e5
        pos = pos % 100_003
    x = np.random.default_rng(6).standard_normal((3, pos.size, rope.head_dim))
    want = rr.apply_rope(x, pos, rope, seq_len=seq_len, role="key")
    got = rr.apply_rope(bk.from_numpy(x), bk.from_numpy(pos), rope, seq_len=seq_len, role="key")
    # no libm involved (xPos's exp included: rope_ref._exact.exp_dd): the same bits everywhere
    np.testing.assert_array_equal(bk.to_numpy(got), want)


@pytest.mark.parametrize(
    "rope",
    [
        rr.Rope(128, base=1e4, scaling=S.YaRN(16.0, 4096)),
        rr.Rope(128, base=5e5, scaling=S.Llama3(8.0, 1.0, 4.0, 8192)),
    ],
    ids=["yarn", "llama3"],
)
def test_scaled_tables_exact_at_large_positions(rope):
    # Scaled frequencies are exact too: cos/sin within 1 ulp (times the attention factor's
    # rounding) of mpmath using the same formula, at positions up to 2**31.
    pos = np.array([2**31 - 1, 2**30 + 12345, 131072, 99991])
    cos, sin = rope.cos_sin(pos)
    af = mpmath.mpf(rope.attention_factor)
    for j, t in enumerate(rope.thetas()):
        tm = mpmath.mpf(str(t))
        for i, m in enumerate(pos):
            a = int(m) * tm
            for got, ref in ((cos[i, j], mpmath.cos(a) * af), (sin[i, j], mpmath.sin(a) * af)):
                err = abs(mpmath.mpf(float(got)) - ref) / mpmath.mpf(np.spacing(abs(float(ref))))
                assert err <= 1.5, (j, int(m), float(err))
