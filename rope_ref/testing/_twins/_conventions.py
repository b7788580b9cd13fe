"""The calling conventions of ``rope-ref check``: one adapter per library (in that library's
module of this package), its signature as the help shows it, and what the target is."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._common import rope_ref_prepare
from ._flash import flash_prepare
from ._hf import hf_module_prepare, hf_prepare
from ._lucidrains import lucidrains_prepare
from ._mlx import mlx_prepare
from ._tokens import (
    flash_qkv_gqa_prepare,
    flash_qkv_prepare,
    flashinfer_pos_ids_prepare,
    flashinfer_prepare,
    te_cp_prepare,
    te_prepare,
    vllm_strided_prepare,
)
from ._torchtune import torchtune_prepare
from ._vllm import vllm_prepare

__all__ = ["CONVENTIONS", "Convention"]


@dataclass(frozen=True)
class Convention:
    """How ``rope-ref check`` calls a target: ``prepare(target, inputs) -> Call``."""

    name: str
    prepare: Callable[[Any, Any], Any]
    signature: str
    kind: str  # "function" or "class"
    outputs: tuple[str, ...]
    backend: str | None = None  # the library a class convention runs on
    example: str = ""
    #: the target is built from a model config (--hf-config or --preset): the adapter gets
    #: the transformers config object and the module's apply function in its options
    needs_config: bool = False


CONVENTIONS: dict[str, Convention] = {
    c.name: c
    for c in (
        Convention(
            "rope_ref",
            rope_ref_prepare,
            "fn(x, positions, rope) -> x rotated (positions broadcast against x.shape[:-1])",
            "function",
            ("q",),
            example="rope_ref.examples:exact",
        ),
        Convention(
            "hf",
            hf_prepare,
            "fn(q, k, cos, sin[, unsqueeze_dim=2]) -> (q_embed, k_embed); q, k "
            "(batch, heads, seq, rotary_dim) or (batch, seq, heads, rotary_dim) with "
            "unsqueeze_dim=2; cos, sin (batch, seq, rotary_dim) in x's dtype",
            "function",
            ("q", "k"),
            example="transformers.models.llama.modeling_llama:apply_rotary_pos_emb",
        ),
        Convention(
            "flash",
            flash_prepare,
            "fn(x, cos, sin, interleaved=..., seqlen_offsets=...[, cu_seqlens=..., "
            "max_seqlen=...]) -> x rotated; x (batch, seqlen, nheads, headdim) or (total, "
            "nheads, headdim); cos, sin (seqlen_ro, rotary_dim / 2) in x's dtype",
            "function",
            ("q",),
            example="flash_attn.layers.rotary:apply_rotary_emb",
        ),
        Convention(
            "vllm",
            vllm_prepare,
            "fn(positions, query, key, head_size=..., cos_sin_cache=..., is_neox_style=...) "
            "-> (query, key), or None when it writes query and key in place (as vLLM's "
            "ops.rotary_embedding: they are read back); positions (num_tokens,), query/key "
            "(num_tokens, heads * head_size), cos_sin_cache (max_position, rotary_dim) in "
            "x's dtype",
            "function",
            ("q", "k"),
        ),
        Convention(
            "vllm-strided",
            vllm_strided_prepare,
            "as vllm, with query/key (num_tokens, heads, head_size) strided views into one "
            "buffer (num_tokens, 3, heads, 8 + head_size): head stride 8 + head_size, token "
            "stride 3 * heads * (8 + head_size); the rest of the buffer must stay unchanged; "
            "None: in place, read back from the views",
            "function",
            ("q", "k"),
        ),
        Convention(
            "flash-qkv",
            flash_qkv_prepare,
            "fn(qkv, cos, sin, interleaved=..., seqlen_offsets=...) -> qkv rotated; qkv "
            "(batch, seqlen, 3, nheads, headdim), v (qkv[:, :, 2]) returned unchanged; cos, "
            "sin (seqlen_ro, rotary_dim / 2) in qkv's dtype",
            "function",
            ("q", "k"),
            example="flash_attn.layers.rotary:apply_rotary_emb_qkv_",
        ),
        Convention(
            "flash-qkv-gqa",
            flash_qkv_gqa_prepare,
            "fn(qkv, cos, sin, interleaved=..., seqlen_offsets=..., num_heads_q=...) -> qkv "
            "rotated; qkv (batch, seqlen, num_heads_q + 2 * num_heads_k, headdim) with "
            "num_heads_q != num_heads_k (2 heads or more), the last num_heads_k heads (v) "
            "returned unchanged",
            "function",
            ("q", "k"),
            example="flash_attn.layers.rotary:apply_rotary_emb_qkv_",
        ),
        Convention(
            "flashinfer",
            flashinfer_prepare,
            "fn(q, k, indptr, offsets, rotary_dim=..., interleave=..., rope_scale=..., "
            "rope_theta=...) -> (q_rope, k_rope); q, k ragged (nnz, heads, head_dim), indptr "
            "(batch + 1,) and offsets (batch,) int32 (request i: rows indptr[i]:indptr[i + 1] "
            "at positions offsets[i] + 0, 1, ...)",
            "function",
            ("q", "k"),
            example="flashinfer.rope:apply_rope",
        ),
        Convention(
            "flashinfer-pos-ids",
            flashinfer_pos_ids_prepare,
            "fn(q, k, pos_ids, rotary_dim=..., interleave=..., rope_scale=..., rope_theta=...) "
            "-> (q_rope, k_rope); q, k ragged (nnz, heads, head_dim), pos_ids (nnz,) int32",
            "function",
            ("q", "k"),
            example="flashinfer.rope:apply_rope_pos_ids",
        ),
        Convention(
            "te",
            te_prepare,
            "fn(t, freqs, tensor_format=..., interleaved=...[, start_positions=...][, "
            "cu_seqlens=...]) -> t rotated; t (s, b, h, d) 'sbhd', (b, s, h, d) 'bshd' or "
            "(total, h, d) 'thd' with cu_seqlens (b + 1,) int32; freqs (s2, 1, 1, rotary_dim) "
            "angles in float64; start_positions (b,) int32",
            "function",
            ("q",),
            example="transformer_engine.pytorch.attention.rope:apply_rotary_pos_emb",
        ),
        Convention(
            "te-cp",
            te_cp_prepare,
            "as te, context parallel: fn(t_r, freqs, tensor_format=..., interleaved=..., "
            "cp_size=2, cp_rank=r[, cu_seqlens=...]) for r = 0, 1; t_r holds chunks r and "
            "3-r of each sequence (padded to a multiple of 4; cu_seqlens the padded global "
            "bounds)",
            "function",
            ("q",),
            example="transformer_engine.pytorch.attention.rope:apply_rotary_pos_emb",
        ),
        Convention(
            "mlx",
            mlx_prepare,
            "fn(x, dims, traditional=..., base=..., scale=1.0, offset=...) -> x rotated; "
            "x (B, heads, T, D); offset an int or an int64 array (B,)",
            "function",
            ("q",),
        ),
        Convention(
            "hf-module",
            hf_module_prepare,
            "cls(config)(x, position_ids) -> (cos, sin), then the module's "
            "apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=...) -> (q_embed, k_embed); "
            "config from --hf-config or --preset",
            "class",
            ("q", "k"),
            backend="torch",
            example="transformers.models.llama.modeling_llama:LlamaRotaryEmbedding",
            needs_config=True,
        ),
        Convention(
            "lucidrains",
            lucidrains_prepare,
            "cls(dim=rotary_dim, theta=base[, interpolate_factor=f])"
            ".rotate_queries_or_keys(t, seq_dim=..., offset=...) -> t rotated",
            "class",
            ("q",),
            backend="torch",
            example="rotary_embedding_torch:RotaryEmbedding",
        ),
        Convention(
            "torchtune",
            torchtune_prepare,
            "cls(dim=rotary_dim, max_seq_len=..., base=base)(x, input_pos=positions) -> x "
            "rotated; x (b, s, n_h, rotary_dim), positions (b, s)",
            "class",
            ("q",),
            backend="torch",
            example="torchtune.modules:RotaryPositionalEmbeddings",
        ),
    )
}
