"""Bad input raises a typed error (a RopeError: ValueError or TypeError) naming the argument."""

from __future__ import annotations

import math

import numpy as np
import pytest

import rope_ref as rr


def _raises(kind, match):
    return pytest.raises(kind, match=match)


@pytest.mark.parametrize(
    ("kwargs", "kind", "match"),
    [
        ({"head_dim": 0}, ValueError, "head_dim"),
        ({"head_dim": -4}, ValueError, "head_dim"),
        ({"head_dim": 2.0}, TypeError, "head_dim"),
        ({"head_dim": True}, TypeError, "head_dim"),
        ({"head_dim": 7}, ValueError, "head_dim=7 is odd"),
        ({"head_dim": 8, "rotary_dim": 3}, ValueError, "rotary_dim"),
        ({"head_dim": 8, "rotary_dim": 10}, ValueError, "rotary_dim"),
        ({"head_dim": 8, "rotary_dim": 0}, ValueError, "rotary_dim"),
        ({"head_dim": 8, "rotary_dim": "4"}, TypeError, "rotary_dim"),
        ({"head_dim": 8, "base": 0.0}, ValueError, "base"),
        ({"head_dim": 8, "base": -1e4}, ValueError, "base"),
        ({"head_dim": 8, "base": math.inf}, ValueError, "base"),
        ({"head_dim": 8, "base": math.nan}, ValueError, "base"),
        ({"head_dim": 8, "base": "1e4"}, TypeError, "base"),
        ({"head_dim": 8, "layout": "neox"}, ValueError, "layout must be one of"),
        ({"head_dim": 8, "layout": 1}, TypeError, "layout"),
        ({"head_dim": 8, "scaling": 4.0}, TypeError, "scaling"),
    ],
)
def test_rope_validation(kwargs, kind, match):
    with _raises(kind, match) as info:
        rr.Rope(**kwargs)
    assert isinstance(info.value, rr.RopeError)


def test_rope_is_frozen_and_hashable():
    a = rr.Rope(64, base=5e5)
    assert a == rr.Rope(64, base=500_000, rotary_dim=64)
    assert hash(a) == hash(rr.Rope(64, base=500_000, rotary_dim=64))
    with pytest.raises(AttributeError):
        a.base = 1.0  # type: ignore[misc]


def test_bad_x(bk):
    rope = rr.Rope(8)
    pos = bk.from_numpy(np.arange(3))
    with _raises(ValueError, "last axis of size head_dim=8"):
        rr.apply_rope(bk.from_numpy(np.zeros((3, 6))), pos, rope)
    with _raises(TypeError, "x must have a real floating dtype"):
        rr.apply_rope(bk.from_numpy(np.zeros((3, 8), dtype=np.int32)), pos, rope)
    with _raises(TypeError, "x must be an array"):
        rr.apply_rope([[0.0] * 8], pos, rope)
    with _raises(TypeError, "rope must be a rope_ref.Rope"):
        rr.apply_rope(bk.from_numpy(np.zeros((3, 8))), pos, {"head_dim": 8})


def test_bad_positions(bk):
    rope = rr.Rope(8)
    x = bk.from_numpy(np.zeros((2, 3, 8)))
    cases = [
        (np.arange(4), ValueError, "does not broadcast to x.shape"),
        (np.zeros((5, 2, 3), dtype=np.int64), ValueError, "more axes than x"),
        (np.array([0.0, np.nan, 1.0]), ValueError, "finite"),
        (np.array([0.0, np.inf, 1.0]), ValueError, "finite"),
        (np.array([0, 2**53, 1], dtype=np.int64), ValueError, r"\|position\| < 2\*\*53"),
        (np.array([0.0, -(2.0**60), 1.0]), ValueError, r"\|position\| < 2\*\*53"),
    ]
    for pos, kind, match in cases:
        if bk.lazy and match in ("finite", r"\|position\| < 2\*\*53"):
            continue  # value checks need values; lazy arrays are not computed (documented)
        with _raises(kind, match):
            rr.apply_rope(x, bk.from_numpy(pos), rope)
    with _raises(TypeError, "positions must have an integer or real dtype"):
        rr.apply_rope(x, bk.from_numpy(np.array([True, False, True])), rope)
    with _raises(TypeError, "positions must have an integer or real dtype"):
        rr.apply_rope(x, bk.from_numpy(np.array([1j, 2j, 3j])), rope)
    with _raises(TypeError, "positions must be integer or real"):
        rr.apply_rope(x, True, rope)
    with _raises(TypeError, "positions must be integer or real"):
        rr.apply_rope(x, 1j, rope)
    with _raises(TypeError, "positions must be an array or a Python number"):
        rr.apply_rope(x, "3", rope)


def test_arrays_from_two_namespaces(bk):
    x = bk.from_numpy(np.zeros((3, 8)))
    if bk.library == "NumPy":  # both NumPy adapters (declared)
        import array_api_strict as other

        pos = other.asarray([0, 1, 2])
        match = "positions is an array of array_api_strict but x is an array of numpy"
    else:
        pos = np.arange(3)
        match = "positions is an array of numpy but x is an array of"
    with _raises(TypeError, match):
        rr.apply_rope(x, pos, rr.Rope(8))


def test_arrays_on_two_devices():
    torch = pytest.importorskip("torch")
    x = torch.zeros((3, 8), device="meta")
    with _raises(ValueError, "positions is on device"):
        rr.apply_rope(x, torch.arange(3), rr.Rope(8))


def test_cos_sin_and_matrix_errors(bk):
    rope = rr.Rope(8)
    with _raises(TypeError, "dtype must be a real floating dtype"):
        rope.cos_sin(bk.from_numpy(np.arange(3)), dtype=bk.xp.int64)
    with _raises(TypeError, "m must have an integer or real dtype"):
        rr.rotation_matrix(rope, bk.from_numpy(np.array([True])))
    with _raises(ValueError, "seq_len must be >= 1"):
        rope.cos_sin(bk.from_numpy(np.arange(3)), seq_len=0)
    with _raises(ValueError, "role must be one of"):
        rr.apply_rope(
            bk.from_numpy(np.zeros((3, 8))), bk.from_numpy(np.arange(3)), rope, role="value"
        )


def test_layout_function_errors():
    with _raises(ValueError, "src must be one of"):
        rr.layout_permutation(8, src="neox")
    with _raises(ValueError, "rotary_dim"):
        rr.layout_permutation(8, rotary_dim=5)
    with _raises(ValueError, "not a multiple of n_heads=3"):
        rr.permute_weights(np.zeros((4, 16)), n_heads=3)
    with _raises(ValueError, "axis=2 is out of range"):
        rr.permute_weights(np.zeros((4, 16)), n_heads=2, axis=2)


def test_qkv_errors():
    x = np.zeros((5, 12))
    w = np.zeros((12, 8))
    rope = rr.Rope(8)
    with _raises(ValueError, "w_q must have shape"):
        rr.qkv(x, np.arange(5), np.zeros((12, 6)), w, w, rope=rope)
    with _raises(ValueError, "w_v must have shape"):
        rr.qkv(x, np.arange(5), w, w, np.zeros((10, 8)), rope=rope)
    with _raises(ValueError, "dim must be even"):
        rr.sinusoidal_embedding(np.arange(3), 5)


def test_errors_are_raised_before_work(bk):
    # A bad role is reported even though the positions would also need a table build.
    x = bk.from_numpy(np.zeros((3, 8)))
    with _raises(ValueError, "role"):
        rr.apply_rope(x, bk.from_numpy(np.arange(3)), rr.Rope(8), role="q")
