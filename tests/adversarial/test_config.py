"""Hostile configs for Rope.from_hf_config (issue 13): each is a typed error naming the key
as the user wrote it, what was given and what was expected, or a correct Rope."""

from __future__ import annotations

import re

import numpy as np
import pytest

import rope_ref as rr
from rope_ref import scaling as S

BASE = {"hidden_size": 512, "num_attention_heads": 8, "max_position_embeddings": 4096}


def _raises(cfg, kind, pattern, **kw):
    with pytest.raises(kind, match=pattern) as info:
        rr.Rope.from_hf_config(cfg, **kw)
    assert isinstance(info.value, rr.RopeError)
    return str(info.value)


# ---------------------------------------------------------------- structure of the config
def test_int_keys_in_rope_scaling():
    cfg = {**BASE, "rope_scaling": {1: 2, "rope_type": "linear", "factor": 2.0}}
    _raises(cfg, rr.RopeTypeError, r"^rope_scaling keys must be strings, got the key int 1$")


def test_int_keys_at_top_level_and_in_text_config():
    _raises({**BASE, 7: "x"}, rr.RopeTypeError, "config keys must be strings")
    cfg = {"model_type": "qwen3_vl", "text_config": {"head_dim": 64, 3.5: 1}}
    _raises(cfg, rr.RopeTypeError, "text_config keys must be strings, got the key float 3.5")


@pytest.mark.parametrize("model_type", [["llama"], {"a": 1}, 3, 1.5])
def test_model_type_not_a_string(model_type):
    msg = _raises({**BASE, "model_type": model_type}, rr.RopeTypeError, "^model_type must be")
    assert type(model_type).__name__ in msg


def test_model_type_not_a_string_inside_text_config():
    cfg = {"text_config": {"model_type": ["x"], "head_dim": 64}}
    _raises(cfg, rr.RopeTypeError, r"^text_config\.model_type must be a string, got list")


def test_mixed_int_and_str_layer_keys():
    cfg = {
        **BASE,
        "rope_parameters": {
            1: {"rope_type": "default"},
            "full_attention": {"rope_type": "default"},
        },
    }
    _raises(cfg, rr.RopeTypeError, "rope_parameters keys must be strings, got the key int 1")


@pytest.mark.parametrize("layer_type", [["full_attention"], {"a": 1}, 3])
def test_unhashable_or_non_string_layer_type(layer_type):
    cfg = {
        **BASE,
        "rope_parameters": {
            "full_attention": {"rope_type": "default"},
            "sliding_attention": {"rope_type": "default", "rope_theta": 100.0},
        },
    }
    _raises(cfg, rr.RopeTypeError, "^layer_type must be a string or None", layer_type=layer_type)


def test_null_layer_parameters_mean_no_rope():
    cfg = {**BASE, "rope_parameters": {"full_attention": {"rope_type": "default"}, "nope": None}}
    assert rr.Rope.from_hf_config(cfg, layer_type="full_attention") == rr.Rope(64)
    _raises(cfg, rr.RopeValueError, r"rope_parameters\.nope is null", layer_type="nope")


def test_layer_type_checked_against_declared_layer_types():
    cfg = {**BASE, "layer_types": ["sliding_attention", "full_attention"]}
    r = rr.Rope.from_hf_config(cfg, layer_type="sliding_attention")
    assert r == rr.Rope(64) and "one RoPE for every layer type" in r.explain()
    _raises(
        cfg, rr.RopeValueError, "layer_type 'global' is not in layer_types", layer_type="global"
    )


# ---------------------------------------------------------------- numbers
def test_rope_theta_too_large_for_a_float():
    msg = _raises(
        {**BASE, "rope_theta": 10**400},
        rr.RopeValueError,
        r"^rope_theta must be a finite number > 0, got int 1000",
    )
    assert len(msg) < 200  # the 401-digit value is shortened


def test_rope_theta_beyond_the_int_str_limit():
    _raises({**BASE, "rope_theta": 10**5000}, rr.RopeValueError, "-bit integer")


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1.0, 0])
def test_rope_theta_not_finite_positive(value):
    _raises({**BASE, "rope_theta": value}, rr.RopeValueError, "rope_theta must be a finite number")


