"""The paper's q/k/v maps (eq. 1, 14) and the sinusoidal encoding (eq. 4)."""

from __future__ import annotations

import mpmath
import numpy as np

import rope_ref as rr


def test_qkv_matches_definition(bk):
    rng = np.random.default_rng(5)
    seq, d_model, head_dim, d_v = 6, 10, 8, 5
    x = rng.standard_normal((2, seq, d_model))
    wq, wk, wv = (rng.standard_normal((d_model, n)) for n in (head_dim, head_dim, d_v))
    pos = np.arange(seq) + 40
    rope = rr.Rope(head_dim, layout="interleaved")
    q, k, v = (
        bk.to_numpy(t) for t in rr.qkv(*(bk.from_numpy(a) for a in (x, pos, wq, wk, wv)), rope=rope)
    )
    # q_m = R_m W_q x_m with the matrix of eq. (15), row by row
    mats = rr.rotation_matrix(rope, pos)
    want_q = np.einsum("sij,bsj->bsi", mats, x @ wq)
    want_k = np.einsum("sij,bsj->bsi", mats, x @ wk)
    np.testing.assert_allclose(q, want_q, rtol=0, atol=1e-13)
    np.testing.assert_allclose(k, want_k, rtol=0, atol=1e-13)
    np.testing.assert_allclose(v, x @ wv, rtol=0, atol=1e-13)  # values are not rotated
    # the score depends on n - m only (eq. 16): shift every position by 1000
    q2, k2, _ = (
        bk.to_numpy(t)
        for t in rr.qkv(*(bk.from_numpy(a) for a in (x, pos + 1000, wq, wk, wv)), rope=rope)
    )
    np.testing.assert_allclose(
        q @ np.swapaxes(k, -1, -2), q2 @ np.swapaxes(k2, -1, -2), rtol=0, atol=1e-12
    )


def test_qkv_output_dtype(bk):
    if "float32" not in bk.dtypes:
        return
    rng = np.random.default_rng(6)
    args = [rng.standard_normal((4, 6)), np.arange(4)] + [rng.standard_normal((6, 4))] * 3
    arrs = [bk.from_numpy(a, "float32" if i != 1 else None) for i, a in enumerate(args)]
    q, k, v = rr.qkv(*arrs, rope=rr.Rope(4))
    assert q.dtype == k.dtype == v.dtype == bk.xp.float32


def test_sinusoidal_embedding_matches_mpmath(bk):
    mpmath.mp.prec = 200
    pos = np.array([0, 1, 5, 1000, 123456789])
    got = bk.to_numpy(rr.sinusoidal_embedding(bk.from_numpy(pos), 8))
    assert got.shape == (5, 8)
    for i, p in enumerate(pos):
        for t in range(4):
            ang = mpmath.mpf(int(p)) / mpmath.mpf(10_000) ** (mpmath.mpf(2 * t) / 8)
            assert abs(got[i, 2 * t] - float(mpmath.sin(ang))) <= np.spacing(1.0)
            assert abs(got[i, 2 * t + 1] - float(mpmath.cos(ang))) <= np.spacing(1.0)
