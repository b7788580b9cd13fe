"""The interleaved <-> half permutation and the Meta -> Hugging Face weight conversion."""

from __future__ import annotations

import numpy as np
import pytest

import rope_ref as rr


def hf_permute(w, n_heads, dim1, dim2):
    # The reshape-level statement used by convert_llama_weights_to_hf.py: an independent route.
    return (
        w.reshape(n_heads, dim1 // n_heads // 2, 2, dim2).transpose(0, 2, 1, 3).reshape(dim1, dim2)
    )


def test_permutation_values():
    assert rr.layout_permutation(8) == (0, 2, 4, 6, 1, 3, 5, 7)
    assert rr.layout_permutation(8, src="half", dst="interleaved") == (0, 4, 1, 5, 2, 6, 3, 7)
    assert rr.layout_permutation(8, rotary_dim=4) == (0, 2, 1, 3, 4, 5, 6, 7)
    assert rr.layout_permutation(6, src="half", dst="half") == tuple(range(6))


@pytest.mark.parametrize("d", [2, 8, 64, 128])
def test_permutations_are_inverse(d):
    fwd = np.array(rr.layout_permutation(d))
    inv = np.array(rr.layout_permutation(d, src="half", dst="interleaved"))
    np.testing.assert_array_equal(fwd[inv], np.arange(d))
    np.testing.assert_array_equal(inv[fwd], np.arange(d))


def test_permute_weights_matches_hf_reshape():
    rng = np.random.default_rng(0)
    n_heads, head_dim, d_model = 4, 16, 24
    w = rng.standard_normal((n_heads * head_dim, d_model))  # nn.Linear layout (out, in)
    ours = rr.permute_weights(w, n_heads=n_heads, axis=0)
    np.testing.assert_array_equal(ours, hf_permute(w, n_heads, n_heads * head_dim, d_model))
    back = rr.permute_weights(ours, n_heads=n_heads, axis=0, src="half", dst="interleaved")
    np.testing.assert_array_equal(back, w)


def test_logits_unchanged_after_permuting_wq_wk(bk):
    # A checkpoint trained with interleaved RoPE gives the same attention logits under
    # rotate_half once W_q and W_k are permuted per head (Meta -> HF conversion). GQA: W_k
    # is permuted with the key/value head count.
    rng = np.random.default_rng(1)
    n_heads, n_kv, head_dim, d_model, seq = 4, 2, 16, 32, 9
    x = rng.standard_normal((seq, d_model))
    wq = rng.standard_normal((d_model, n_heads * head_dim))
    wk = rng.standard_normal((d_model, n_kv * head_dim))
    pos = np.arange(100, 100 + seq)
    inter = rr.Rope(head_dim, layout="interleaved", base=5e5)
    half = rr.Rope(head_dim, layout="half", base=5e5)

    def logits(wq_, wk_, rope):
        q = (x @ wq_).reshape(seq, n_heads, head_dim).transpose(1, 0, 2)
        k = (x @ wk_).reshape(seq, n_kv, head_dim).transpose(1, 0, 2)
        q = bk.to_numpy(rr.apply_rope(bk.from_numpy(q), bk.from_numpy(pos), rope))
        k = bk.to_numpy(rr.apply_rope(bk.from_numpy(k), bk.from_numpy(pos), rope))
        k = np.repeat(k, n_heads // n_kv, axis=0)
        return q @ k.transpose(0, 2, 1)

    base = logits(wq, wk, inter)
    wq_p = bk.to_numpy(rr.permute_weights(bk.from_numpy(wq), n_heads=n_heads))
    wk_p = bk.to_numpy(rr.permute_weights(bk.from_numpy(wk), n_heads=n_kv))
    conv = logits(wq_p, wk_p, half)
    scale = np.abs(base).max()
    assert np.abs(conv - base).max() <= 64 * 2.0**-52 * scale
    # Without the permutation the logits differ (the classic layout bug).
    assert np.abs(logits(wq, wk, half) - base).max() > 0.1 * scale


def test_convert_layout_roundtrip(bk):
    x = np.random.default_rng(2).standard_normal((3, 10))
    xb = bk.from_numpy(x)
    h = rr.convert_layout(xb, src="interleaved", dst="half", rotary_dim=8)
    back = rr.convert_layout(h, src="half", dst="interleaved", rotary_dim=8)
    np.testing.assert_array_equal(
        bk.to_numpy(h), x[:, list(rr.layout_permutation(10, rotary_dim=8))]
    )
    np.testing.assert_array_equal(bk.to_numpy(back), x)
