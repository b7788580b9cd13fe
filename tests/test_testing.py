"""rope_ref.testing.assert_close: passes on right data, and every check fails on wrong data
(with each common RoPE mistake diagnosed), on every backend."""

from __future__ import annotations

import math

import numpy as np
import pytest

import rope_ref as rr
from rope_ref import scaling as S
from rope_ref.testing import Report, RopeToleranceWarning, assert_close, compare, default_tolerance

POS = np.arange(100_000, 100_012)


def setup(bk, rope, dtype="float32", pos=POS, seed=0):
    x = np.random.default_rng(seed).standard_normal((2, pos.size, rope.head_dim))
    xb = bk.from_numpy(x, dtype)
    pb = bk.from_numpy(pos)
    return xb, pb, rr.apply_rope(xb, pb, rope)


@pytest.mark.needs(dtype="float32")
def test_passes_on_the_reference_and_on_a_float32_kernel(bk):
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


# ------------------------------------------------------------------ verdicts (issue 12)
@pytest.mark.needs(dtype="float32")
def test_report_fields_and_classes(bk):
    rope = rr.Rope(64, base=5e5)
    xb, pb, want = setup(bk, rope)
    same = assert_close(want, want, rope=rope, positions=pb)
    assert isinstance(same, Report) and same.passed and same.accuracy_class == "exact"
    assert same.max_abs_error == 0 and same.worst_ratio == 0 and same.diagnosis == ()
    assert same.phase_error == ((65536, 1048576, 0.0),)
    x = bk.to_numpy(xb).astype(np.float32)
    ang = POS.astype(np.float32)[:, None] * rope.inv_freq(dtype=np.float32)
    c, s = np.cos(ang), np.sin(ang)
    mine = np.concatenate(
        [x[..., :32] * c - x[..., 32:] * s, x[..., 32:] * c + x[..., :32] * s], -1
    )
    got = bk.from_numpy(mine, "float32")
    r = assert_close(got, want, rope=rope, positions=pb)
    assert r.accuracy_class == "lower-precision angles" and 0 < r.worst_ratio <= 1
    assert "accuracy class 'lower-precision angles'" in r.message
    # phase error recovered from the data: the angle between the pair vectors, computed here
    a, d = mine.astype(np.float64), bk.to_numpy(want).astype(np.float64)
    za, zd = a[..., :32] + 1j * a[..., 32:], d[..., :32] + 1j * d[..., 32:]
    want_phase = float(np.max(np.abs(np.angle(za * np.conj(zd)))))
    ((lo, hi, phase),) = r.phase_error
    assert (lo, hi) == (65536, 1048576) and phase == pytest.approx(want_phase, rel=1e-6)
    strict = compare(got, want, rope=rope, positions=pb, strict=True)
    assert not strict.passed and strict.accuracy_class == "lower-precision angles"
    with pytest.raises(AssertionError, match=r"accuracy class: lower-precision angles \(strict\)"):
        assert_close(got, want, rope=rope, positions=pb, strict=True)


def test_known_phase_error_is_recovered():
    rope = rr.Rope(32)
    pos = np.array([3, 300, 30_000, 3_000_000])
    x = np.random.default_rng(1).standard_normal((4, 32))
    cos, sin = rope.cos_sin(pos)
    delta = np.array([1e-9, 1e-7, 1e-5, 1e-3])[:, None]  # per position
    c2, s2 = np.cos(delta), np.sin(delta)
    turned = np.concatenate(
        [
            x[:, :16] * (cos * c2 - sin * s2) - x[:, 16:] * (sin * c2 + cos * s2),
            x[:, 16:] * (cos * c2 - sin * s2) + x[:, :16] * (sin * c2 + cos * s2),
        ],
        -1,
    )
    r = compare(turned, rr.apply_rope(x, pos, rope), rope=rope, positions=pos)
    got = {lo: p for lo, _hi, p in r.phase_error}
    assert got[0] == pytest.approx(1e-9, rel=1e-4) and got[256] == pytest.approx(1e-7, rel=1e-6)
    assert got[4096] == pytest.approx(1e-5, rel=1e-6)
    assert got[2**20] == pytest.approx(1e-3, rel=1e-6)


