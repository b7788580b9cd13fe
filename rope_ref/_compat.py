"""The one place that talks to array-api-compat: namespaces, devices, dtypes, laziness.

rope_ref never imports an array framework. Everything framework-specific goes through
``array_api_compat`` (which itself only looks at ``sys.modules``).
"""

from __future__ import annotations

import math
from typing import Any

import array_api_compat
import numpy as np

from ._errors import RopeTypeError, RopeValueError
from ._typing import Array, Namespace

__all__ = [
    "array_namespace",
    "device_of",
    "is_array",
    "is_concrete",
    "is_integral",
    "is_real_floating",
    "significand_bits",
    "work_dtype",
]


def is_array(x: object) -> bool:
    """True for an array of any Array-API library (NumPy, CuPy, PyTorch, JAX, Dask, ...)."""
    return bool(array_api_compat.is_array_api_obj(x)) and not isinstance(x, (int, float, complex))


def array_namespace(**named: Any) -> Any:
    """The compat-wrapped namespace shared by the named arrays.

    Raises a RopeTypeError naming the arguments when they come from two libraries.
    """
    found: dict[Any, str] = {}
    for name, value in named.items():
        if value is None or not is_array(value):
            continue
        xp = array_api_compat.array_namespace(value)
        if found and xp not in found:
            ((other_xp, other_name),) = list(found.items())[:1]
            raise RopeTypeError(
                f"{name} is an array of {_lib_name(xp)} but {other_name} is an array of "
                f"{_lib_name(other_xp)}; pass arrays of one library (convert one of them first)"
            )
        found.setdefault(xp, name)
    if not found:
        return array_api_compat.array_namespace(np.empty(0))
    return next(iter(found))


def namespace_for(module: Any) -> Any:
    """The Array-API namespace for a library given as its module (``torch``, ``numpy``, a
    compat namespace or an Array-API namespace): a plain module is wrapped by array_api_compat
    through a small array it makes."""
    if hasattr(module, "astype") and hasattr(module, "isdtype"):
        return module
    return array_api_compat.array_namespace(module.asarray([0.0]))


def _lib_name(xp: Namespace) -> str:
    name = getattr(xp, "__name__", repr(xp))
    return name.replace("array_api_compat.", "")


def device_of(x: Array) -> Any:
    return array_api_compat.device(x)


def check_same_device(**named: Any) -> Any:
    """Return the common device of the named arrays, or raise naming the two that differ."""
    first: tuple[str, Any] | None = None
    for name, value in named.items():
        if value is None or not is_array(value):
            continue
        dev = device_of(value)
        if dev is None:  # traced JAX values have no device yet: nothing to compare
            continue
        if first is None:
            first = (name, dev)
        elif dev != first[1]:
            raise RopeValueError(
                f"{name} is on device {dev!r} but {first[0]} is on device {first[1]!r}; "
                "move them to one device"
            )
    return None if first is None else first[1]


def is_concrete(x: Array) -> bool:
    """True when reading values (bool(), float()) is cheap and allowed: not a JAX tracer,
    not a Dask graph. Lazy arrays skip value checks, so they never trigger a compute."""
    if array_api_compat.is_jax_array(x):
        return not any("Tracer" in cls.__name__ for cls in type(x).__mro__)
    if array_api_compat.is_torch_array(x) and getattr(x.device, "type", None) == "meta":
        return False  # PyTorch's 'meta' device holds shapes and dtypes only: like a lazy array
    return not array_api_compat.is_lazy_array(x)


def _isdtype(xp: Namespace, dtype: Any, kind: str) -> bool:
    """``xp.isdtype(dtype, kind)``, False where the namespace cannot tell."""
    try:
        return bool(xp.isdtype(dtype, kind))
    except Exception:  # pragma: no cover - unusual dtypes of third-party libraries
        return False


def is_real_floating(xp: Namespace, dtype: Any) -> bool:
    return _isdtype(xp, dtype, "real floating")


def is_integral(xp: Namespace, dtype: Any) -> bool:
    return _isdtype(xp, dtype, "integral")


def is_bool(xp: Namespace, dtype: Any) -> bool:
    return _isdtype(xp, dtype, "bool")


def is_complex(xp: Namespace, dtype: Any) -> bool:
    return _isdtype(xp, dtype, "complex floating")


def work_dtype(xp: Namespace, device: Any = None) -> Any:
    """The widest real floating dtype the namespace offers on ``device`` (float64 if any)."""
    try:
        info = xp.__array_namespace_info__()
        kinds = info.dtypes(kind="real floating", device=device)
    except Exception:  # pragma: no cover - namespaces without the inspection API
        return xp.float64
    if "float64" in kinds:
        return kinds["float64"]
    return kinds.get("float32", xp.float32)


def promotes_exactly(xp: Namespace, dtype: Any, wide: Any) -> bool:
    """Whether ``dtype`` (op) ``wide`` promotes to ``wide`` under the Array API's rules, so a
    product with a ``wide`` array needs no explicit cast: float32 with float64."""
    if array_api_compat.is_torch_namespace(xp):
        return False  # measured: PyTorch is faster casting x once than per mixed product
    return bool(dtype == xp.float32 and wide == xp.float64)


def significand_bits(xp: Namespace, dtype: Any) -> int:
    """Significand bits (p) of a real floating dtype: 53 for float64, 24 for float32."""
    eps = float(xp.finfo(dtype).eps)
    return 1 - round(math.log2(eps))


def complex_dtype_for(xp: Namespace, dtype: Any) -> Any:
    return xp.complex128 if significand_bits(xp, dtype) == 53 else xp.complex64
