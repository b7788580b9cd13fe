"""The rotation kernel (rope_ref._rotate): checked against a loop over pairs written out here.

apply_rope, its VJP and every signature twin run this kernel; their own tests compare them with
the complex and matrix routes and with ports of each library. These tests pin the kernel's
arguments on their own: offset (MLA), layout, sign (the VJP) and separate coefficients for
the second channel of each pair (Hugging Face's tables with different halves).
"""

from __future__ import annotations

import numpy as np
import pytest

from rope_ref._rotate import rotate


def by_hand(x, cos, sin, r, layout, offset, sign, cos_b, sin_b):
    y = x.copy()
    h = r // 2
    for j in range(h):
        a, b = (
            (offset + j, offset + j + h)
            if layout == "half"
            else (offset + 2 * j, offset + 2 * j + 1)
        )
        for i in range(x.shape[0]):
            c, s = cos[i, j], sign * sin[i, j]
            cb, sb = cos_b[i, j], sign * sin_b[i, j]
            y[i, a] = c * x[i, a] - s * x[i, b]
            y[i, b] = cb * x[i, b] + sb * x[i, a]
    return y


@pytest.mark.parametrize("layout", ["half", "interleaved"])
@pytest.mark.parametrize("offset", [0, 3])
@pytest.mark.parametrize("sign", [1, -1])
@pytest.mark.parametrize("halves", ["same", "different"])
def test_kernel_against_a_loop(rng, layout, offset, sign, halves):
    n, d, r = 5, 12, 6
    x = rng.standard_normal((n, d))
    cos, sin = rng.standard_normal((n, r // 2)), rng.standard_normal((n, r // 2))
    cos_b, sin_b = (cos, sin) if halves == "same" else rng.standard_normal((2, n, r // 2))
    kw = {} if halves == "same" else {"cos_b": cos_b, "sin_b": sin_b}
    got = rotate(np, x, cos, sin, rotary_dim=r, layout=layout, wd=np.float64, offset=offset,
                 sign=sign, **kw)  # fmt: skip
    np.testing.assert_array_equal(got, by_hand(x, cos, sin, r, layout, offset, sign, cos_b, sin_b))


def test_kernel_rounds_once_and_never_writes_its_input(rng):
    x = rng.standard_normal((4, 8)).astype(np.float32)
    before = x.copy()
    cos, sin = rng.standard_normal((4, 4)), rng.standard_normal((4, 4))
    got = rotate(np, x, cos, sin, rotary_dim=8, layout="half", wd=np.float64)
    assert got.dtype == np.float32
    want = by_hand(x.astype(np.float64), cos, sin, 8, "half", 0, 1, cos, sin)
    np.testing.assert_array_equal(got, want.astype(np.float32))
    np.testing.assert_array_equal(x, before)


def test_kernel_sign_must_be_plus_or_minus_one():
    with pytest.raises(ValueError, match="sign"):
        rotate(np, np.ones((1, 4)), np.ones((1, 2)), np.ones((1, 2)), rotary_dim=4,
               layout="half", wd=np.float64, sign=2)  # type: ignore[arg-type]  # fmt: skip
