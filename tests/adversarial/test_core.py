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
        with pytest.raises(rr.RopeTypeError, match=r"base.*lazy, traced or meta"):
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


# ---------------------------------------------------------------- helpers (independent routes)


def _mp_tables(rope, positions, prec=300):
    """cos, sin of m * theta_j by mpmath from the exact 90-digit frequencies (float64 out)."""
    mpmath = pytest.importorskip("mpmath")
    with mpmath.workprec(prec):
        th = [mpmath.mpf(str(t)) for t in rope.thetas()]
        pos = np.asarray(positions, dtype=np.float64).ravel()
        c = np.empty((pos.size, len(th)))
        s = np.empty_like(c)
        for i, m in enumerate(pos):
            for j, t in enumerate(th):
                a = mpmath.mpf(float(m)) * t
                c[i, j], s[i, j] = float(mpmath.cos(a)), float(mpmath.sin(a))
    return c, s


def _ulps(got, want):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return np.abs(got - want) / np.spacing(np.abs(want))


def _loop_rotate(x, cos, sin, rope):
    """Eq. 34 by an explicit loop over pairs, skipping exact-zero coefficients (identity terms
    of the rotation matrix), in float64."""
    x = np.asarray(x, dtype=np.float64)
    y = x.copy()
    h = rope.n_pairs
    for j in range(h):
        a, b = (j, j + h) if rope.layout == "half" else (2 * j, 2 * j + 1)
        c, s = (
            np.broadcast_to(cos[..., j], x.shape[:-1]),
            np.broadcast_to(sin[..., j], x.shape[:-1]),
        )
        xa, xb = x[..., a], x[..., b]
        with np.errstate(invalid="ignore", over="ignore"):
            ca = np.where(c == 0, 0.0, xa * c)
            sb = np.where(s == 0, 0.0, xb * s)
            cb = np.where(c == 0, 0.0, xb * c)
            sa = np.where(s == 0, 0.0, xa * s)
            y[..., a] = ca - sb
            y[..., b] = cb + sa
    return y


# ---------------------------------------------------------------- masked arrays


@pytest.mark.parametrize("route", [rr.apply_rope, rr.apply_rope_complex, rr.apply_rope_matrix])
def test_masked_arrays_are_rejected(route):
    rope = rr.Rope(4)
    x = np.ma.masked_array(np.ones((3, 4)), mask=[[0, 0, 1, 0]] * 3)
    with pytest.raises(rr.RopeTypeError, match=r"x is a numpy\.ma\.MaskedArray.*filled"):
        route(x, np.arange(3), rope)
    pos = np.ma.masked_array(np.arange(3), mask=[0, 1, 0])
    with pytest.raises(rr.RopeTypeError, match=r"positions is a numpy\.ma\.MaskedArray"):
        route(np.ones((3, 4)), pos, rope)
    with pytest.raises(rr.RopeTypeError, match=r"positions is a numpy\.ma\.MaskedArray"):
        rope.cos_sin(pos)


# ---------------------------------------------------------------- small integer positions


@pytest.mark.parametrize("dtype", ["int8", "uint8", "int16"])
def test_small_integer_positions_do_not_wrap(bk, dtype):
    info = np.iinfo(dtype)
    values = np.array([info.min, info.min + 1, 0, 1, info.max - 1, info.max], dtype=dtype)
    try:
        pos = bk.from_numpy(values, dtype=dtype)
    except Exception as exc:  # a library without this dtype
        pytest.skip(f"{bk.name} has no {dtype}: {exc}")
    rope = rr.Rope(8, rotary_dim=6, scaling=sc.DynamicNTK(2.0, 64))
    want_c, want_s = _mp_tables(rope.__class__(8, rotary_dim=6), values)
    # the dynamic schedule reads max(position) + 1 as the length: a wrap would change it
    seq = int(values.max()) + 1
    rope_at = rr.Rope(8, rotary_dim=6, scaling=sc.DynamicNTK(2.0, 64))
    c, s = rope_at.cos_sin(pos, seq_len=seq) if bk.lazy else rope_at.cos_sin(pos)
    c64, s64 = rope_at.cos_sin(values.astype(np.int64), seq_len=seq)
    np.testing.assert_array_equal(bk.to_numpy(c), c64)
    np.testing.assert_array_equal(bk.to_numpy(s), s64)
    # the unscaled tables against mpmath (within one ulp)
    c, s = rr.Rope(8, rotary_dim=6).cos_sin(pos)
    assert _ulps(bk.to_numpy(c), want_c).max() <= 1 and _ulps(bk.to_numpy(s), want_s).max() <= 1
    x = np.random.default_rng(1).standard_normal((len(values), 8))
    for route in (rr.apply_rope, rr.apply_rope_complex, rr.apply_rope_matrix):
        got = bk.to_numpy(route(bk.from_numpy(x), pos, rr.Rope(8, rotary_dim=6)))
        want = _loop_rotate(x, want_c, want_s, rr.Rope(8, rotary_dim=6))
        np.testing.assert_allclose(got, want, rtol=0, atol=8 * np.spacing(np.abs(x).max()))


