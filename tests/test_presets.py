"""Named presets: every stored real-model config loads, and matches facts published elsewhere."""

from __future__ import annotations

import math

import numpy as np
import pytest

import rope_ref as rr
from rope_ref import scaling as S
from rope_ref._presets import load_preset, preset_default_layer, preset_layer_types

NAMES = rr.presets()


def test_at_least_twelve_presets_with_sources():
    assert len(NAMES) >= 12
    for name in NAMES:
        info = rr.preset_info(name)
        assert info["hf_id"] and info["source"], name


@pytest.mark.parametrize("name", NAMES)
def test_every_preset_loads_and_rotates(name):
    rope = rr.Rope.preset(name)  # per-layer models build their default layer type
    assert isinstance(rope, rr.Rope)
    assert rope.explain().startswith("Rope(")
    pos = np.arange(16)
    if isinstance(rope.scaling, S.MRope):
        pos = np.stack([pos] * rope.scaling.n_axes)
    x = np.random.default_rng(0).standard_normal((16, rope.head_dim))
    y = rr.apply_rope(x, pos, rope)
    r = rope.rotary_dim
    # the rotated part keeps its norm times the attention factor; the rest passes through
    norms = np.linalg.norm(y[:, :r], axis=-1) / np.linalg.norm(x[:, :r], axis=-1)
    np.testing.assert_allclose(norms, rope.attention_factor, rtol=1e-14)
    np.testing.assert_array_equal(y[:, r:], x[:, r:])


# Facts from the model cards, the papers and the issue text (independent of the data file).
def test_llama_family():
    assert rr.Rope.preset("llama-2-7b") == rr.Rope(128, base=10_000.0)
    assert rr.Rope.preset("llama-3.1-8b") == rr.Rope(
        128, base=500_000.0, scaling=S.Llama3(8.0, 1.0, 4.0, 8192)
    )
    assert rr.Rope.preset("llama-3.2-1b") == rr.Rope(
        64, base=500_000.0, scaling=S.Llama3(32.0, 1.0, 4.0, 8192)
    )
    scout = rr.Rope.preset("llama-4-scout")
    assert scout.layout == "interleaved" and scout.scaling == S.Llama3(16.0, 1.0, 1.0, 8192)


def test_partial_and_interleaved_classics():
    assert rr.Rope.preset("gpt-neox-20b") == rr.Rope(96, rotary_dim=24)  # rotary_pct 0.25
    assert rr.Rope.preset("gpt-j-6b") == rr.Rope(256, rotary_dim=64, layout="interleaved")


def test_long_context_schedules():
    q = rr.Rope.preset("qwen2.5-7b-yarn")
    assert q.base == 1e6 and q.scaling.factor == 4.0
    assert q.scaling.original_max_position_embeddings == 32768
    ds = rr.Rope.preset("deepseek-v3")
    assert (ds.head_dim, ds.layout) == (64, "interleaved")
    assert ds.scaling.factor == 40.0 and ds.attention_factor == 1.0
    phi = rr.Rope.preset("phi-3-mini-128k")
    assert isinstance(phi.scaling, S.LongRoPE) and len(phi.scaling.long_factor) == 48
    # sqrt(1 + ln 32 / ln 4096) (docs/scaling/longrope.md: Phi-3-mini-128k attention factor 1.1902)
    assert abs(phi.attention_factor - math.sqrt(1 + math.log(32) / math.log(4096))) < 1e-15
    short, long = phi.inv_freq(seq_len=4096), phi.inv_freq(seq_len=4097)
    assert not np.array_equal(short, long)


def test_multimodal_and_layer_types():
    assert rr.Rope.preset("qwen2-vl-7b").scaling == S.MRope((16, 24, 24))
    assert rr.Rope.preset("qwen3-vl").scaling == S.MRope((24, 20, 20), interleaved=True)
    assert rr.Rope.preset("gemma-3-global") == rr.Rope(256, base=1e6, scaling=S.Linear(8.0))
    assert rr.Rope.preset("gemma-3-local") == rr.Rope(256, base=1e4)
    # gemma-3 is per-layer data: its default layer type is the global one, and it says so
    info = rr.preset_info("gemma-3")
    assert info["layer_types"] == ["full_attention", "sliding_attention"]
    assert info["layer_type"] == "full_attention" and "default layer_type" in info["note"]
    assert preset_layer_types("gemma-3") == ("full_attention", "sliding_attention")
    assert preset_default_layer("gemma-3") == "full_attention"
    assert preset_layer_types("llama-2-7b") == () and preset_default_layer("llama-2-7b") is None
    assert rr.Rope.preset("gemma-3") == rr.Rope(256, base=1e6, scaling=S.Linear(8.0))
    # class defaults filled in are notes, never "present but not used"
    text = rr.Rope.preset("gemma-3").explain()
    assert "rope_local_base_freq = 10000.0 is the transformers default" in text
    assert "rope_local_base_freq" not in text.split("present but not used:")[1].split("notes:")[0]
    assert rr.Rope.preset("gemma-3", layer_type="sliding_attention") == rr.Rope(256, base=1e4)
    with pytest.raises(rr.RopeValueError, match="layer_type 'global' is not one of preset"):
        load_preset("gemma-3", layer_type="global")
    config, layer = load_preset("gemma-3", layer_type="sliding_attention")
    assert layer == "sliding_attention" and "text_config" in config


def test_preset_info_is_a_copy():
    info = rr.preset_info("llama-3.1-8b")
    info["config"]["rope_theta"] = 1.0
    info["config"]["rope_scaling"]["factor"] = 99.0
    assert rr.Rope.preset("llama-3.1-8b").base == 500_000.0
    assert rr.preset_info("llama-3.1-8b")["config"]["rope_scaling"]["factor"] == 8.0


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown preset 'llama-9'; accepted"):
        rr.Rope.preset("llama-9")
