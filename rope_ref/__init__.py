"""rope_ref: the golden reference for Rotary Position Embedding (RoFormer, arXiv 2104.09864).

Pure Array-API code: the same functions run on NumPy, CuPy, PyTorch, JAX, Dask and
array-api-strict arrays, and return arrays of the caller's library on the caller's device.
"""

from . import scaling, testing
from ._apply import apply_rope, apply_rope_complex, apply_rope_matrix, rotation_matrix
from ._attention import DEFAULT_MEMORY_BUDGET, attention
from ._decay import relative_upper_bound
from ._errors import RopeError, RopeTypeError, RopeValueError
from ._kv_cache import kv_cache_attention
from ._layout import convert_layout, layout_permutation, permute_weights
from ._linear_attention import linear_attention
from ._positions import packed_positions
from ._presets import preset_info, presets
from ._qkv import qkv, sinusoidal_embedding
from ._rope import LAYOUTS, Rope
from ._tables import cache_info, clear_cache
from ._vjp import apply_rope_vjp, attention_vjp

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MEMORY_BUDGET",
    "LAYOUTS",
    "Rope",
    "RopeError",
    "RopeTypeError",
    "RopeValueError",
    "__version__",
    "apply_rope",
    "apply_rope_complex",
    "apply_rope_matrix",
    "apply_rope_vjp",
    "attention",
    "attention_vjp",
    "cache_info",
    "clear_cache",
    "convert_layout",
    "kv_cache_attention",
    "layout_permutation",
    "linear_attention",
    "packed_positions",
    "permute_weights",
    "preset_info",
    "presets",
    "qkv",
    "relative_upper_bound",
    "rotation_matrix",
    "scaling",
    "sinusoidal_embedding",
    "testing",
]