# ---------------------------------------------------------------- extreme bases


@pytest.mark.parametrize("base", [1e300, 1.7976931348623157e308, 1e100, 3.2e-5, 0.5])
def test_extreme_bases_are_exact_against_mpmath(base):
    rope = rr.Rope(16, base=base)
    ints = np.array([1, 7, 2**52 - 1, -(2**52 - 1), 2**40 + 3])
    frac = np.array([0.5, 1e-300, 2.0**52 - 0.5, -1234567.891, 3e-5])
    for pos in (ints, frac):
        c, s = rope.cos_sin(pos)
        wc, ws = _mp_tables(rope, pos)
        # one ulp of the exact value (the documented bound), measured < 0.6 on these cases
        assert _ulps(c, wc).max() <= 1.0
        assert _ulps(s, ws).max() <= 1.0


@pytest.mark.parametrize("factor", [1e15, 1e280])
def test_subnormal_frequencies_keep_their_accuracy(factor):
    rope = rr.Rope(16, base=1e300, scaling=sc.Linear(factor))
    pos = np.array([1, 3, 2**52 - 1, 0.75])
    c, s = rope.cos_sin(pos)
    wc, ws = _mp_tables(rope, pos)
    assert _ulps(c, wc).max() <= 1.0
    # in the subnormal range an ulp is 2**-1074: the absolute bound
    assert np.all(np.abs(s - ws) <= np.maximum(np.spacing(np.abs(ws)), 2.0**-1074))


def test_bases_beyond_the_exact_domain_are_rejected():
    with pytest.raises(
        rr.RopeValueError, match=r"base=1e-200 .*theta_j <= 2\*\*16.*base must be >="
    ):
        rr.Rope(16, base=1e-200)
    with pytest.raises(rr.RopeValueError, match=r"theta_0 = .* outside \[0, 2\*\*16\]"):
        rr.Rope(16, scaling=sc.Linear(1e-10)).cos_sin([1])


# ---------------------------------------------------------------- unchecked big positions


def test_big_positions_under_jit_or_lazy_give_nan_not_wrong_values(bk):
    if not (bk.lazy or bk.jit):
        # eager arrays: a typed error naming the limit
        with pytest.raises(rr.RopeValueError, match=r"\|position\| < 2\*\*53"):
            rr.Rope(8).cos_sin(bk.from_numpy(np.array([1, 2**53], dtype=np.int64)))
        return
    rope = rr.Rope(8)
    pos = np.array([1, 2**53, 2**60, -(2**53) + 1, 5], dtype=np.int64)
    bad = np.array([False, True, True, False, False])
    x = np.ones((5, 8))

    def run(p, xx):
        return (*rope.cos_sin(p), rr.apply_rope(xx, p, rope))

    fn = bk.compile(run) if bk.jit else run
    outs = [bk.to_numpy(o) for o in fn(bk.from_numpy(pos), bk.from_numpy(x))]
    want_c, want_s = _mp_tables(rope, pos[~bad])
    for o in outs:
        assert np.all(np.isnan(o[bad])) and np.all(np.isfinite(o[~bad]))
    assert _ulps(outs[0][~bad], want_c).max() <= 1 and _ulps(outs[1][~bad], want_s).max() <= 1


# ---------------------------------------------------------------- schedules' own arguments


