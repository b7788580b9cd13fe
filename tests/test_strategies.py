"""rope_ref.testing.strategies: every draw is valid, and apply_rope on it agrees with an
independent route (a NumPy rotation written here from the frequencies, the attention factor
and the xPos formula; Hugging Face's own frequency code for the configs)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import rope_ref as rr
from rope_ref import scaling as S
from rope_ref.testing import strategies as rst

U64 = 2.0**-53
U = {"float16": 2.0**-11, "float32": 2.0**-24, "float64": 2.0**-53}
TINY = {"float16": 2.0**-24, "float32": 2.0**-149, "float64": 2.0**-1074}  # smallest spacing

SCALING_CLASS = {
    "none": type(None),
    "linear": S.Linear,
    "ntk": S.NTK,
    "dynamic": S.DynamicNTK,
    "yarn": S.YaRN,
    "llama3": S.Llama3,
    "longrope": S.LongRoPE,
    "proportional": S.Proportional,
    "xpos": S.XPos,
    "mrope": S.MRope,
    "axial": S.Axial,
}


def reference(x, pos, rope, role):
    """The rotation in float64 NumPy from rope.inv_freq (no rope_ref rotation code), and a
    bound on its own error E per element:  angle p * theta has error <= 2u |p theta|
    (theta rounded, product rounded), cos/sin <= 2u, the pair's two products and sum <= 3u,
    attention factor and magnitude a few u:  E <= (2 max|p theta| + 16) u |pair| af mag."""
    scaling = rope.scaling
    p = np.asarray(pos, dtype=np.float64)
    seq_len = int(np.max(p)) + 1 if scaling is not None and scaling.dynamic else None
    theta = rope.inv_freq(seq_len=seq_len)
    n = rope.n_pairs
    if scaling is not None and scaling.axis_position is not None:
        axes = scaling.pair_axes(rope)
        along = [
            p[k] if scaling.axis_position == "leading" else p[..., k] for k in range(max(axes) + 1)
        ]
        per_pair = np.stack([along[a] for a in axes], axis=-1)  # token shape + (n,)
    else:
        per_pair = p[..., None] * np.ones(n)
    ang = per_pair * theta
    af = rope.attention_factor if seq_len is None else rope._attention_factor(seq_len)
    mag = np.ones_like(ang)
    if isinstance(scaling, S.XPos):
        c = (seq_len // 2) if scaling.center else 0
        zeta = (2.0 * np.arange(n) / rope.rotary_dim + scaling.gamma) / (1.0 + scaling.gamma)
        power = (per_pair - c) / scaling.scale_base
        mag = zeta ** (power if role == "query" else -power)
    cos, sin = np.cos(ang) * af * mag, np.sin(ang) * af * mag
    xf = np.asarray(x, dtype=np.float64)
    y = xf.copy()
    r, h = rope.rotary_dim, n
    a, b = (slice(0, h), slice(h, r)) if rope.layout == "half" else (slice(0, r, 2), slice(1, r, 2))
    xa, xb = xf[..., a], xf[..., b]
    y[..., a] = xa * cos - xb * sin
    y[..., b] = xb * cos + xa * sin
    pair = np.abs(xa) + np.abs(xb)
    e_pair = (2 * np.max(np.abs(ang), initial=0.0) + 16) * U64 * pair * af * mag
    err = np.zeros_like(y)
    err[..., a], err[..., b] = e_pair, e_pair
    return y, err


@settings(max_examples=60)
@given(rst.rope_inputs())
def test_rope_inputs_apply_and_agree_with_an_independent_rotation(inp):
    x, pos, rope = inp.x, inp.positions, inp.rope
    # positions broadcast against x.shape[:-1] (after the axis of multi-axis schemes)
    np.broadcast_shapes(rope.token_shape(pos.shape), x.shape[:-1])
    y = rr.apply_rope(x, pos, rope, role=inp.role)
    assert y.shape == x.shape and y.dtype == x.dtype
    want, e = reference(x, pos, rope, inp.role)
    d = str(x.dtype)
    # apply_rope rounds its (near-exact) result once to x.dtype: u_d |exact| (+ the smallest
    # spacing where the result is subnormal), and the exact value is within e of ours
    bound = e + U[d] * (np.abs(want) + e) + TINY[d] + 4 * U64 * np.abs(want)
    err = np.abs(y.astype(np.float64) - want)
    worst = np.unravel_index(np.argmax(err / bound), err.shape)
    assert np.all(err <= bound), f"max err/bound {np.max(err / bound):.3g} at {worst}"
    # pass-through channels untouched
    assert np.array_equal(y[..., rope.rotary_dim :], x[..., rope.rotary_dim :])


@pytest.mark.parametrize("kind", rst.SCHEDULES)
def test_ropes_draw_every_schedule(kind):
    seen = []

    @settings(max_examples=15)
    @given(rst.ropes(schedules=(kind,), presets=False))
    def check(rope):
        assert isinstance(rope, rr.Rope)
        assert isinstance(rope.scaling, SCALING_CLASS[kind])
        theta = rope.inv_freq()
        assert theta.shape == (rope.rotary_dim // 2,)
        assert np.all(np.isfinite(theta)) and np.all(theta >= 0)
        seen.append(rope)

    check()
    assert len({(r.head_dim, r.rotary_dim, r.layout) for r in seen}) > 1  # varied shapes


def test_ropes_include_the_presets():
    names = set()

    @settings(max_examples=200)
    @given(rst.ropes())
    def check(rope):
        names.update(name for name in rr.presets() if rope == rst._preset_rope(name))

    check()
    assert len(names) >= 3


@settings(max_examples=80)
@given(st.data())
def test_positions_kinds(data):
    kind = data.draw(st.sampled_from(rst.POSITION_KINDS))
    n = data.draw(st.integers(1, 40))
    top = data.draw(st.sampled_from([64, 4096, 2**24]))
    p = data.draw(rst.positions(n, kinds=(kind,), max_position=top))
    assert p.shape == (n,)
    assert np.all(p >= 0) and np.all(p <= top)
    if kind == "float":
        assert p.dtype == np.float64
        return
    assert p.dtype == np.int64
    steps = np.diff(p)
    if kind == "arange":
        assert np.array_equal(p, np.arange(n))
    elif kind == "offset":
        assert np.all(steps == 1)
    elif kind == "large":
        assert np.all(p >= max(top - 4 * n - 4096, 0))


def test_positions_reach_every_kind_feature():
    found = {"restart": False, "fraction": False, "big": False}

    @settings(max_examples=100)
    @given(rst.positions(st.integers(8, 32)))
    def check(p):
        if p.dtype == np.float64 and np.any(p != np.round(p)):
            found["fraction"] = True
        elif p.dtype == np.int64 and np.any(np.diff(p) < 0) and np.any(p == 0):
            found["restart"] = True
        if np.max(p) > 2**23:
            found["big"] = True

    check()
    assert all(found.values()), found


def test_strategy_arguments_are_checked():
    with pytest.raises(rr.RopeValueError, match="schedules"):
        rst.ropes(schedules=("cosine",))
    with pytest.raises(rr.RopeValueError, match="kinds"):
        rst.positions(kinds=("sorted",))
    with pytest.raises(rr.RopeValueError, match="rope_types"):
        rst.hf_configs(rope_types=("fancy",))
    with pytest.raises(rr.RopeValueError, match="families"):
        rst.rope_inputs(families=("sbhd",))


HF_TYPES = ("default", "linear", "dynamic", "yarn", "llama3", "longrope")


@settings(max_examples=60)
@given(rst.hf_configs())
def test_hf_configs_load(cfg):
    rope = rr.Rope.from_hf_config(cfg)
    params = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    rope_type = params.get("rope_type", params.get("type", "default"))
    theta = cfg.get("rope_theta", params.get("rope_theta"))
    assert rope.base == theta
    head_dim = cfg.get("head_dim", cfg["hidden_size"] // cfg["num_attention_heads"])
    assert rope.head_dim == head_dim
    assert rope.rotary_dim == int(head_dim * cfg.get("partial_rotary_factor", 1.0))
    expected = {
        "default": type(None),
        "linear": S.Linear,
        "dynamic": S.DynamicNTK,
        "yarn": S.YaRN,
        "llama3": S.Llama3,
        "longrope": S.LongRoPE,
        "su": S.LongRoPE,
        "mrope": S.MRope,
    }[rope_type]
    assert isinstance(rope.scaling, expected)


@pytest.mark.skipif(
    importlib.util.find_spec("transformers") is None, reason="transformers not installed"
)
@settings(max_examples=40)
@given(rst.hf_configs(rope_types=HF_TYPES))
def test_hf_configs_agree_with_transformers(cfg):
    """Our frequencies against transformers' own ROPE_INIT_FUNCTIONS on the same dict.

    HF forms them in float32: a float32 pow (relative error e <= 16u, as allowed in
    tests/test_peers_hf.py), and for Llama 3 and YaRN a float32 blend
    (1 - s) inv / factor + s inv (3u more) whose weight s is itself rounded. Llama 3:
    s = (L / lambda - low) / (high - low) with lambda = 2 pi / inv; L / lambda carries
    (e + 3u) L / lambda <= (e + 3u) high in the blended band, so s carries
    (e + 4u) high / (high - low) + 2u. YaRN: the ramp (i - lo) / (hi - lo) carries
    2 (i + |lo|) u / (hi - lo). The blend moves the result by that times
    |inv - inv / factor| <= inv.
    """
    # Llama's own default table ignores partial_rotary_factor (the model has none): peers differ
    assume("partial_rotary_factor" not in cfg)
    import torch  # noqa: F401  (transformers needs it)
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    config = LlamaConfig(**cfg)
    rope_type = config.rope_parameters.get("rope_type", "default")
    if rope_type == "default":
        from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

        inv = LlamaRotaryEmbedding(config).inv_freq
    else:
        inv, _ = ROPE_INIT_FUNCTIONS[rope_type](config, "cpu")
    rope = rr.Rope.from_hf_config(cfg)
    ours = rope.inv_freq()
    u32 = 2.0**-24
    e = 16 * u32
    rtol = e
    sc = rope.scaling
    if isinstance(sc, S.Llama3):
        hi, lo = sc.high_freq_factor, sc.low_freq_factor
        rtol = e + 3 * u32 + (e + 4 * u32) * hi / (hi - lo) + 2 * u32
    elif isinstance(sc, S.YaRN):
        lo, hi = (float(v) for v in sc.correction_range(rope))
        rtol = e + 3 * u32 + 2 * (rope.n_pairs + abs(lo)) * u32 / (hi - lo)
    np.testing.assert_allclose(ours, inv.double().numpy(), rtol=rtol, atol=0)
