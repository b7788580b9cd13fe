"""Reading the keys of a Hugging Face config, with a record of every read.

A :class:`KeyReader` wraps one dict of a config (the top level, ``text_config``,
``rope_scaling`` or ``rope_parameters``) and reads typed values from it. Each read is recorded
in a :class:`ConfigReport` under the key's full name as the user wrote it
(``text_config.rope_scaling.factor``), so ``Rope.explain()`` can list what was used, which
defaults were applied and which keys were present but not used. Every bad value raises a
``RopeTypeError`` / ``RopeValueError`` naming that key, what was given and what was expected.

Numbers are accepted by kind, whatever library made them: a Python ``int``/``float`` or a
NumPy scalar (``np.int64``, ``np.float32``). A bool is never a number and a number never a
bool: JSON ``true``/``false`` (or ``np.bool_``) only, never the strings ``"true"`` or
``"false"`` (transformers would read ``"false"`` as true; a reference refuses to guess).
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._errors import RopeTypeError, RopeValueError

__all__ = [
    "MAX_HEAD_DIM",
    "MAX_LENGTH",
    "ConfigReport",
    "KeyReader",
    "check_keys",
    "describe",
    "strict_json",
]

#: Largest head dimension read from a config. Published models use at most a few hundred
#: channels per head; building the exact tables of 16384 channels takes about a second, and
#: the cost grows linearly beyond (a typo such as ``1e12`` would run for hours).
MAX_HEAD_DIM = 16_384
#: Largest context length (and hidden size) read from a config: 2**53, the limit below which
#: every integer position is exact in float64.
MAX_LENGTH = 2**53


def describe(value: Any) -> str:
    """Type and a short repr of ``value`` for messages (huge ints and long lists shortened)."""
    try:
        text = repr(value)
    except ValueError:  # an int beyond Python's 4300-digit str limit
        text = f"<{value.bit_length()}-bit integer>"
    except RecursionError:
        text = "<nested too deeply to show>"
    if len(text) > 80:
        size = f" ({len(value)} items)" if isinstance(value, (list, tuple, dict)) else ""
        text = text[:70] + "..." + size
    return f"{type(value).__name__} {text}"


def scalar_kind(value: Any) -> str | None:
    """``"bool"``, ``"int"`` or ``"real"`` for a Python or NumPy scalar, else None."""
    if isinstance(value, (bool, np.bool_)):
        return "bool"
    if isinstance(value, numbers.Integral):
        return "int"
    if isinstance(value, numbers.Real):
        return "real"
    return None


def as_number(name: str, value: Any, *, positive: bool = True) -> float:
    """A finite real number (> 0 when ``positive``), as a Python float."""
    if scalar_kind(value) not in ("int", "real"):
        raise RopeTypeError(f"{name} must be a number, got {describe(value)}")
    try:
        v = float(value)
    except OverflowError:
        v = math.inf
    if not math.isfinite(v) or (positive and v <= 0):
        expected = "a finite number > 0" if positive else "a finite number"
        raise RopeValueError(f"{name} must be {expected}, got {describe(value)}")
    return v


def as_integer(name: str, value: Any, *, maximum: int = MAX_LENGTH, minimum: int = 1) -> int:
    """An integer in [minimum, maximum]; an integral float (4096.0) is accepted too."""
    kind = scalar_kind(value)
    if kind == "real" and math.isfinite(value) and float(value).is_integer():
        kind = "int"
    if kind != "int":
        raise RopeTypeError(f"{name} must be an integer, got {describe(value)}")
    v = int(value)
    if v < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise RopeValueError(f"{name} must be {what}, got {describe(value)}")
    if v > maximum:
        raise RopeValueError(f"{name} must be at most {maximum}, got {describe(value)}")
    return v


def as_flag(name: str, value: Any) -> bool:
    """A bool: JSON true/false or np.bool_; not 0/1, not the string "false"."""
    if scalar_kind(value) != "bool":
        raise RopeTypeError(f"{name} must be true or false (a JSON boolean), got {describe(value)}")
    return bool(value)


def check_keys(data: Mapping[Any, Any], name: str) -> None:
    """Every key of a config dict is a string (as in any parsed JSON)."""
    for k in data:
        if not isinstance(k, str):
            raise RopeTypeError(f"{name} keys must be strings, got the key {describe(k)}")


@dataclass
class ConfigReport:
    """What ``from_hf_config`` read: used keys (with values), defaults, unused keys, notes."""

    used: dict[str, Any] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)
    unused: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def text(self, rope: Any) -> str:
        """The report as lines of text, headed by ``repr(rope)``."""
        lines = [f"{rope!r}", "used:"]
        lines += [f"  {k} = {_short(v)}" for k, v in self.used.items()] or ["  (nothing)"]
        if self.defaults:
            lines.append("defaults applied (key absent):")
            lines += [f"  {k} = {_short(v)}" for k, v in self.defaults.items()]
        if self.unused:
            lines.append("present but not used:")
            lines += [f"  {k} = {_short(v)}" for k, v in self.unused.items()]
        if self.notes:
            lines.append("notes:")
            lines += [f"  {n}" for n in self.notes]
        return "\n".join(lines)


def _short(v: Any) -> str:
    return describe(v).split(" ", 1)[1]


class KeyReader:
    """Reads keys of one config dict, recording each use in ``report``.

    ``prefix`` is how the user wrote the path to this dict (``"rope_scaling."``); messages
    and the report name keys as ``prefix + key``. A key present with the value ``null``
    counts as absent (as in transformers) but is not listed as unused.
    """

    def __init__(self, data: Mapping[str, Any], prefix: str, report: ConfigReport) -> None:
        check_keys(data, prefix.rstrip(".") or "config")
        self.data = data
        self.prefix = prefix
        self.report = report
        self.consumed: set[str] = set()

    def name(self, key: str) -> str:
        """The key as the user wrote it, with the path to this dict."""
        return self.prefix + key

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def get(self, key: str, default: Any = None, *, record_default: bool = True) -> Any:
        """The raw value (recorded as used), or ``default`` (recorded as a default)."""
        if self.has(key):
            self.consumed.add(key)
            self.report.used[self.name(key)] = self.data[key]
            return self.data[key]
        if key in self.data:
            self.consumed.add(key)  # present as null
        if default is not None and record_default:
            self.report.defaults[self.name(key)] = default
        return default

    def require(self, key: str, why: str) -> Any:
        """The raw value of a key that must be present; ``why`` completes the message."""
        if not self.has(key):
            raise RopeValueError(f"{self.name(key)} is required {why}")
        return self.get(key)

    def number(
        self, key: str, default: float | None = None, *, positive: bool = True
    ) -> float | None:
        """A finite real number (> 0 when ``positive``), or ``default`` when absent."""
        if not self.has(key):
            got: float | None = self.get(key, default)
            return got
        return as_number(self.name(key), self.get(key), positive=positive)

    def integer(self, key: str, *, maximum: int = MAX_LENGTH, minimum: int = 1) -> int | None:
        """A positive integer (at most ``maximum``), or None when absent."""
        if not self.has(key):
            self.get(key)
            return None
        return as_integer(self.name(key), self.get(key), maximum=maximum, minimum=minimum)

    def flag(self, key: str, default: bool) -> bool:
        """A bool (JSON true/false), or ``default`` when absent."""
        if not self.has(key):
            self.get(key, default, record_default=False)
            return default
        return as_flag(self.name(key), self.get(key))

    def string(self, key: str) -> str | None:
        """A string, or None when absent."""
        if not self.has(key):
            self.get(key)
            return None
        value = self.get(key)
        if not isinstance(value, str):
            raise RopeTypeError(f"{self.name(key)} must be a string, got {describe(value)}")
        return value

    def sequence(self, key: str) -> list[Any] | None:
        """A list (JSON array), or None when absent."""
        if not self.has(key):
            self.get(key)
            return None
        value = self.get(key)
        if not isinstance(value, (list, tuple)):
            raise RopeTypeError(f"{self.name(key)} must be a list, got {describe(value)}")
        return list(value)

    def leftovers(self, keys: tuple[str, ...] | None = None) -> None:
        """Record the keys present but not read (only those in ``keys`` when given)."""
        for k, v in self.data.items():
            if k not in self.consumed and (keys is None or k in keys):
                self.report.unused[self.name(k)] = v


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise RopeValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def _no_constant(name: str) -> Any:
    raise RopeValueError(f"{name} is not JSON (non-finite numbers are not allowed)")


def strict_json(raw: bytes | str, what: str, *, max_bytes: int) -> Any:
    """Parse JSON text strictly: UTF-8, at most ``max_bytes``, no duplicate keys, no
    NaN/Infinity, not nested beyond Python's recursion limit. Any fault is a
    ``RopeValueError`` naming ``what`` (a file name)."""
    if len(raw) > max_bytes:
        raise RopeValueError(f"{what} is too large: {len(raw)} bytes (at most {max_bytes})")
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except UnicodeDecodeError as exc:
        raise RopeValueError(f"{what} is not UTF-8 text: {exc}") from None
    except json.JSONDecodeError as exc:
        raise RopeValueError(f"{what} is not valid JSON: {exc}") from None
    except RecursionError:
        raise RopeValueError(f"{what} is nested too deeply") from None
    except RopeValueError as exc:
        raise RopeValueError(f"{what}: {exc}") from None
