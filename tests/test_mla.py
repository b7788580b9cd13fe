"""Multi-head latent attention (DeepSeek-V2/V3): rope_ref's naive and absorbed forms against
Hugging Face's ``DeepseekV3Attention`` in float64, at real per-head sizes (kv_lora_rank 512,
qk_rope_head_dim 64, qk_nope_head_dim 128, v_head_dim 128) with fewer heads, YaRN and its
mscale included."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

import rope_ref as rr

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

R, NOPE, V, LAT, H, HIDDEN = 64, 128, 128, 512, 2, 256
ROPE_PARAMS = {
    "rope_type": "yarn", "rope_theta": 10000.0, "factor": 40.0,
    "original_max_position_embeddings": 4096, "beta_fast": 32.0, "beta_slow": 1.0,
    "mscale": 1.0, "mscale_all_dim": 1.0,
}  # fmt: skip


def _config_dict(interleave: bool) -> dict:
    return {
        "model_type": "deepseek_v3", "hidden_size": HIDDEN, "num_attention_heads": H,
        "num_key_value_heads": H, "q_lora_rank": None, "kv_lora_rank": LAT,
        "qk_rope_head_dim": R, "qk_nope_head_dim": NOPE, "v_head_dim": V,
        "max_position_embeddings": 163840, "rope_interleave": interleave,
        "rope_parameters": dict(ROPE_PARAMS), "attention_bias": False, "rms_norm_eps": 1e-6,
    }  # fmt: skip


def _hf_module(interleave: bool, impl: str = "eager"):
    from transformers.models.deepseek_v3.configuration_deepseek_v3 import DeepseekV3Config
    from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3Attention

    cfg = DeepseekV3Config(**{k: v for k, v in _config_dict(interleave).items()
                              if k != "model_type"})  # fmt: skip
    cfg._attn_implementation = impl
    torch.manual_seed(0)
    attn = DeepseekV3Attention(cfg, layer_idx=0).double().eval()
    with torch.no_grad():
        for p in attn.parameters():
            p.copy_(torch.randn_like(p) * (0.5 / math.sqrt(p.shape[-1])))
        attn.kv_a_layernorm.weight.copy_(1 + 0.1 * torch.randn_like(attn.kv_a_layernorm.weight))
    return cfg, attn


def _weights(attn):
    w = {n: p.detach().numpy().astype(np.float64) for n, p in attn.named_parameters()}
    return w, attn.kv_a_layernorm.variance_epsilon


def _mscale(factor: float, m: float) -> float:
    """YaRN's mscale, written from the DeepSeek-V2 paper: 0.1 m ln(s) + 1 (1 for s <= 1)."""
    return 1.0 if factor <= 1 else 0.1 * m * math.log(factor) + 1.0


def rr_mla(hidden, positions, w, eps, rope, *, absorbed, mscale=True):
    """MLA with rope_ref: rotary on the trailing R channels of each 192-wide head.

    ``rope`` is the R-wide rope read from the config. The naive form hands the unrotated
    192-wide heads to ``rr.attention`` with the full-head rope (``rotary_offset=NOPE``); the
    absorbed form rotates the R-wide parts itself (MQA over the 512 + 64 latent)."""
    s = hidden.shape[0]
    q = (hidden @ w["q_proj.weight"].T).reshape(s, H, NOPE + R).transpose(1, 0, 2)
    ckv = hidden @ w["kv_a_proj_with_mqa.weight"].T
    c, k_pe = ckv[:, :LAT], ckv[:, LAT:]
    c = c / np.sqrt(np.mean(c**2, axis=-1, keepdims=True) + eps) * w["kv_a_layernorm.weight"]
    wkv = w["kv_b_proj.weight"].reshape(H, NOPE + V, LAT)
    w_uk, w_uv = wkv[:, :NOPE], wkv[:, NOPE:]
    scale = (NOPE + R) ** -0.5 * (_mscale(40.0, 1.0) ** 2 if mscale else 1.0)
    q_nope = q[..., :NOPE]
    if not absorbed:
        full = dataclasses.replace(rope, head_dim=NOPE + R, rotary_offset=NOPE)
        assert full.rotary_dim == R and full.thetas() == rope.thetas()
        k_nope = np.einsum("sl,hnl->hsn", c, w_uk)
        v = np.einsum("sl,hvl->hsv", c, w_uv)
        kk = np.concatenate([k_nope, np.broadcast_to(k_pe, (H, s, R))], axis=-1)
        out = rr.attention(q, kk, v, rope=full, causal=True, q_positions=positions,
                           k_positions=positions, scale=scale)  # fmt: skip
    else:
        q_pe = rr.apply_rope(q[..., NOPE:], positions, rope)  # (H, S, R)
        k_pe = rr.apply_rope(k_pe, positions, rope, role="key")  # (S, R), shared by heads
        # absorbed: MQA over the latent (512 + 64), values = the latent
        q_lat = np.einsum("hsn,hnl->hsl", q_nope, w_uk)
        qq = np.concatenate([q_lat, q_pe], axis=-1)  # (H, S, 576)
        kk = np.concatenate([c, k_pe], axis=-1)[None]  # (1, S, 576)
        lat = rr.attention(qq, kk, c[None], causal=True, q_positions=positions,
                           k_positions=positions, scale=scale)  # fmt: skip
        out = np.einsum("hsl,hvl->hsv", lat, w_uv)
    return out.transpose(1, 0, 2).reshape(s, H * V) @ w["o_proj.weight"].T