def test_head_dim_validated_up_front_and_fast():
    import tracemalloc

    tracemalloc.start()
    _raises({"head_dim": 1e12}, rr.RopeValueError, r"^head_dim must be at most 16384, got float")
    _raises({"head_dim": 64.5}, rr.RopeTypeError, "head_dim must be an integer, got float 64.5")
    _raises({"head_dim": float("nan")}, rr.RopeTypeError, "head_dim must be an integer")
    _raises({"head_dim": -64}, rr.RopeValueError, "head_dim must be a positive integer")
    _raises({"head_dim": True}, rr.RopeTypeError, "head_dim must be an integer, got bool")
    cfg = {"hidden_size": 10**13, "num_attention_heads": 1}
    _raises(cfg, rr.RopeValueError, r"head_dim = hidden_size // num_attention_heads = 1\d+ is too")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 8 * 2**20  # no table is built before the sizes are checked
    # an integral float is an integer (JSON writers emit 64.0)
    assert rr.Rope.from_hf_config({"head_dim": 64.0}) == rr.Rope(64)


def test_context_lengths_bounded():
    cfg = {
        **BASE,
        "max_position_embeddings": 2**60,
        "rope_scaling": {"rope_type": "dynamic", "factor": 2.0},
    }
    _raises(cfg, rr.RopeValueError, rf"^max_position_embeddings must be at most {2**53}, got int")


def test_numpy_scalars_read_like_python_numbers():
    cfg = {
        "head_dim": np.int64(128),
        "max_position_embeddings": np.int32(131072),
        "rope_theta": np.float32(500000.0),
        "rope_scaling": {
            "rope_type": "llama3",
            "factor": np.float64(8.0),
            "low_freq_factor": np.int64(1),
            "high_freq_factor": np.float32(4.0),
            "original_max_position_embeddings": np.int64(8192),
        },
    }
    assert rr.Rope.from_hf_config(cfg) == rr.Rope(
        128, base=5e5, scaling=S.Llama3(8.0, 1.0, 4.0, 8192)
    )
    yarn = {
        "head_dim": 64,
        "rope_scaling": {
            "rope_type": "yarn",
            "factor": np.float32(4.0),
            "original_max_position_embeddings": np.int64(4096),
            "truncate": np.bool_(False),
        },
    }
    assert rr.Rope.from_hf_config(yarn).scaling == S.YaRN(4.0, 4096, truncate=False)


def test_bool_is_not_a_number():
    cfg = {**BASE, "rope_scaling": {"rope_type": "linear", "factor": True}}
    _raises(cfg, rr.RopeTypeError, r"^rope_scaling\.factor must be a number, got bool True")


# ---------------------------------------------------------------- booleans
@pytest.mark.parametrize("value", ["false", "true", "False", 0, 1, 1.0, [True]])
def test_string_or_int_booleans_rejected_mrope(value):
    cfg = {
        **BASE,
        "rope_scaling": {
            "rope_type": "default",
            "mrope_section": [8, 12, 12],
            "mrope_interleaved": value,
        },
    }
    _raises(
        cfg,
        rr.RopeTypeError,
        r"^rope_scaling\.mrope_interleaved must be true or false \(a JSON boolean\), got",
    )


def test_real_booleans_read_mrope():
    for flag in (False, True, np.bool_(True)):
        cfg = {
            **BASE,
            "rope_scaling": {
                "rope_type": "default",
                "mrope_section": [8, 12, 12],
                "mrope_interleaved": flag,
            },
        }
        assert rr.Rope.from_hf_config(cfg).scaling == S.MRope((8, 12, 12), interleaved=bool(flag))


def test_string_boolean_rejected_rope_interleave():
    cfg = {**BASE, "model_type": "deepseek_v3", "rope_interleave": "false"}
    _raises(cfg, rr.RopeTypeError, r"^rope_interleave must be true or false .*got str 'false'")
    cfg["rope_interleave"] = False
    assert rr.Rope.from_hf_config(cfg).layout == "half"
    cfg["rope_interleave"] = True
    assert rr.Rope.from_hf_config(cfg).layout == "interleaved"


def test_string_boolean_rejected_truncate():
    cfg = {**BASE, "rope_scaling": {"rope_type": "yarn", "factor": 4.0, "truncate": "false"}}
    _raises(cfg, rr.RopeTypeError, r"rope_scaling\.truncate must be true or false")


