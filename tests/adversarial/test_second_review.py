"""Fixes from the second hostile review of this session's changes (each test failed before)."""

from __future__ import annotations

import numpy as np
import pytest

import rope_ref as rr
from rope_ref.testing import compare, positions_from_offsets, vllm_cos_sin_cache


def test_offsets_beyond_the_position_range_are_refused_not_wrapped():
    # 2**63 - 2 + arange(3) wrapped to -2**63 in int64; a uint64 2**64 - 2 became -2, 0
    for offsets in (2**63 - 2, np.array([2**63 - 2]), np.array([2**64 - 2], dtype=np.uint64)):
        with pytest.raises(rr.RopeValueError, match=r"offsets holds .*\|m\| < 2\*\*53"):
            positions_from_offsets(3, offsets)
    with pytest.raises(rr.RopeValueError, match="offsets holds"):
        positions_from_offsets(3, -(2**53))
    got = positions_from_offsets(3, np.array([2**53 - 10, 5]))  # in range: as before
    np.testing.assert_array_equal(got, [[2**53 - 10, 2**53 - 9, 2**53 - 8], [5, 6, 7]])


def test_deprecated_spellings_misused_are_typed_errors():
    with pytest.raises(rr.RopeTypeError, match="old spelling"):
        positions_from_offsets(3, seqlen=4, offsets=0)
    rope = rr.Rope(16)
    with pytest.raises(rr.RopeTypeError, match="multiple values for argument 'xp'"):
        vllm_cos_sin_cache(rope, 8, None, np, xp=np)
    with pytest.raises(rr.RopeTypeError, match="at most 3 positional"):
        vllm_cos_sin_cache(rope, 8, None, np, "cpu")


def test_x_without_rope_is_refused_not_ignored():
    y = np.ones((2, 16))
    with pytest.raises(rr.RopeValueError, match=r"x= .* needs rope= and positions="):
        compare(y, y, x=y)
    with pytest.raises(rr.RopeValueError, match="needs rope= and positions="):
        compare(y, y, x=y, rope=rr.Rope(16))


def test_a_layer_type_for_a_preset_without_layer_types_is_refused():
    with pytest.raises(rr.RopeValueError, match="one RoPE for every layer"):
        rr.Rope.preset("llama-3.1-8b", layer_type="bogus")
    assert rr.Rope.preset("gemma-3", layer_type="sliding_attention").base == 1e4


def test_a_fitted_factor_is_no_diagnosis_of_errors_it_does_not_explain():
    # tokens 3-7 hold unrelated values: a constant factor < 1 removes part of any error, but
    # it is not the mistake; nothing should be offered as explaining the data
    rng = np.random.default_rng(5)
    rope = rr.Rope(64)
    x = rng.standard_normal((1, 16, 4, 64))
    pos = np.arange(16)[None, :, None]
    want = rr.apply_rope(x, pos, rope).astype(np.float32)
    got = want.copy()
    got[:, 3:8] = rng.standard_normal(got[:, 3:8].shape).astype(np.float32)
    rep = compare(got, want, rope=rope, positions=pos, x=x)
    assert not rep.passed
    assert not any(h.params.get("family") == "constant-factor" for h in rep.diagnosis)
    assert not any("estimated from the per-pair phase slope" in h.text for h in rep.diagnosis)
    # a kernel that really scales its output is still named
    rep = compare(want * np.float32(0.5), want, rope=rope, positions=pos, x=x)
    assert rep.diagnosis[0].params.get("family") == "constant-factor"
    assert rep.diagnosis[0].params["factor"] == pytest.approx(0.5, rel=1e-6)


def test_case_scale_form_of_the_wrong_type_is_a_type_error():
    from rope_ref.testing import Case

    with pytest.raises(rr.RopeTypeError, match="scale_form must be a str"):
        Case(quant="float8_e4m3fn", scale_form=None)
    with pytest.raises(rr.RopeValueError, match="scale_form must be one of"):
        Case(quant="float8_e4m3fn", scale_form="max")


def test_a_device_the_library_refuses_is_a_value_error_naming_it():
    torch = pytest.importorskip("torch")
    with pytest.raises(rr.RopeValueError, match=r"device 'nope' is not a device of .*torch"):
        vllm_cos_sin_cache(rr.Rope(16), 8, xp=torch, device="nope")
