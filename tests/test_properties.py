"""Property tests (hypothesis) of the rotation on every backend: the algebra of R_{Theta,m}."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import rope_ref as rr

EPS = 2.0**-52
# Each example checks four positions at once; the "thorough" profile runs ten times more.
EXAMPLES = 12 * (10 if settings.default.max_examples >= 300 else 1)
position = st.integers(min_value=-(2**45), max_value=2**45)
positions = st.lists(position, min_size=4, max_size=4).map(np.array)
ropes = st.builds(
    lambda half, d, frac, base, layout: rr.Rope(
        d, rotary_dim=max(2, (int(d * frac) // 2) * 2), base=base, layout=layout
    ),
    half=st.just(None),
    d=st.sampled_from([2, 4, 8, 10, 16, 32]),
    frac=st.sampled_from([0.25, 0.5, 1.0]),
    base=st.sampled_from([10.0, 1e4, 5e5, 1e6]),
    layout=st.sampled_from(["half", "interleaved"]),
)
seeds = st.integers(min_value=0, max_value=2**32 - 1)


@settings(max_examples=EXAMPLES)
@given(rope=ropes, m=positions, seed=seeds)
def test_norm_preserved(bk, rope, m, seed):
    x = np.random.default_rng(seed).standard_normal((4, rope.head_dim))
    y = bk.to_numpy(rr.apply_rope(bk.from_numpy(x), bk.from_numpy(m), rope))
    nx, ny = np.linalg.norm(x, axis=-1), np.linalg.norm(y, axis=-1)
    assert np.all(np.abs(ny - nx) <= 8 * EPS * nx)


@settings(max_examples=EXAMPLES)
@given(rope=ropes, m=positions, n=positions, shift=positions, seed=seeds)
def test_score_depends_only_on_offset(bk, rope, m, n, shift, seed):
    # q_m . k_n = x^T W_q^T R_(n-m) W_k x: shifting both positions leaves it unchanged.
    g = np.random.default_rng(seed)
    q, k = g.standard_normal((4, rope.head_dim)), g.standard_normal((4, rope.head_dim))
    # query i at m[i] + shift[i] and key i at n[i] + shift[i], all in one call per side
    pos_q = bk.from_numpy(np.concatenate([m, m + shift]))
    pos_k = bk.from_numpy(np.concatenate([n, n + shift]))
    qa = bk.to_numpy(rr.apply_rope(bk.from_numpy(np.concatenate([q, q])), pos_q, rope))
    kb = bk.to_numpy(rr.apply_rope(bk.from_numpy(np.concatenate([k, k])), pos_k, rope))
    s = np.sum(qa * kb, axis=-1)
    bound = 8 * rope.head_dim * EPS * np.linalg.norm(q, axis=-1) * np.linalg.norm(k, axis=-1)
    assert np.all(np.abs(s[:4] - s[4:]) <= bound)
    # ... and equals the score with the relative rotation applied to k alone (eq. 16).
    k_rel = bk.to_numpy(rr.apply_rope(bk.from_numpy(k), bk.from_numpy(n - m), rope))
    assert np.all(np.abs(s[:4] - np.sum(q * k_rel, axis=-1)) <= bound)


@settings(max_examples=EXAMPLES)
@given(rope=ropes, a=positions, b=positions)
def test_rotations_compose(bk, rope, a, b):
    # R_a R_b = R_(a+b)
    mats = bk.to_numpy(rr.rotation_matrix(rope, bk.from_numpy(np.concatenate([a, b, a + b]))))
    ra, rb, rab = mats[:4], mats[4:8], mats[8:]
    assert mats.shape == (12, rope.head_dim, rope.head_dim)
    assert np.abs(ra @ rb - rab).max() <= 6 * EPS


@settings(max_examples=EXAMPLES)
@given(rope=ropes, m=positions)
def test_inverse_is_transpose(bk, rope, m):
    # R_(-m) = R_m^T, and R_m is orthogonal.
    mats = bk.to_numpy(rr.rotation_matrix(rope, bk.from_numpy(np.concatenate([m, -m]))))
    r, r_neg = mats[:4], mats[4:]
    np.testing.assert_array_equal(r_neg, np.swapaxes(r, -1, -2))
    assert np.abs(r @ np.swapaxes(r, -1, -2) - np.eye(rope.head_dim)).max() <= 4 * EPS


@settings(max_examples=EXAMPLES)
@given(rope=ropes, m=positions, seed=seeds)
def test_half_equals_permuted_interleaved(bk, rope, m, seed):
    # RoPE_half(P x) = P RoPE_interleaved(x), bit for bit (same tables, same arithmetic).
    kw = {"base": rope.base, "rotary_dim": rope.rotary_dim}
    half = rr.Rope(rope.head_dim, layout="half", **kw)
    inter = rr.Rope(rope.head_dim, layout="interleaved", **kw)
    perm = list(rr.layout_permutation(rope.head_dim, rotary_dim=rope.rotary_dim))
    x = np.random.default_rng(seed).standard_normal((4, rope.head_dim))
    pos = bk.from_numpy(m)
    a = bk.to_numpy(rr.apply_rope(bk.from_numpy(x[:, perm]), pos, half))
    b = bk.to_numpy(rr.apply_rope(bk.from_numpy(x), pos, inter))[:, perm]
    np.testing.assert_array_equal(a, b)