def test_non_finite_values(bk):
    d = np.array([1.0, np.inf, -np.inf, np.nan, 2.0])
    want = bk.from_numpy(d)

    def arr(v):
        return bk.from_numpy(np.array(v, dtype=np.float64))

    assert assert_close(arr(d), want, equal_nan=True).passed
    with pytest.raises(AssertionError, match="not close"):
        assert_close(arr(d), want)  # NaN fails without equal_nan
    for bad in (
        [1.0, 1e308, -np.inf, np.nan, 2.0],  # finite where inf is desired
        [1.0, -np.inf, -np.inf, np.nan, 2.0],  # inf of the wrong sign
        [1.0, np.inf, -np.inf, 0.0, 2.0],  # a number where NaN is desired
        [np.inf, np.inf, -np.inf, np.nan, 2.0],  # inf where a number is desired
        [np.nan, np.inf, -np.inf, np.nan, 2.0],
    ):
        r = compare(arr(bad), want, equal_nan=True)
        assert not r.passed and r.accuracy_class == "fail", bad
        assert math.isfinite(r.atol) and not math.isnan(r.atol)
    # tolerances stay finite: a finite value never matches inf, whatever the scale
    r = compare(arr([1.0, 1.7e308, 0, 0, 0]), arr([1.0, np.inf, 0, 0, 0]))
    assert not r.passed and math.isfinite(r.atol)
    for tol in (math.inf, math.nan, -1.0):
        with pytest.raises(ValueError, match="atol must be finite"):
            assert_close(want, want, rtol=0.0, atol=tol)


def test_invalid_arguments_are_typed_errors():
    rope = rr.Rope(16)
    x = np.zeros((2, 5, 16))
    with pytest.raises(rr.RopeTypeError, match="rtol must be a real number"):
        assert_close(x, x, rtol="0.1", atol=0.0)
    with pytest.raises(rr.RopeTypeError, match="atol must be a real number"):
        assert_close(x, x, rtol=0.1, atol=True)
    with pytest.raises(rr.RopeValueError, match="positions of shape \\(4,\\)"):
        assert_close(x, x, rope=rope, positions=np.arange(4))
    with pytest.raises(rr.RopeValueError, match="role must be one of"):
        assert_close(x, x, rope=rope, positions=np.arange(5), role="value")
    with pytest.raises(rr.RopeTypeError, match="actual must be an array"):
        assert_close([1.0], x)


def test_tensors_that_require_grad_are_compared_by_value():
    torch = pytest.importorskip("torch")
    rope = rr.Rope(16)
    x = torch.randn(3, 5, 16, dtype=torch.float64, requires_grad=True)
    pos = torch.arange(5)
    y = rr.apply_rope(x, pos, rope)
    assert assert_close(y, y.detach().clone(), rope=rope, positions=pos, x=x).passed
    with pytest.raises(AssertionError, match="positions shifted by \\+1"):
        assert_close(rr.apply_rope(x, pos + 1, rope), y.detach(), rope=rope, positions=pos, x=x)


def test_explicit_tolerances_give_exact_or_fail():
    a, d = np.array([1.0, 2.0]), np.array([1.0, 2.1])
    assert compare(a, d, rtol=0.0, atol=0.2).accuracy_class == "exact"
    r = compare(a, d, rtol=0.0, atol=0.01)
    assert r.accuracy_class == "fail" and "atol=1.000e-02 + rtol=0.000e+00" in r.message


def test_tolerance_warning_is_exported_and_a_user_warning():
    assert issubclass(RopeToleranceWarning, UserWarning)
    assert rr.testing.RopeToleranceWarning is RopeToleranceWarning


