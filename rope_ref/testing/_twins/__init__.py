"""Signature twins: the calling conventions of popular RoPE implementations, exact numerics.

Each function here takes the arguments of a well-known implementation (flash-attn's
``apply_rotary_emb``, Hugging Face's ``apply_rotary_pos_emb`` and ``RotaryEmbedding.forward``,
vLLM's ``RotaryEmbedding.forward``, MLX's ``mx.fast.rope``) and computes the same mathematical
result the way rope_ref does: every input widened to float64 (the widest float dtype of the
namespace), one multiply-add per output element, and a single rounding to the input dtype. A
test that checks a kernel against one of those libraries can switch to the reference by
changing one import, keeping its shapes and arguments::

    # from flash_attn.layers.rotary import apply_rotary_emb
    from rope_ref.testing import flash_apply_rotary_emb as apply_rotary_emb

Twins that receive caller-built cos/sin tables (flash-attn, Hugging Face, vLLM) use those
tables, gathered at the right positions, so that the only difference from the library is the
arithmetic; feed them rope_ref's exact tables (``Rope.cos_sin``, :func:`hf_cos_sin`,
:func:`vllm_cos_sin_cache`) to get the golden result. Twins that build their own angles (MLX)
use rope_ref's exact tables. Nothing is ever written into an input.

One module per library: ``_flash`` (flash-attn), ``_hf`` (Hugging Face transformers),
``_vllm`` (vLLM), ``_mlx`` (MLX); ``_common`` holds the checks they share. The rotation itself
is rope_ref's one elementwise kernel (``rope_ref._rotate``, as in ``apply_rope``). The
``rope-ref check`` conventions call the user's function with the arguments these twins take.
"""

from ._flash import flash_apply_rotary_emb
from ._hf import hf_apply_rotary_pos_emb, hf_cos_sin
from ._mlx import mlx_rope
from ._vllm import vllm_cos_sin_cache, vllm_rotary

__all__ = [
    "flash_apply_rotary_emb",
    "hf_apply_rotary_pos_emb",
    "hf_cos_sin",
    "mlx_rope",
    "vllm_cos_sin_cache",
    "vllm_rotary",
]