@pytest.mark.parametrize("value", [0.0, -1.0, -0.0])
def test_longrope_attention_factor_must_be_positive(value):
    with pytest.raises(rr.RopeValueError, match=r"LongRoPE.attention_factor must be > 0"):
        sc.LongRoPE([1.0] * 4, [1.0] * 4, 4096, factor=2.0, attention_factor=value)


def test_longrope_default_attention_factor_needs_original_max_two():
    with pytest.raises(rr.RopeValueError, match=r"original_max_position_embeddings must be >= 2"):
        sc.LongRoPE([1.0] * 4, [1.0] * 4, 1, factor=2.0)
    # given explicitly, no logarithm is needed
    r = rr.Rope(8, scaling=sc.LongRoPE([1.0] * 4, [1.0] * 4, 1, factor=2.0, attention_factor=1.5))
    assert r.attention_factor == 1.5


# ---------------------------------------------------------------- sizes


def test_head_dim_is_bounded_up_front():
    import tracemalloc

    tracemalloc.start()
    try:
        with pytest.raises(rr.RopeValueError, match=r"head_dim must be <= 65536.*got 10+"):
            rr.Rope(10**12)
        with pytest.raises(rr.RopeValueError, match=r"head_dim must be a positive integer, got 0"):
            rr.Rope(0)
        with pytest.raises(rr.RopeTypeError, match=r"head_dim must be an integer, got float"):
            rr.Rope(1e12)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20  # refused before any table of that size exists


# ---------------------------------------------------------------- xPos at long positions


def _xpos_factor_mp(rope, positions, role):
    """zeta_j ** (+-m / scale_base) by mpmath, from the schedule's definition."""
    mpmath = pytest.importorskip("mpmath")
    xs = rope.scaling
    d = rope.rotary_dim
    with mpmath.workprec(200):
        g = mpmath.mpf(xs.gamma)
        zeta = [(mpmath.mpf(2 * j) / d + g) / (1 + g) for j in range(rope.n_pairs)]
        sign = 1 if role == "query" else -1
        return np.array(
            [
                [
                    float(z ** (sign * mpmath.mpf(float(m)) / mpmath.mpf(xs.scale_base)))
                    for z in zeta
                ]
                for m in positions
            ]
        )


def test_xpos_tables_finite_and_accurate_up_to_the_limit():
    rope = rr.Rope(32, scaling=sc.XPos())
    limit = rope.scaling.max_offset(rope)
    # the limit is e**660 for the steepest pair (zeta_0 = 0.4 / 1.4), computed independently
    assert limit == int(660 * 512 / -np.log(0.4 / 1.4))
    pos = np.array([0, 1, 1000, 123_457, limit - 1, limit, -limit])
    plain_c, plain_s = _mp_tables(rr.Rope(32), pos)
    for role in ("query", "key"):
        c, s = rope.cos_sin(pos, role=role)
        assert np.all(np.isfinite(c)) and np.all(np.isfinite(s))
        tiny = np.finfo(np.float64).tiny
        assert np.all((np.abs(c) >= tiny) | (c == 0)) and np.all((np.abs(s) >= tiny) | (s == 0))
        f = _xpos_factor_mp(rope, pos, role)
        # factor within ~1 ulp (exp) + the rate's rounding times |m|: a few ulps; the table is
        # one more rounding of the product with the exact cos/sin
        assert _ulps(c, plain_c * f).max() <= 4
        assert _ulps(s[1:], (plain_s * f)[1:]).max() <= 4


def test_xpos_positions_beyond_the_limit_are_rejected_with_it():
    rope = rr.Rope(32, scaling=sc.XPos())
    limit = rope.scaling.max_offset(rope)
    for role in ("query", "key"):
        with pytest.raises(rr.RopeValueError, match=rf"XPos: \|position\| must be <= {limit}"):
            rope.cos_sin(np.array([0, limit + 1]), role=role)
        with pytest.raises(rr.RopeValueError, match=r"XPos: \|position\| must be <="):
            rr.apply_rope(np.ones((1, 32)), np.array([300_000]), rope, role=role)
    # centred: the offset from the centre counts
    centred = rr.Rope(32, scaling=sc.XPos(center=True))
    c, _ = centred.cos_sin(np.array([0, 2 * limit - 2]), role="key")
    assert np.all(np.isfinite(c))


