"""rope_ref.testing: what other projects import in their tests.

* ``assert_close`` compares any Array-API arrays with tolerances from an error model of the
  dtype under test and explains failures (worst element, position and rotary pair, ulps,
  errors by position range, and which common RoPE mistake explains the data).
  ``compare`` returns the same verdict as a ``Report``: pass or fail, the accuracy class
  ("exact", "lower-precision angles", "fail"), the phase error per position range, the
  allowance's blind spots and the fitted diagnoses; ``RopeToleranceWarning`` flags a pass
  whose allowance is vacuous somewhere.
* ``cases`` / ``case``: a named, deterministic battery; each case rebuilt from its name.
* Signature twins of flash-attn, Hugging Face, vLLM and MLX, computing with exact numerics.
* Position helpers (offsets, cu_seqlens, padding masks, multi-axis grids).
* ``write_vectors``: golden files (safetensors, npz, manifest) for non-Python projects (at
  millions of tokens on a Dask cluster: ``write_vectors_dask`` / ``read_vectors_dask``,
  which import Dask only when called: ``pip install rope-ref[dask]``).
"""

from ._assert import assert_close, default_tolerance, to_numpy, unit_roundoff
from ._attention_check import (
    AttentionHypothesis,
    AttentionMismatch,
    AttentionReport,
    AttentionTolerance,
    assert_attention_close,
    attention_tolerance,
)
from ._cases import Case, case, cases
from ._compare import Report, RopeToleranceWarning, compare
from ._dask_vectors import DaskUnavailableError, read_vectors_dask, write_vectors_dask
from ._diagnose import Hypothesis
from ._positions import (
    axial_grid,
    mrope_grid,
    positions_from_cu_seqlens,
    positions_from_offsets,
    positions_from_padding_mask,
)
from ._twin_kvcache import flash_attn_with_kvcache
from ._twin_layouts import (
    flash_apply_rotary_emb_qkv,
    flashinfer_apply_rope,
    flashinfer_apply_rope_pos_ids,
    flashinfer_positions,
    te_apply_rotary_pos_emb,
    te_thd_positions,
)
from ._twins import (
    flash_apply_rotary_emb,
    hf_apply_rotary_pos_emb,
    hf_cos_sin,
    mlx_rope,
    vllm_cos_sin_cache,
    vllm_rotary,
)
from ._vectors import (
    read_case,
    read_manifest,
    read_npz,
    read_safetensors,
    write_safetensors,
    write_vectors,
)

__all__ = [
    "AttentionHypothesis",
    "AttentionMismatch",
    "AttentionReport",
    "AttentionTolerance",
    "Case",
    "DaskUnavailableError",
    "Hypothesis",
    "Report",
    "RopeToleranceWarning",
    "assert_attention_close",
    "assert_close",
    "attention_tolerance",
    "axial_grid",
    "case",
    "cases",
    "compare",
    "default_tolerance",
    "flash_apply_rotary_emb",
    "flash_apply_rotary_emb_qkv",
    "flash_attn_with_kvcache",
    "flashinfer_apply_rope",
    "flashinfer_apply_rope_pos_ids",
    "flashinfer_positions",
    "hf_apply_rotary_pos_emb",
    "hf_cos_sin",
    "mlx_rope",
    "mrope_grid",
    "positions_from_cu_seqlens",
    "positions_from_offsets",
    "positions_from_padding_mask",
    "read_case",
    "read_manifest",
    "read_npz",
    "read_safetensors",
    "read_vectors_dask",
    "te_apply_rotary_pos_emb",
    "te_thd_positions",
    "to_numpy",
    "unit_roundoff",
    "vllm_cos_sin_cache",
    "vllm_rotary",
    "write_safetensors",
    "write_vectors",
    "write_vectors_dask",
]
