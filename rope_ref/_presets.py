"""Named real models: their published RoPE config values, stored in presets/configs.json."""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

from ._errors import RopeTypeError, RopeValueError

__all__ = ["load_preset", "presets"]


@functools.lru_cache(maxsize=1)
def _data() -> dict[str, Any]:
    text = resources.files("rope_ref").joinpath("presets", "configs.json").read_text("utf-8")
    data = json.loads(text)
    return {k: v for k, v in data.items() if not k.startswith("_")}


def presets() -> tuple[str, ...]:
    """Names accepted by ``Rope.preset`` (real models, from their published config.json)."""
    return tuple(sorted(_data()))


def preset_info(name: str) -> dict[str, Any]:
    """The stored entry: ``hf_id``, ``source`` and the ``config`` values."""
    if not isinstance(name, str):
        raise RopeTypeError(f"name must be a string, got {type(name).__name__}")
    data = _data()
    key = name.lower()
    if key not in data:
        raise RopeValueError(f"unknown preset {name!r}; accepted: {list(presets())}")
    return dict(data[key])


def load_preset(name: str) -> tuple[dict[str, Any], str | None]:
    entry = preset_info(name)
    return dict(entry["config"]), entry.get("layer_type")