def test_xpos_unchecked_positions_beyond_the_limit_give_nan(bk):
    if not (bk.lazy or bk.jit):
        pytest.skip("eager arrays are checked (test above)")
    rope = rr.Rope(16, scaling=sc.XPos())
    limit = rope.scaling.max_offset(rope)
    pos = np.array([3, limit + 10, 5, -limit - 10])
    bad = np.array([False, True, False, True])

    def run(p):
        return rope.cos_sin(p, role="key")

    fn = bk.compile(run) if bk.jit else run
    c, s = (bk.to_numpy(o) for o in fn(bk.from_numpy(pos)))
    assert np.all(np.isnan(c[bad])) and np.all(np.isnan(s[bad]))
    want_c, _ = rope.cos_sin(pos[~bad], role="key")
    np.testing.assert_array_equal(c[~bad], want_c)


def test_xpos_tables_same_bits_on_every_backend(bk):
    # 286 positions x 64 pairs = 18,304 entries per role, up to the limit
    rope = rr.Rope(128, scaling=sc.XPos())
    limit = rope.scaling.max_offset(rope)
    pos = np.unique(
        np.concatenate(
            [np.linspace(-limit, limit, 280).astype(np.int64), [0, 1, 2, limit - 1, 7, 11]]
        )
    )
    assert pos.size * 64 == 18_304
    for role in ("query", "key"):
        want = rope.cos_sin(pos, role=role)
        got = rope.cos_sin(bk.from_numpy(pos), role=role)
        for g, w in zip(got, want, strict=True):
            np.testing.assert_array_equal(bk.to_numpy(g), w)


# ---------------------------------------------------------------- inf and NaN in x

ROUTES = [rr.apply_rope, rr.apply_rope_complex, rr.apply_rope_matrix]


def _nonfinite_case(layout):
    rope = rr.Rope(10, rotary_dim=8, layout=layout)
    pos = np.array([0, 0, 3, 7, 0, 2])
    x = np.random.default_rng(3).standard_normal((6, 10))
    a0, b0 = (0, 4) if layout == "half" else (0, 1)
    x[0, a0] = np.inf  # position 0: the partner must stay finite (sin 0 = 0 exactly)
    x[1, b0] = -np.inf
    x[2, a0] = np.nan  # NaN stays in its pair
    x[3, 9] = np.inf  # pass-through channel: stays there
    x[4, 9] = np.nan
    x[5, a0], x[5, b0] = np.inf, np.inf  # inf - inf in one channel: NaN there only
    return rope, pos, x


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # inf - inf
@pytest.mark.parametrize("route", ROUTES, ids=lambda f: f.__name__)
@pytest.mark.parametrize("layout", ["half", "interleaved"])
def test_nonfinite_values_stay_in_their_pair(bk, route, layout):
    rope, pos, x = _nonfinite_case(layout)
    c, s = _mp_tables(rope, pos)
    want = _loop_rotate(x, c, s, rope)

    def run(xx, pp):
        return route(xx, pp, rope)

    fn = bk.compile(run) if bk.jit else run
    got = bk.to_numpy(fn(bk.from_numpy(x), bk.from_numpy(pos)))
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
    fin = np.isfinite(want)
    np.testing.assert_array_equal(got[~fin & ~np.isnan(want)], want[~fin & ~np.isnan(want)])
    assert np.abs(got[fin] - want[fin]).max() <= 4 * np.spacing(np.abs(x[np.isfinite(x)]).max())
    # the rows hit: only their own pair is non-finite; every other channel is finite
    assert np.isfinite(got[0]).sum() == 9 and np.isfinite(got[3]).sum() == 9
    assert np.isfinite(got[2]).sum() == 8 and np.isfinite(got[4]).sum() == 9


def test_nonfinite_values_warn_nothing():
    import warnings

    rope, pos, x = _nonfinite_case("half")
    x, pos = x[:5], pos[:5]  # row 5 computes inf - inf: an invalid operation of the input
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for route in ROUTES:
            route(x, pos, rope)


# ---------------------------------------------------------------- empty, meta, custom schedules

