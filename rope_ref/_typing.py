"""Static typing helpers (as array-api-extra's ``_typing.py``).

``rope_ref`` accepts the arrays of any Array-API library (NumPy, torch, JAX, Dask,
array-api-strict, CuPy), which share no common base class a type checker can see: the
``Array`` alias names the role of a parameter without constraining it.
"""

from __future__ import annotations

from typing import Any, Literal

__all__ = ["Array", "Layout", "Namespace", "Role"]

#: An array of any Array-API-compatible library (``Any`` to the type checker).
Array = Any
#: An Array-API namespace (``numpy``, ``array_api_compat.torch``, ...).
Namespace = Any
#: Where a rotation pair's two channels sit in the head: ``"half"`` (channels i and
#: i + d/2, GPT-NeoX / Llama) or ``"interleaved"`` (channels 2i and 2i + 1, GPT-J).
Layout = Literal["half", "interleaved"]
#: Which side of attention an input is: xPos scales queries and keys inversely.
Role = Literal["query", "key"]
