"""Rope.from_hf_config: transformers v4 and v5 configs, and a catalogue of bad configs."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

import rope_ref as rr
from rope_ref import scaling as S

LLAMA31 = {
    "model_type": "llama",
    "hidden_size": 4096,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "max_position_embeddings": 131072,
    "rope_theta": 500000.0,
    "rope_scaling": {
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
        "rope_type": "llama3",
    },
    "vocab_size": 128256,
}


def test_v4_llama31():
    r = rr.Rope.from_hf_config(LLAMA31)
    assert r == rr.Rope(128, base=5e5, scaling=S.Llama3(8.0, 1.0, 4.0, 8192))
    text = r.explain()
    assert "rope_scaling.low_freq_factor = 1.0" in text
    assert "layout half" in text


def test_v5_rope_parameters_and_object_config():
    cfg = {
        "model_type": "llama",
        "hidden_size": 2048,
        "num_attention_heads": 32,
        "max_position_embeddings": 131072,
        "rope_parameters": {
            "rope_type": "llama3",
            "rope_theta": 500000.0,
            "factor": 32.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        },
    }
    r = rr.Rope.from_hf_config(cfg)
    assert r == rr.Rope(64, base=5e5, scaling=S.Llama3(32.0, 1.0, 4.0, 8192))
    assert rr.Rope.from_hf_config(SimpleNamespace(**cfg)) == r


def test_legacy_type_key_and_defaults():
    cfg = {
        "hidden_size": 512,
        "num_attention_heads": 8,
        "max_position_embeddings": 2048,
        "rope_scaling": {"type": "dynamic", "factor": 2.0},
    }
    r = rr.Rope.from_hf_config(cfg)
    assert r == rr.Rope(64, base=10_000.0, scaling=S.DynamicNTK(2.0, 2048))
    assert "rope_theta = 10000.0" in r.explain().split("defaults applied")[1]


def test_per_layer_type_parameters():
    cfg = {
        "head_dim": 256,
        "hidden_size": 2560,
        "num_attention_heads": 8,
        "max_position_embeddings": 131072,
        "rope_parameters": {
            "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6},
            "sliding_attention": {"rope_type": "default", "rope_theta": 1e4},
        },
    }
    with pytest.raises(ValueError, match=r"pass layer_type= one of \['full_attention', "):
        rr.Rope.from_hf_config(cfg)
    assert rr.Rope.from_hf_config(cfg, layer_type="full_attention") == rr.Rope(
        256, base=1e6, scaling=S.Linear(8.0)
    )
    assert rr.Rope.from_hf_config(cfg, layer_type="sliding_attention") == rr.Rope(256, base=1e4)
    with pytest.raises(ValueError, match="layer_type 'global' is not in"):
        rr.Rope.from_hf_config(cfg, layer_type="global")


def test_gemma3_v4_local_base():
    cfg = {
        "model_type": "gemma3_text",
        "head_dim": 256,
        "rope_theta": 1e6,
        "rope_local_base_freq": 1e4,
        "rope_scaling": {"rope_type": "linear", "factor": 8.0},
    }
    with pytest.raises(ValueError, match="rope_local_base_freq"):
        rr.Rope.from_hf_config(cfg)
    local = rr.Rope.from_hf_config(cfg, layer_type="sliding_attention")
    assert local == rr.Rope(256, base=1e4)
    assert "rope_scaling.factor" in local.explain().split("present but not used")[1]


def test_partial_rotary_forms():
    neox = {
        "model_type": "gpt_neox",
        "hidden_size": 6144,
        "num_attention_heads": 64,
        "rotary_pct": 0.25,
        "rotary_emb_base": 10000,
    }
    assert rr.Rope.from_hf_config(neox) == rr.Rope(96, rotary_dim=24)
    gptj = {
        "model_type": "gptj",
        "n_embd": 4096,
        "n_head": 16,
        "rotary_dim": 64,
        "n_positions": 2048,
    }
    assert rr.Rope.from_hf_config(gptj) == rr.Rope(256, rotary_dim=64, layout="interleaved")
    phi = {"hidden_size": 2560, "num_attention_heads": 32, "partial_rotary_factor": 0.4}
    assert rr.Rope.from_hf_config(phi).rotary_dim == 32  # int(80 * 0.4)


def test_deepseek_v3():
    cfg = {
        "model_type": "deepseek_v3",
        "hidden_size": 7168,
        "num_attention_heads": 128,
        "qk_rope_head_dim": 64,
        "qk_nope_head_dim": 128,
        "max_position_embeddings": 163840,
        "rope_theta": 10000,
        "rope_scaling": {
            "beta_fast": 32,
            "beta_slow": 1,
            "factor": 40,
            "mscale": 1.0,
            "mscale_all_dim": 1.0,
            "original_max_position_embeddings": 4096,
            "type": "yarn",
        },
    }
    r = rr.Rope.from_hf_config(cfg)
    assert r.head_dim == 64 and r.layout == "interleaved"
    assert r.scaling == S.YaRN(
        40.0, 4096, beta_fast=32.0, beta_slow=1.0, mscale=1.0, mscale_all_dim=1.0
    )
    assert r.attention_factor == 1.0


def test_qwen2_vl_mrope_and_text_config():
    cfg = {
        "model_type": "qwen2_vl",
        "hidden_size": 3584,
        "num_attention_heads": 28,
        "rope_theta": 1e6,
        "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
    }
    assert rr.Rope.from_hf_config(cfg).scaling == S.MRope((16, 24, 24))
    wrapped = {
        "model_type": "qwen3_vl",
        "text_config": {
            "head_dim": 128,
            "rope_theta": 5e6,
            "rope_scaling": {
                "rope_type": "default",
                "mrope_section": [24, 20, 20],
                "mrope_interleaved": True,
            },
        },
    }
    r = rr.Rope.from_hf_config(wrapped)
    assert r == rr.Rope(128, base=5e6, scaling=S.MRope((24, 20, 20), interleaved=True))
    assert "text_config" in r.explain()


def test_yarn_factor_from_lengths_and_unused_keys():
    cfg = {
        "head_dim": 64,
        "max_position_embeddings": 131072,
        "rope_theta": 150000,
        "rope_scaling": {
            "rope_type": "yarn",
            "original_max_position_embeddings": 4096,
            "factor": 32.0,
            "beta_fast": 32.0,
            "beta_slow": 1.0,
            "truncate": False,
            "swa_only": True,
        },
    }
    r = rr.Rope.from_hf_config(cfg)
    assert r.scaling == S.YaRN(32.0, 4096, truncate=False)
    assert "rope_scaling.swa_only = True" in r.explain()
    cfg2 = {
        "head_dim": 64,
        "max_position_embeddings": 131072,
        "rope_scaling": {"rope_type": "yarn", "original_max_position_embeddings": 32768},
    }
    # transformers 5 raises KeyError without `factor`: the reference refuses too (no guess)
    with pytest.raises(rr.RopeValueError, match=r"rope_scaling\.factor is required for .*'yarn'"):
        rr.Rope.from_hf_config(cfg2)


def test_config_rope_matches_direct_rope_numerically():
    r = rr.Rope.from_hf_config(LLAMA31)
    pos = np.arange(0, 200_000, 997)
    np.testing.assert_array_equal(
        r.cos_sin(pos)[0], rr.Rope(128, base=5e5, scaling=S.Llama3(8, 1, 4, 8192)).cos_sin(pos)[0]
    )


BAD = [
    (
        {
            "hidden_size": 512,
            "num_attention_heads": 8,
            "rope_scaling": {"rope_type": "ntk-by-parts", "factor": 2.0},
        },
        ValueError,
        r"rope_type 'ntk-by-parts' is not supported; accepted: \['default'",
    ),
    (
        {"hidden_size": 512, "num_attention_heads": 8, "rope_scaling": {"rope_type": "linear"}},
        ValueError,
        r"rope_scaling.factor is required for rope_type 'linear'",
    ),
    (
        {
            "hidden_size": 512,
            "num_attention_heads": 8,
            "rope_scaling": {"rope_type": "linear", "factor": 0},
        },
        ValueError,
        "rope_scaling.factor must be a finite number > 0",
    ),
    (
        {
            "hidden_size": 512,
            "num_attention_heads": 8,
            "rope_scaling": {"rope_type": "linear", "factor": -2.0},
        },
        ValueError,
        "rope_scaling.factor must be a finite number > 0",
    ),
    (
        {
            "hidden_size": 512,
            "num_attention_heads": 8,
            "rope_scaling": {"rope_type": "linear", "factor": "8"},
        },
        TypeError,
        "rope_scaling.factor must be a number",
    ),
    (
        {"hidden_size": 512, "num_attention_heads": 8, "rope_theta": "1e4"},
        TypeError,
        "rope_theta must be a number",
    ),
    (
        {"hidden_size": 512, "num_attention_heads": 8, "rope_theta": -1.0},
        ValueError,
        "rope_theta must be a finite number > 0",
    ),
    ({"hidden_size": 512}, ValueError, "head_dim is missing"),
    ({"hidden_size": 500, "num_attention_heads": 8}, ValueError, "not a multiple of"),
    ({"head_dim": 64.5}, TypeError, "head_dim must be an integer"),
    (
        {"hidden_size": 512, "num_attention_heads": 8, "rope_scaling": "linear"},
        TypeError,
        "rope_scaling must be a dict",
    ),
    (
        {"hidden_size": 512, "num_attention_heads": 8, "rope_scaling": {"rope_type": 3}},
        TypeError,
        "rope_type must be a string",
    ),
    (
        {
            "hidden_size": 512,
            "num_attention_heads": 8,
            "max_position_embeddings": 4096,
            "rope_scaling": {
                "rope_type": "longrope",
                "short_factor": [1.0] * 31,
                "long_factor": [1.0] * 32,
            },
        },
        ValueError,
        "short_factor has 31 values; expected rotary_dim // 2 = 32",
    ),
    (
        {
            "hidden_size": 512,
            "num_attention_heads": 8,
            "rope_scaling": {"rope_type": "longrope", "short_factor": [1.0] * 32},
        },
        ValueError,
        "long_factor is required",
    ),
    (
        {
            "hidden_size": 512,
            "num_attention_heads": 8,
            "rope_scaling": {
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "original_max_position_embeddings": 8192,
            },
        },
        ValueError,
        "high_freq_factor is required for rope_type 'llama3'",
    ),
    (
        {
            "hidden_size": 512,
            "num_attention_heads": 8,
            "rope_scaling": {"rope_type": "yarn", "factor": 4.0},
        },
        ValueError,
        "original_max_position_embeddings is required",
    ),
    (
        {
            "hidden_size": 512,
            "num_attention_heads": 8,
            "rope_scaling": {"rope_type": "dynamic", "factor": 4.0},
        },
        ValueError,
        "max_position_embeddings is required for rope_type 'dynamic'",
    ),
    (
        {
            "hidden_size": 512,
            "num_attention_heads": 8,
            "max_position_embeddings": 4096,
            "rope_scaling": {"rope_type": "yarn", "factor": 4.0, "truncate": "no"},
        },
        TypeError,
        "truncate must be true or false",
    ),
    (
        {"hidden_size": 512, "num_attention_heads": 8, "partial_rotary_factor": 1.5},
        ValueError,
        "partial_rotary_factor must be <= 1",
    ),
    (
        {
            "hidden_size": 512,
            "num_attention_heads": 8,
            "rope_scaling": {"rope_type": "default", "mrope_section": [10, 10, 10]},
        },
        ValueError,
        r"rope_scaling\.mrope_section \[10, 10, 10\] sums to 30; expected rotary_dim // 2 = 32",
    ),
    (
        {"hidden_size": 512, "num_attention_heads": 8, "rope_parameters": [1, 2]},
        TypeError,
        "rope_parameters must be a dict",
    ),
    (42, TypeError, "config must be a dict"),
]


@pytest.mark.parametrize(("cfg", "kind", "match"), BAD, ids=[f"bad{i}" for i in range(len(BAD))])
def test_bad_configs(cfg, kind, match):
    with pytest.raises(kind, match=match) as info:
        rr.Rope.from_hf_config(cfg)
    assert isinstance(info.value, rr.RopeError)


def test_preset_layer_type_is_checked_against_the_preset():
    # Rope.preset passes layer_type to load_preset: a layer type the preset does not have is
    # an error, not a silently built other layer
    with pytest.raises(rr.RopeValueError, match=r"'sliding_attention' is not one of preset"):
        rr.Rope.preset("gemma-3-global", layer_type="sliding_attention")
    local = rr.Rope.preset("gemma-3", layer_type="sliding_attention")
    full = rr.Rope.preset("gemma-3", layer_type="full_attention")
    assert (local.base, local.scaling) == (10_000.0, None)
    assert full.base == 1e6 and full.scaling == rr.scaling.Linear(8.0)


def test_deepseek_rope_placed_on_the_full_head():
    # from_hf_config reads the qk_rope_head_dim-wide rope; dataclasses.replace places it on the
    # trailing channels of the qk_nope_head_dim + qk_rope_head_dim head (docs/mla.md)
    import dataclasses

    cfg = {
        "model_type": "deepseek_v3",
        "qk_rope_head_dim": 64,
        "qk_nope_head_dim": 128,
        "rope_theta": 10000.0,
        "rope_interleave": True,
        "max_position_embeddings": 4096,
    }
    rope = rr.Rope.from_hf_config(cfg)
    assert (rope.head_dim, rope.rotary_dim, rope.rotary_offset) == (64, 64, 0)
    full = dataclasses.replace(rope, head_dim=192, rotary_offset=128)
    assert (full.rotary_dim, full.layout, full.thetas()) == (64, "interleaved", rope.thetas())
    x = np.random.default_rng(0).standard_normal((3, 192))
    y = rr.apply_rope(x, np.arange(3), full)
    np.testing.assert_array_equal(y[:, 128:], rr.apply_rope(x[:, 128:], np.arange(3), rope))
    np.testing.assert_array_equal(y[:, :128], x[:, :128])