def _float64_rmsnorm(norm):
    """HF's RMSNorm computes in float32 whatever the model dtype; the same formula in the
    input's dtype, for an all-float64 comparison."""

    def forward(x):
        var = x.pow(2).mean(-1, keepdim=True)
        return norm.weight * (x * torch.rsqrt(var + norm.variance_epsilon))

    norm.forward = forward


def _run(interleave, impl, patch_norm):
    _, attn = _hf_module(interleave, impl)
    if patch_norm:
        _float64_rmsnorm(attn.kv_a_layernorm)
    rope = rr.Rope.from_hf_config(_config_dict(interleave))
    g = np.random.default_rng(0)
    s = 24
    positions = np.arange(100_000, 100_000 + s)  # long context, YaRN regime
    hidden = g.standard_normal((s, HIDDEN))
    cos, sin = rope.cos_sin(positions)  # exact tables (s, 32)
    cos_hf = torch.from_numpy(np.concatenate([cos, cos], -1))[None]
    sin_hf = torch.from_numpy(np.concatenate([sin, sin], -1))[None]
    mask = torch.full((s, s), -math.inf, dtype=torch.float64).triu(1)[None, None]
    with torch.no_grad():
        hf_out, _ = attn(torch.from_numpy(hidden)[None], (cos_hf, sin_hf), mask)
    w, eps = _weights(attn)
    naive = rr_mla(hidden, positions, w, eps, rope, absorbed=False)
    absorbed = rr_mla(hidden, positions, w, eps, rope, absorbed=True)
    return rope, hf_out[0].numpy(), naive, absorbed


@pytest.mark.parametrize("interleave", [True, False])
def test_mla_matches_transformers_and_absorbed_form(interleave):
    # all float64: HF with SDPA attention and its RMSNorm in float64 (see _float64_rmsnorm)
    rope, hf_out, naive, absorbed = _run(interleave, "sdpa", patch_norm=True)
    assert rope.head_dim == R and rope.rotary_dim == R
    assert rope.layout == ("interleaved" if interleave else "half")
    # DeepSeek's YaRN with mscale == mscale_all_dim: cos/sin carry no factor, the softmax
    # scale carries mscale_all_dim ** 2 (rr_mla passes it; the outputs agree below)
    assert rope.attention_factor == pytest.approx(1.0, abs=1e-15)
    scale = float(np.max(np.abs(hf_out)))
    err_hf = float(np.max(np.abs(naive - hf_out)))
    err_abs = float(np.max(np.abs(naive - absorbed)))
    print(f"MLA interleave={interleave}: max|out| {scale:.3g}, |rr - HF| {err_hf:.2e}, "
          f"|naive - absorbed| {err_abs:.2e}")  # fmt: skip
    # float64 throughout: differences are summation order only (a few hundred terms)
    assert err_hf < 1e-12 * max(scale, 1.0)
    assert err_abs < 1e-12 * max(scale, 1.0)


def test_mla_transformers_as_shipped_is_float32_accurate():
    # HF's eager attention takes the softmax in float32 and its RMSNorm computes in float32,
    # even in a float64 model: the difference is float32 rounding, not a formula difference
    _, hf_out, naive, _ = _run(True, "eager", patch_norm=False)
    err = float(np.max(np.abs(naive - hf_out)))
    print(f"MLA as shipped (eager, float32 softmax and norm): |rr - HF| {err:.2e}")
    assert 1e-12 < err < 2**-24 * 64 * max(float(np.max(np.abs(hf_out))), 1.0)


def test_mla_without_mscale_is_far_off():
    # the softmax scale's mscale_all_dim ** 2 (about 1.87 at factor 40) is the factor MLA
    # ports most often miss: without it the output moves by orders more than rounding
    _, attn = _hf_module(True, "sdpa")
    _float64_rmsnorm(attn.kv_a_layernorm)
    rope, hf_out, naive, _ = _run(True, "sdpa", patch_norm=True)
    w, eps = _weights(attn)
    g = np.random.default_rng(0)
    hidden = g.standard_normal((24, HIDDEN))
    wrong = rr_mla(hidden, np.arange(100_000, 100_024), w, eps, rope, absorbed=False,
                   mscale=False)  # fmt: skip
    assert float(np.max(np.abs(wrong - hf_out))) > 1e6 * float(np.max(np.abs(naive - hf_out)))