# ---------------------------------------------------------------- schedules
def test_yarn_without_factor_raises_like_transformers():
    cfg = {**BASE, "rope_scaling": {"rope_type": "yarn", "original_max_position_embeddings": 1024}}
    _raises(cfg, rr.RopeValueError, r"^rope_scaling\.factor is required for rope_type 'yarn'")
    cfg["rope_scaling"]["factor"] = None  # transformers infers with a warning: we refuse
    _raises(cfg, rr.RopeValueError, r"^rope_scaling\.factor is required")


def test_longrope_original_max_one():
    scal = {
        "rope_type": "longrope",
        "short_factor": [1.0] * 32,
        "long_factor": [1.0] * 32,
        "original_max_position_embeddings": 1,
    }
    _raises(
        {**BASE, "rope_scaling": scal},
        rr.RopeValueError,
        r"^rope_scaling\.original_max_position_embeddings must be >= 2 for rope_type 'longrope'",
    )
    # with an explicit attention factor nothing divides by ln 1: a valid rope
    scal = {**scal, "attention_factor": 1.25}
    r = rr.Rope.from_hf_config({**BASE, "rope_scaling": scal})
    assert r.attention_factor == 1.25 and r.scaling.factor == 4096.0


def test_longrope_factor_inferred_like_transformers():
    # transformers 5 infers max / original max for LongRoPE (Phi-3), and so do we
    scal = {
        "rope_type": "longrope",
        "short_factor": [1.0] * 32,
        "long_factor": [2.0] * 32,
        "original_max_position_embeddings": 1024,
    }
    r = rr.Rope.from_hf_config({**BASE, "rope_scaling": scal})
    assert r.scaling.factor == 4096 / 1024
    assert "rope_scaling.factor = 4.0" in r.explain().split("defaults applied")[1]


def test_longrope_factor_list_entries_named():
    scal = {"rope_type": "longrope", "short_factor": [1.0] * 31 + ["x"], "long_factor": [1.0] * 32}
    _raises(
        {**BASE, "rope_scaling": scal},
        rr.RopeTypeError,
        r"^rope_scaling\.short_factor\[31\] must be a number, got str 'x'",
    )
    scal["short_factor"] = [1.0] * 31 + [-1.0]
    _raises(
        {**BASE, "rope_scaling": scal},
        rr.RopeValueError,
        r"^rope_scaling\.short_factor\[31\] must be a finite number > 0",
    )


def test_llama3_and_yarn_cross_key_constraints_named():
    ll = {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 4.0,
        "high_freq_factor": 1.0,
        "original_max_position_embeddings": 8192,
    }
    _raises(
        {**BASE, "rope_scaling": ll},
        rr.RopeValueError,
        r"^rope_scaling\.high_freq_factor \(1\.0\) must be >= rope_scaling\.low_freq_factor",
    )
    ya = {"rope_type": "yarn", "factor": 4.0, "beta_fast": 1.0, "beta_slow": 8.0}
    _raises(
        {**BASE, "rope_scaling": ya},
        rr.RopeValueError,
        r"^rope_scaling\.beta_fast \(1\.0\) must be >= rope_scaling\.beta_slow",
    )
    ya = {"rope_type": "yarn", "factor": 4.0, "mscale": -1.0}
    _raises({**BASE, "rope_scaling": ya}, rr.RopeValueError, r"^rope_scaling\.mscale must be >= 0")
    ya = {"rope_type": "yarn", "factor": 4.0, "attention_factor": 0.0}
    _raises(
        {**BASE, "rope_scaling": ya},
        rr.RopeValueError,
        r"^rope_scaling\.attention_factor must be a finite number > 0",
    )


def test_yarn_zero_betas_mean_defaults_like_transformers():
    ya = {"rope_type": "yarn", "factor": 4.0, "beta_fast": 0, "beta_slow": 0}
    r = rr.Rope.from_hf_config({**BASE, "rope_scaling": ya})
    assert r.scaling == S.YaRN(4.0, 4096, beta_fast=32.0, beta_slow=1.0)


# ---------------------------------------------------------------- messages name the key
def test_mrope_section_named_as_written():
    cfg = {**BASE, "rope_scaling": {"rope_type": "default", "mrope_section": [8, 12, 13]}}
    msg = _raises(cfg, rr.RopeValueError, r"^rope_scaling\.mrope_section \[8, 12, 13\] sums to 33")
    assert "MRope" not in msg
    wrapped = {"text_config": {"head_dim": 64, "rope_scaling": {"mrope_section": [1, "a"]}}}
    _raises(
        wrapped,
        rr.RopeTypeError,
        r"^text_config\.rope_scaling\.mrope_section\[1\] must be an integer, got str 'a'",
    )
    wrapped["text_config"]["rope_scaling"]["mrope_section"] = "8,12,12"
    _raises(wrapped, rr.RopeTypeError, r"^text_config\.rope_scaling\.mrope_section must be a list")


