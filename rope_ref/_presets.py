"""Named real models: their published RoPE config values, stored in presets/configs.json.

Each entry holds ``hf_id``, ``source`` (where the values were read), ``config`` (the
config.json values) and, for models whose layers use different RoPEs (Gemma 3: global and
sliding-window layers), ``layer_types`` (the layer types the preset can build) and
``layer_type`` (the one ``Rope.preset(name)`` builds when none is given). The file is read
strictly: a truncated, corrupt or inconsistent file is a ``RopeValueError``, never a guess.
"""

from __future__ import annotations

import copy
import functools
from importlib import resources
from typing import Any

from ._config_reader import describe, strict_json
from ._errors import RopeTypeError, RopeValueError

__all__ = [
    "load_preset",
    "preset_default_layer",
    "preset_info",
    "preset_layer_types",
    "presets",
]

#: Largest presets file read (the shipped one is about 60 kB).
MAX_PRESETS_BYTES = 4 * 2**20
_SOURCE = "rope_ref/presets/configs.json"


def _check_layers(name: str, entry: dict[str, Any]) -> None:
    types = entry.get("layer_types", [])
    if not (
        isinstance(types, list)
        and all(isinstance(t, str) and t for t in types)
        and len(set(types)) == len(types)
    ):
        raise RopeValueError(
            f"{_SOURCE}: {name}.layer_types must be a list of distinct layer type names, got "
            f"{describe(types)}"
        )
    default = entry.get("layer_type")
    if default is not None and not (isinstance(default, str) and (not types or default in types)):
        raise RopeValueError(
            f"{_SOURCE}: {name}.layer_type must be one of its layer_types {types}, got "
            f"{describe(default)}"
        )


def _check_entry(name: Any, entry: Any) -> None:
    if not isinstance(name, str) or name != name.lower() or not name:
        raise RopeValueError(f"{_SOURCE}: preset names must be lower-case strings, got {name!r}")
    if not isinstance(entry, dict):
        raise RopeValueError(f"{_SOURCE}: {name} must be an object, got {describe(entry)}")
    for key, kind in (("hf_id", str), ("source", str), ("config", dict)):
        if not isinstance(entry.get(key), kind):
            raise RopeValueError(
                f"{_SOURCE}: {name}.{key} must be a {kind.__name__}, got {describe(entry.get(key))}"
            )
    if not isinstance(entry.get("note", ""), str):
        raise RopeValueError(f"{_SOURCE}: {name}.note must be a string")
    _check_layers(name, entry)


def parse_presets(raw: bytes | str) -> dict[str, Any]:
    """The entries of a presets file (keys starting with "_" are comments), checked."""
    data = strict_json(raw, _SOURCE, max_bytes=MAX_PRESETS_BYTES)
    if not isinstance(data, dict):
        raise RopeValueError(f"{_SOURCE} must hold a JSON object, got {describe(data)}")
    out = {k: v for k, v in data.items() if not k.startswith("_")}
    for name, entry in out.items():
        _check_entry(name, entry)
    return out


@functools.lru_cache(maxsize=1)
def _data() -> dict[str, Any]:
    path = resources.files("rope_ref").joinpath("presets", "configs.json")
    return parse_presets(path.read_bytes())


def presets() -> tuple[str, ...]:
    """Names accepted by ``Rope.preset`` (real models, from their published config.json).

    Returns
    -------
    tuple of str
        The names, sorted.

    Examples
    --------
    >>> import rope_ref as rr
    >>> "llama-3.1-8b" in rr.presets()
    True
    """
    return tuple(sorted(_data()))


def _entry(name: Any) -> dict[str, Any]:
    if not isinstance(name, str):
        raise RopeTypeError(f"name must be a string, got {describe(name)}")
    data = _data()
    key = name.lower()
    if key not in data:
        raise RopeValueError(f"unknown preset {name!r}; accepted: {list(presets())}")
    entry: dict[str, Any] = data[key]
    return entry


def preset_info(name: str) -> dict[str, Any]:
    """The stored entry of a preset (a copy).

    Parameters
    ----------
    name : str
        A name of :func:`presets` (any case).

    Returns
    -------
    dict
        ``hf_id``, ``source``, ``note``, the ``config`` values and, for per-layer models,
        ``layer_types`` (the layer types it can build) and ``layer_type`` (the default one:
        ``"full_attention"`` for ``"gemma-3"``).

    Raises
    ------
    RopeTypeError
        ``name`` is not a string.
    RopeValueError
        ``name`` is not a preset.
    """
    return copy.deepcopy(_entry(name))


def preset_layer_types(name: str) -> tuple[str, ...]:
    """The layer types a preset can build (empty when every layer has the same RoPE).

    Examples
    --------
    >>> from rope_ref._presets import preset_layer_types
    >>> preset_layer_types("gemma-3")
    ('full_attention', 'sliding_attention')
    >>> preset_layer_types("llama-2-7b")
    ()
    """
    return tuple(_entry(name).get("layer_types", ()))


def preset_default_layer(name: str) -> str | None:
    """The layer type ``Rope.preset(name)`` builds when none is given (None: one RoPE)."""
    layer: str | None = _entry(name).get("layer_type")
    return layer


def load_preset(name: str, layer_type: str | None = None) -> tuple[dict[str, Any], str | None]:
    """(config, layer type) for ``Rope.preset``: the given layer type, checked against the
    preset's ``layer_types``, else the preset's default layer type."""
    entry = _entry(name)
    types = entry.get("layer_types", ())
    if layer_type is not None and not types:
        raise RopeValueError(
            f"layer_type {layer_type!r} given, but preset {name!r} has one RoPE for every "
            "layer (no layer_types): leave layer_type out"
        )
    if layer_type is not None and layer_type not in types:
        raise RopeValueError(
            f"layer_type {layer_type!r} is not one of preset {name!r}'s layer types {list(types)}"
        )
    return copy.deepcopy(entry["config"]), layer_type or entry.get("layer_type")