def test_float8_outputs():
    torch = pytest.importorskip("torch")
    from rope_ref.testing import unit_roundoff

    assert unit_roundoff(torch.float8_e4m3fn) == 2.0**-4
    assert unit_roundoff(torch.float8_e5m2) == 2.0**-3
    rope = rr.Rope(32)
    pos = torch.arange(16)
    x = torch.from_numpy(np.random.default_rng(8).standard_normal((16, 32)))
    want = rr.apply_rope(x, pos, rope).to(torch.float8_e4m3fn)
    same = compare(
        rr.apply_rope(x.float(), pos, rope).to(torch.float8_e4m3fn),
        want,
        rope=rope,
        positions=pos,
        strict=True,
    )
    assert same.passed and same.accuracy_class == "exact"
    wrong = rr.apply_rope(x, pos + 1, rope).to(torch.float8_e4m3fn)
    r = compare(wrong, want, rope=rope, positions=pos)
    assert not r.passed and "tolerances for float8_e4m3fn" in r.message


def test_ulps_are_those_of_the_dtype_under_test():
    d = np.array([1.0, 3.0, -0.7, 1e-3], dtype=np.float32)
    a = d + 3 * np.spacing(d)  # three ulps of float32 (np.spacing: the independent route)
    r = compare(a, d, rtol=0.0, atol=1.0)
    assert r.max_ulp == 3.0
    d64 = d.astype(np.float64)
    r = compare(d64 + 5 * np.spacing(d64), d64, rtol=0.0, atol=1.0)
    assert r.max_ulp == 5.0


def test_check_namespace_false_compares_dtypes_and_devices_by_name():
    # equal float32 data from different libraries: the same dtype and device by name
    torch = pytest.importorskip("torch")
    data = np.linspace(-1.0, 1.0, 12, dtype=np.float32).reshape(3, 4)
    peers = [np.asarray(data)]
    try:
        import jax.numpy as jnp

        peers.append(jnp.asarray(data))
    except ImportError:  # pragma: no cover - jax is in the dev environment
        pass
    for other in peers:
        r = compare(torch.from_numpy(data.copy()), other, check_namespace=False)
        assert r.passed and r.max_abs_error == 0.0, r.message
        assert not compare(torch.from_numpy(data.copy()), other).passed  # namespaces checked
    # a real dtype difference still fails by name
    r = compare(torch.from_numpy(data.copy()), data.astype(np.float64), check_namespace=False)
    assert not r.passed and "dtypes differ" in r.message


def test_dask_arrays_of_unknown_shape():
    da = pytest.importorskip("dask.array")
    x = da.arange(8, chunks=4).astype("float32")
    assert compare(x[x > 2], x[x > 2]).passed
    r = compare(x[x > 2], x[x > 3])
    assert not r.passed and "shapes differ: actual (5,), desired (4,)" in r.message


def test_compare_rejects_bad_positions_seq_len_and_x():
    rope = rr.Rope(8)
    x = np.ones((4, 8))
    pos = np.arange(4.0)
    y = rr.apply_rope(x, pos, rope)
    with pytest.raises(rr.RopeValueError, match="positions must be finite"):
        compare(y, y, rope=rope, positions=np.array([0.0, np.nan, 2.0, 3.0]))
    with pytest.raises(rr.RopeTypeError, match="seq_len must be an integer"):
        compare(y, y, rope=rope, positions=pos, seq_len=2.5)
    with pytest.raises(rr.RopeValueError, match="seq_len must be at least 1"):
        compare(y, y, rope=rope, positions=pos, seq_len=0)
    with pytest.raises(rr.RopeValueError, match=r"x must have the outputs' shape \(4, 8\)"):
        compare(y + 1, y, rope=rope, positions=pos, x=np.ones(3))
    # the same calls with valid arguments
    assert compare(y, y, rope=rope, positions=pos, seq_len=np.int64(4), x=x).passed