def test_partial_factor_named_not_rotary_dim_zero():
    msg = _raises(
        {**BASE, "partial_rotary_factor": 0.01},
        rr.RopeValueError,
        r"^partial_rotary_factor = 0\.01 gives int\(64 \* 0\.01\) = 0 rotating",
    )
    assert "rotary_dim must be" not in msg
    _raises(
        {**BASE, "partial_rotary_factor": 0.3},
        rr.RopeValueError,
        r"^partial_rotary_factor = 0\.3 gives int\(64 \* 0\.3\) = 19 ",
    )
    _raises(
        {**BASE, "partial_rotary_factor": 0},
        rr.RopeValueError,
        r"^partial_rotary_factor must be a finite number > 0",
    )


def test_rotary_pct_reported_as_rotary_pct():
    msg = _raises({**BASE, "rotary_pct": 2}, rr.RopeValueError, r"^rotary_pct must be <= 1, got 2")
    assert "partial_rotary_factor" not in msg
    _raises({**BASE, "rotary_pct": 0.01}, rr.RopeValueError, r"^rotary_pct = 0\.01 gives")


def test_rotary_dim_named():
    _raises({**BASE, "rotary_dim": 65}, rr.RopeValueError, r"^rotary_dim must be at most 64")
    _raises({**BASE, "rotary_dim": 31}, rr.RopeValueError, r"^rotary_dim must be even")


def test_odd_head_dim_named_by_its_source():
    _raises(
        {"hidden_size": 630, "num_attention_heads": 10},
        rr.RopeValueError,
        r"^hidden_size // num_attention_heads = 63 is odd",
    )


def test_schedule_errors_from_the_scaling_classes_name_the_dict():
    # a per-layer config: the path to the dict is in every message
    cfg = {**BASE, "rope_parameters": {"full_attention": {"rope_type": "linear", "factor": -1}}}
    _raises(
        cfg,
        rr.RopeValueError,
        r"^rope_parameters\.full_attention\.factor must be a finite number > 0",
        layer_type="full_attention",
    )


def test_dynamic_variant_checked():
    cfg = {**BASE, "rope_scaling": {"rope_type": "dynamic", "factor": 2.0}}
    _raises(cfg, rr.RopeValueError, "^dynamic_variant must be one of", dynamic_variant="x")
    assert rr.Rope.from_hf_config(cfg, dynamic_variant="vllm").scaling == S.DynamicNTK(
        2.0, 4096, variant="vllm"
    )


def test_errors_are_value_or_type_errors():
    # catchable by the builtin families too
    with pytest.raises(ValueError):
        rr.Rope.from_hf_config({**BASE, "rope_theta": -1})
    with pytest.raises(TypeError):
        rr.Rope.from_hf_config({**BASE, "rope_theta": "1e4"})


def test_explain_names_keys_as_written():
    cfg = {
        "model_type": "qwen3_vl",
        "text_config": {
            "head_dim": 128,
            "rope_theta": 5e6,
            "extra_key": 1,
            "rope_scaling": {
                "rope_type": "default",
                "mrope_section": [24, 20, 20],
                "mrope_interleaved": True,
                "unknown": 3,
            },
        },
    }
    text = rr.Rope.from_hf_config(cfg).explain()
    used = text.split("used:")[1].split("present but not used")[0]
    assert "text_config.rope_scaling.mrope_section = [24, 20, 20]" in used
    assert "text_config.rope_scaling.mrope_interleaved = True" in used
    unused = text.split("present but not used:")[1]
    assert re.search(r"text_config\.rope_scaling\.unknown = 3", unused)


def test_deeply_nested_values_in_messages_and_explain():
    deep = []
    for _ in range(100_000):
        deep = [deep]
    _raises(
        {"head_dim": 64, "rope_theta": deep},
        rr.RopeTypeError,
        "rope_theta must be a number, got list <nested too deeply to show>",
    )
    r = rr.Rope.from_hf_config({"head_dim": 64, "rope_scaling": {"junk": deep}})
    assert "rope_scaling.junk = <nested too deeply to show>" in r.explain()