DYNAMIC = [
    rr.Rope(8, scaling=sc.DynamicNTK(2.0, 64)),
    rr.Rope(8, scaling=sc.LongRoPE([1.0] * 4, [2.0] * 4, 16, factor=4.0)),
    rr.Rope(8, scaling=sc.XPos(center=True)),
]


@pytest.mark.parametrize("rope", DYNAMIC, ids=["dynamic", "longrope", "xpos-centred"])
@pytest.mark.parametrize("shape", [(0,), (2, 0)])
def test_dynamic_schedules_with_empty_positions_return_empty(bk, rope, shape):
    pos = bk.from_numpy(np.zeros(shape, dtype=np.int64))
    x = bk.from_numpy(np.zeros((*shape, 8)))
    kw = {"seq_len": 16} if bk.lazy else {}
    c, s = rope.cos_sin(pos, **kw)
    assert tuple(c.shape) == (*shape, 4) and tuple(s.shape) == (*shape, 4)
    for route in ROUTES:
        assert tuple(route(x, pos, rope, **kw).shape) == (*shape, 8)


def test_torch_meta_tensors_give_meta_results():
    torch = pytest.importorskip("torch")
    rope = rr.Rope(8, rotary_dim=6)
    x = torch.zeros(2, 3, 8, device="meta", dtype=torch.float32)
    for pos in (torch.arange(3, device="meta"), [0, 1, 2]):
        for route in ROUTES:
            y = route(x, pos, rope)
            assert y.device.type == "meta" and tuple(y.shape) == (2, 3, 8)
            assert y.dtype == torch.float32
    c, _ = rope.cos_sin(torch.arange(3, device="meta"))
    assert c.device.type == "meta" and tuple(c.shape) == (3, 3)
    dyn = rr.Rope(8, scaling=sc.DynamicNTK(2.0, 64))
    with pytest.raises(rr.RopeValueError, match=r"seq_len is required.*meta device"):
        rr.apply_rope(x, [0, 1, 2], dyn)
    assert rr.apply_rope(x, [0, 1, 2], dyn, seq_len=3).device.type == "meta"
    with pytest.raises(rr.RopeTypeError, match="base must be a real number known before"):
        rr.Rope(8, base=torch.tensor(10000.0, device="meta"))


class _FloatThetas(sc.Scaling):
    def thetas(self, rope, seq_len):
        return tuple(float(t) / 2 for t in rope.unscaled_thetas())


class _ShortThetas(sc.Scaling):
    def thetas(self, rope, seq_len):
        return [1.0]


class _NoThetas(sc.Scaling):
    def thetas(self, rope, seq_len):
        return None


class _NegativeTheta(sc.Scaling):
    def thetas(self, rope, seq_len):
        return [-1.0] * rope.n_pairs


class _StringFactor(sc.Scaling):
    def attention_scaling(self, rope, seq_len):
        return "2"


class _NumpyFactor(sc.Scaling):
    def attention_scaling(self, rope, seq_len):
        return np.float32(2.0)


class _FloatMagnitude(sc.Scaling):
    def magnitude(self, xp, m, rope, *, role, seq_len, dtype):
        return 3.0


class _ForeignMagnitude(sc.Scaling):
    def magnitude(self, xp, m, rope, *, role, seq_len, dtype):
        return [1.0] * rope.n_pairs


class _WideMagnitude(sc.Scaling):
    def magnitude(self, xp, m, rope, *, role, seq_len, dtype):
        return xp.ones((7, rope.n_pairs), dtype=dtype)


class _BadAxes(sc.Scaling):
    def pair_axes(self, rope):
        return 5


