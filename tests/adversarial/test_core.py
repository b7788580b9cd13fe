"""Adversarial inputs to the core (Rope, cos_sin, apply routes, schedules): issue #13.

Every case gives a correct answer (checked by an independent route) or a typed error that
names the argument, what was given and what was expected.
"""

from __future__ import annotations

import numpy as np
import pytest

import rope_ref as rr
from rope_ref import scaling as sc
from rope_ref._validate import as_bool, as_int, as_real

# ---------------------------------------------------------------- uniform scalar acceptance


def _zero_d(bk, value, dtype):
    return bk.from_numpy(np.asarray(value, dtype=dtype))


@pytest.mark.parametrize(
    "value", [2.5, np.float32(2.5), np.float64(2.5), np.float16(2.5), np.array(2.5)]
)
def test_as_real_accepts_numbers_of_any_kind(value):
    assert as_real(value, "base") == 2.5
    assert as_int(np.int64(3), "n") == 3 and as_int(np.uint8(3), "n") == 3


def test_as_real_accepts_zero_d_arrays_of_every_backend(bk):
    if bk.lazy:  # a lazy 0-d array has no value yet: typed error, no hidden compute
        with pytest.raises(rr.RopeTypeError, match=r"base.*lazy or traced"):
            as_real(_zero_d(bk, 2.5, np.float64), "base")
        return
    assert as_real(_zero_d(bk, 2.5, np.float32), "base") == 2.5
    assert as_int(_zero_d(bk, 7, np.int32), "head_dim") == 7
    assert as_bool(_zero_d(bk, True, np.bool_), "causal") is True
    with pytest.raises(rr.RopeTypeError, match=r"head_dim must be an integer.*bool"):
        as_int(_zero_d(bk, True, np.bool_), "head_dim")
    with pytest.raises(rr.RopeTypeError, match=r"base must be a real number.*shape \(2,\)"):
        as_real(bk.from_numpy(np.array([1.0, 2.0])), "base")


@pytest.mark.parametrize(
    ("value", "error", "pattern"),
    [
        (True, rr.RopeTypeError, "the bool"),
        (np.bool_(False), rr.RopeTypeError, "the bool"),
        ("10000", rr.RopeTypeError, "str '10000'"),
        (1 + 2j, rr.RopeTypeError, "complex"),
        (None, rr.RopeTypeError, "NoneType"),
        (float("nan"), rr.RopeValueError, "finite, got nan"),
        (float("inf"), rr.RopeValueError, "finite, got inf"),
        (10**400, rr.RopeValueError, "too large"),
        (-1.0, rr.RopeValueError, "> 0, got -1.0"),
        (0, rr.RopeValueError, "> 0, got 0.0"),
    ],
)
def test_as_real_rejects(value, error, pattern):
    with pytest.raises(error, match=f"base must be .*{pattern}"):
        as_real(value, "base", positive=True)


@pytest.mark.parametrize("value", [True, np.bool_(True), 3.0, np.float32(3.0), "3"])
def test_as_int_rejects_bools_floats_strings(value):
    with pytest.raises(rr.RopeTypeError, match="head_dim must be an integer, got"):
        as_int(value, "head_dim")


@pytest.mark.parametrize("value", [1, 0, np.int64(1), "no", "false", None, 1.0])
def test_as_bool_rejects_non_bools(value):
    with pytest.raises(rr.RopeTypeError, match=r"causal must be a bool \(True or False\), got"):
        as_bool(value, "causal")


def test_numpy_scalars_everywhere_in_rope_and_schedules():
    plain = rr.Rope(64, base=500000.0, rotary_dim=32)
    same = rr.Rope(np.int64(64), base=np.float32(500000.0), rotary_dim=np.int32(32))
    assert same == plain and type(same.base) is float and type(same.head_dim) is int
    pairs = [
        (sc.Linear(np.float32(4.0)), sc.Linear(4.0)),
        (sc.NTK(np.float64(2.0)), sc.NTK(2.0)),
        (sc.YaRN(np.float32(4.0), np.int64(4096)), sc.YaRN(4.0, 4096)),
        (
            sc.Llama3(np.float32(8.0), np.float32(1.0), np.float32(4.0), np.int64(8192)),
            sc.Llama3(8.0, 1.0, 4.0, 8192),
        ),
        (sc.XPos(center=np.bool_(True)), sc.XPos(center=True)),
        (sc.MRope([np.int64(8), np.int64(12), np.int64(12)]), sc.MRope([8, 12, 12])),
    ]
    for given, want in pairs:
        assert given == want
        r1, r2 = rr.Rope(64, scaling=given), rr.Rope(64, scaling=want)
        assert r1.thetas(seq_len=16384) == r2.thetas(seq_len=16384)
    with pytest.raises(rr.RopeTypeError, match=r"Linear.factor must be a real number.*str"):
        sc.Linear("4")
    with pytest.raises(rr.RopeTypeError, match=r"YaRN.truncate must be a bool.*int 1"):
        sc.YaRN(4.0, 4096, truncate=1)
