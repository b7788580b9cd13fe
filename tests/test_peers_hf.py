"""Hugging Face transformers as a peer: inv_freq, attention factor and cos/sin for every
rope type it has, on realistic configs (run by the `peers` tox env and the README command).

transformers computes its tables in float32, so every comparison carries a tolerance from the
error model (docs/accuracy.md): inv_freq within a few float32 ulps, cos/sin within the phase of
HF's own float32 inv_freq and product at each position (under 4 * M * theta_1 * 2**-24 below
M) plus a few ulps, times the attention factor: bounds that hold whatever CPU path torch takes.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

import rope_ref as rr

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

from transformers import LlamaConfig  # noqa: E402
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS  # noqa: E402
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding  # noqa: E402

F32 = 2.0**-24
BASE = {
    "hidden_size": 4096,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "max_position_embeddings": 131072,
}

CASES = {
    "default": {"rope_theta": 500000.0},
    "linear": {"rope_theta": 10000.0, "rope_scaling": {"rope_type": "linear", "factor": 4.0}},
    "dynamic": {
        "rope_theta": 10000.0,
        "max_position_embeddings": 4096,
        "rope_scaling": {"rope_type": "dynamic", "factor": 2.0},
    },
    "yarn": {
        "rope_theta": 1e6,
        "max_position_embeddings": 131072,
        "rope_scaling": {
            "rope_type": "yarn",
            "factor": 4.0,
            "original_max_position_embeddings": 32768,
        },
    },
    "yarn-untruncated": {
        "rope_theta": 150000.0,
        "head_dim": 64,
        "rope_scaling": {
            "rope_type": "yarn",
            "factor": 32.0,
            "original_max_position_embeddings": 4096,
            "beta_fast": 32.0,
            "beta_slow": 1.0,
            "truncate": False,
        },
    },
    "yarn-mscale": {
        "rope_theta": 10000.0,
        "head_dim": 64,
        "max_position_embeddings": 163840,
        "rope_scaling": {
            "rope_type": "yarn",
            "factor": 40.0,
            "mscale": 0.707,
            "mscale_all_dim": 1.0,
            "original_max_position_embeddings": 4096,
        },
    },
    "llama3": {
        "rope_theta": 500000.0,
        "rope_scaling": {
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        },
    },
    "llama4-equal-factors": {
        "rope_theta": 500000.0,
        "rope_scaling": {
            "rope_type": "llama3",
            "factor": 16.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 1.0,
            "original_max_position_embeddings": 8192,
        },
    },
    "longrope": {
        "rope_theta": 10000.0,
        "hidden_size": 3072,
        "num_attention_heads": 32,
        "original_max_position_embeddings": 4096,
        "rope_scaling": {
            "rope_type": "longrope",
            "short_factor": [1.0 + 0.02 * j for j in range(48)],
            "long_factor": [1.0 + 0.9 * j for j in range(48)],
        },
    },
}


def hf_config(case):
    cfg = dict(BASE)
    cfg.update(copy.deepcopy(CASES[case]))
    return cfg


def hf_tables(cfg, seq_len=None):
    config = LlamaConfig(**cfg)
    rope_type = config.rope_parameters.get("rope_type", "default")
    if rope_type == "default":
        emb = LlamaRotaryEmbedding(config)
        return emb.inv_freq.double().numpy(), float(emb.attention_scaling), config
    inv, att = ROPE_INIT_FUNCTIONS[rope_type](config, "cpu", seq_len=seq_len)
    return inv.double().numpy(), float(att), config


@pytest.mark.parametrize("case", list(CASES))
def test_inv_freq_and_attention_factor_match_hf(case):
    cfg = hf_config(case)
    seq_lens = [None]
    if case == "dynamic":
        seq_lens = [None, 4096, 10000, 50000]
    if case == "longrope":
        seq_lens = [None, 4096, 4097, 100000]
    rope = rr.Rope.from_hf_config(cfg)
    for seq_len in seq_lens:
        inv_hf, att_hf, _ = hf_tables(cfg, seq_len)
        ours = rope.inv_freq(seq_len=seq_len)
        # HF: float32 pow and blend (a few float32 ulps; up to ~16 where YaRN's 1 - ramp
        # cancels), our value is exact rounded to float64
        np.testing.assert_allclose(ours, inv_hf, rtol=16 * F32, atol=0, err_msg=str(seq_len))
        # HF's attention factor is float64 Python arithmetic: within a couple of ulps
        assert abs(rope._attention_factor(seq_len) - att_hf) <= 4e-16 * att_hf


@pytest.mark.parametrize("case", ["default", "llama3", "yarn"])
def test_cos_sin_match_hf_within_float32_model(case):
    cfg = hf_config(case)
    rope = rr.Rope.from_hf_config(cfg)
    emb = LlamaRotaryEmbedding(LlamaConfig(**cfg))
    big_m = 1 << 17
    pos = np.unique(
        np.concatenate([np.arange(64), np.random.default_rng(0).integers(0, big_m, 400)])
    )
    x = torch.zeros(1, pos.size, rope.head_dim)
    cos_hf, sin_hf = emb(x, torch.from_numpy(pos)[None])
    cos_hf = cos_hf[0].double().numpy()[:, : rope.rotary_dim // 2]
    sin_hf = sin_hf[0].double().numpy()[:, : rope.rotary_dim // 2]
    cos, sin = rope.cos_sin(pos)
    # HF's error is its float32 phase: m times its float32 inv_freq's error plus the float32
    # product's rounding (at most m * inv_hf * 2**-24), then float32 cos/sin, the attention
    # factor and the float32 store (a few ulps: 4 * 2**-24). Bounded per element with HF's
    # own inv_freq, so the bound holds whatever CPU path torch's pow and cos take.
    inv_hf = emb.inv_freq.double().numpy()
    m = np.abs(pos)[:, None].astype(np.float64)
    phase = m * (np.abs(inv_hf - rope.inv_freq()) + inv_hf * F32) + 4 * F32
    allow = phase * rope.attention_factor
    assert np.all(np.abs(cos - cos_hf) <= allow)
    assert np.all(np.abs(sin - sin_hf) <= allow)
    # the model of docs/accuracy.md (inv_freq within a few ulps): 2 M theta_1 u, generously
    theta1 = float(rope.inv_freq()[1])
    assert allow.max() <= (4 * big_m * theta1 * F32 + 4 * F32) * rope.attention_factor
    # and the error really is HF's float32 phase: at small positions it is tiny
    assert np.abs(cos[:64] - cos_hf[:64]).max() <= allow[63].max() < 200 * F32


def test_hf_rope_utils_default_matches_presets():
    # HF's own reading of a real preset's config gives our frequencies (float32-rounded).
    cfg = dict(rr.preset_info("llama-3.1-8b")["config"])
    cfg.pop("architectures", None)
    inv_hf, att_hf, _ = hf_tables(cfg)
    rope = rr.Rope.preset("llama-3.1-8b")
    np.testing.assert_allclose(rope.inv_freq(), inv_hf, rtol=16 * F32, atol=0)
    assert att_hf == rope.attention_factor == 1.0


@pytest.mark.parametrize(
    ("model", "kwargs", "rotary_dim"),
    [
        ("phi", {"hidden_size": 2560, "num_attention_heads": 32, "partial_rotary_factor": 0.4}, 32),
        (
            "gpt_neox",
            {
                "hidden_size": 6144,
                "num_attention_heads": 64,
                "rotary_pct": 0.25,
                "rotary_emb_base": 10000,
            },
            24,
        ),
    ],
)
def test_partial_rotary_matches_hf(model, kwargs, rotary_dim):
    from transformers import GPTNeoXConfig, PhiConfig
    from transformers.models.gpt_neox.modeling_gpt_neox import GPTNeoXRotaryEmbedding
    from transformers.models.phi.modeling_phi import PhiRotaryEmbedding

    cls, emb_cls = {
        "phi": (PhiConfig, PhiRotaryEmbedding),
        "gpt_neox": (GPTNeoXConfig, GPTNeoXRotaryEmbedding),
    }[model]
    emb = emb_cls(cls(**kwargs))
    rope = rr.Rope.from_hf_config({"model_type": model, **kwargs})
    assert rope.rotary_dim == rotary_dim == 2 * emb.inv_freq.shape[0]
    np.testing.assert_allclose(rope.inv_freq(), emb.inv_freq.double().numpy(), rtol=4 * F32)


def test_yarn_without_factor_refused_by_both():
    # transformers 5 raises KeyError for a YaRN dict without `factor`; rope_ref refuses too,
    # naming the key, instead of inferring max / original max
    yarn = {"rope_type": "yarn", "rope_theta": 1e4, "original_max_position_embeddings": 1024}
    cfg = LlamaConfig(**BASE)
    cfg.rope_parameters = dict(yarn)
    with pytest.raises(KeyError, match="factor"):
        cfg.validate_rope()
    with pytest.raises(rr.RopeValueError, match=r"rope_parameters\.factor is required"):
        rr.Rope.from_hf_config({**BASE, "rope_parameters": yarn})


def test_longrope_factor_inferred_by_both():
    # ... while for LongRoPE both infer factor = max / original max (Phi-3)
    cfg = hf_config("longrope")
    assert "factor" not in cfg["rope_scaling"]
    _, att_hf, _ = hf_tables(cfg, seq_len=100_000)
    rope = rr.Rope.from_hf_config(cfg)
    assert rope.scaling.factor == 131072 / 4096
    assert abs(rope._attention_factor(100_000) - att_hf) <= 4e-16 * att_hf


def test_gemma3_per_layer_preset_matches_hf_rotary_embedding():
    # The gemma-3 preset's text_config, read by transformers' own Gemma3TextConfig (class
    # defaults filled in, v4 rope_scaling + rope_local_base_freq turned into per-layer v5
    # rope_parameters), gives each layer type's inv_freq; our preset's two layer types match.
    from transformers import Gemma3TextConfig
    from transformers.models.gemma3.modeling_gemma3 import Gemma3RotaryEmbedding

    text = dict(rr.preset_info("gemma-3")["config"]["text_config"])
    text.pop("model_type")
    emb = Gemma3RotaryEmbedding(Gemma3TextConfig(**text))
    for layer in ("full_attention", "sliding_attention"):
        ours = rr.Rope.preset("gemma-3", layer_type=layer)
        inv_hf = getattr(emb, f"{layer}_inv_freq").double().numpy()
        np.testing.assert_allclose(ours.inv_freq(), inv_hf, rtol=16 * F32, atol=0)
        assert getattr(emb, f"{layer}_attention_scaling") == ours.attention_factor == 1.0
    # and the default layer of the preset is the full-attention one
    assert rr.Rope.preset("gemma-3") == rr.Rope.preset("gemma-3", layer_type="full_attention")
    # transformers' own config object is read directly too (v5 per-layer rope_parameters)
    cfg = Gemma3TextConfig(**text)
    for layer in ("full_attention", "sliding_attention"):
        assert rr.Rope.from_hf_config(cfg, layer_type=layer) == rr.Rope.preset(
            "gemma-3", layer_type=layer
        )