def test_custom_schedules_returning_floats_are_accepted_or_rejected_by_method():
    plain = rr.Rope(8)
    pos = np.array([1, 5])
    pc, ps = plain.cos_sin(pos)
    # floats as frequencies are taken at their exact value: same as Linear(2) here
    c, _ = rr.Rope(8, scaling=_FloatThetas()).cos_sin(pos)
    np.testing.assert_array_equal(c, rr.Rope(8, scaling=sc.Linear(2.0)).cos_sin(pos)[0])
    c, s = rr.Rope(8, scaling=_NumpyFactor()).cos_sin(pos)
    np.testing.assert_array_equal(c, 2 * pc)
    c, s = rr.Rope(8, scaling=_FloatMagnitude()).cos_sin(pos)
    np.testing.assert_array_equal(s, 3 * ps)
    cases = [
        (
            _ShortThetas,
            rr.RopeValueError,
            r"_ShortThetas.thetas\(\) must return rotary_dim // 2 = 4",
        ),
        (_NoThetas, rr.RopeTypeError, r"_NoThetas.thetas\(\) must return a sequence of 4"),
        (_NegativeTheta, rr.RopeValueError, r"_NegativeTheta.thetas\(\)\[0\] must be .* >= 0"),
        (_StringFactor, rr.RopeTypeError, r"_StringFactor.attention_scaling\(\) must be a real"),
        (_ForeignMagnitude, rr.RopeTypeError, r"_ForeignMagnitude.magnitude\(\) must be a real"),
        (_WideMagnitude, rr.RopeValueError, r"_WideMagnitude.magnitude\(\)'s result of shape"),
        (_BadAxes, rr.RopeTypeError, r"_BadAxes.pair_axes\(\) must return None or 4 axis"),
    ]
    for cls, error, pattern in cases:
        with pytest.raises(error, match=pattern):
            rr.Rope(8, scaling=cls()).cos_sin(pos)
        with pytest.raises(error, match=pattern):
            rr.apply_rope(np.ones((2, 8)), pos, rr.Rope(8, scaling=cls()))


def test_exact_python_reals_are_accepted_as_numbers():
    from decimal import Decimal
    from fractions import Fraction

    want = rr.Rope(8, base=10_000.0)
    assert rr.Rope(8, base=Decimal("10000")) == want == rr.Rope(8, base=Fraction(10_000))
    with pytest.raises(rr.RopeValueError, match="base must be finite"):
        rr.Rope(8, base=Decimal("sNaN"))
    with pytest.raises(rr.RopeValueError, match="base must be finite"):
        rr.Rope(8, base=Decimal("Infinity"))


def test_sinusoidal_dim_is_bounded_and_named():
    with pytest.raises(rr.RopeValueError, match=r"^dim must be <= 65536 \(2\*\*16\), got 10{9}$"):
        rr.sinusoidal_embedding([1], 10**9)


def test_xpos_factor_in_a_float32_working_format():
    # namespaces without float64 (JAX without x64, PyTorch on MPS) compute in float32: the
    # constants and the error-free split follow the format (checked here through NumPy float32)
    import array_api_compat

    xp = array_api_compat.array_namespace(np.zeros(1))
    rope = rr.Rope(16, scaling=sc.XPos())
    limit = rope.scaling.max_offset(rope, 24)
    assert limit == int(60 * 512 / -np.log(0.4 / 1.4))
    pos = np.array([0, 1, 100, 12345, limit, -limit], dtype=np.float32)
    for role in ("query", "key"):
        got = rope.scaling.magnitude(xp, pos, rope, role=role, seq_len=None, dtype=np.float32)
        assert got.dtype == np.float32 and np.all(np.isfinite(got))
        want = _xpos_factor_mp(rope, pos, role)
        # a float32 exp of a double-float argument: a few float32 ulps
        assert np.max(np.abs(got - want) / want) <= 4 * 2.0**-24


@pytest.mark.parametrize(("base", "factor"), [(1e30, None), (1e60, None), (1e300, 1e10)])
def test_small_frequencies_in_a_float32_working_format(base, factor):
    import array_api_compat

    from rope_ref import _exact

    xp = array_api_compat.array_namespace(np.zeros(1))
    rope = rr.Rope(16, base=base, scaling=None if factor is None else sc.Linear(factor))
    table = _exact.angle_table(rope.thetas(), 24)
    assert table.small is not None  # the direct-angle columns are exercised
    m = np.array([1, 3, 1000, 2**23 - 1, -(2**23 - 1)], dtype=np.float32)
    c, s = _exact.exact_cos_sin(xp, m, table, dtype=np.float32, device=None, integral=True)
    wc, ws = _mp_tables(rope, m)
    for got, want in ((c, wc), (s, ws)):
        ulp = np.maximum(np.spacing(np.abs(want).astype(np.float32)), np.float32(2.0**-149))
        assert np.all(np.abs(got.astype(np.float64) - want) <= ulp)
