"""Reading a Hugging Face ``config.json`` (transformers v4 and v5) into a ``Rope``.

The steps, one small function each: find the dict holding the RoPE keys (the config or its
``text_config``, with transformers' class defaults for sparse configs), pick the RoPE
parameter dict (v5 ``rope_parameters``, maybe per layer type, or v4 ``rope_scaling``), then
read the rope type, the base, the head size and rotary part, the context length, the
schedule (one reader per rope type, in ``_config_schedules``), the M-RoPE sections and the
layout. Everything read is recorded (``_config_reader.KeyReader``), so ``rope.explain()`` can
say which keys were used, which defaults were applied and which keys were present but not
used (never silently ignored). Every bad value is a ``RopeTypeError`` / ``RopeValueError``
naming the key as the user wrote it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ._config_reader import (
    MAX_HEAD_DIM,
    ConfigReport,
    KeyReader,
    check_keys,
    describe,
)
from ._config_schedules import ALIASES, READERS, ScheduleInput, read_mrope, read_schedule
from ._errors import RopeTypeError, RopeValueError

__all__ = ["ConfigReport", "from_hf_config"]

#: rope types accepted (old names included)
ROPE_TYPES = (*READERS, *ALIASES)

# keys a RoPE reading may consume at the top level of a config (or of its text_config)
_TOP_KEYS = (
    "rope_theta",
    "rope_scaling",
    "rope_parameters",
    "partial_rotary_factor",
    "head_dim",
    "hidden_size",
    "num_attention_heads",
    "max_position_embeddings",
    "original_max_position_embeddings",
    "qk_rope_head_dim",
    "rotary_pct",
    "rotary_emb_base",
    "rotary_dim",
    "n_embd",
    "n_head",
    "n_positions",
    "rope_local_base_freq",
    "model_type",
    "rope_interleave",
)

# model types whose checkpoints rotate interleaved pairs (complex / rotate_every_two form)
_INTERLEAVED_TYPES = {
    "gptj": "GPT-J rotate_every_two",
    "llama4": "Llama 4 complex form",
    "llama4_text": "Llama 4 complex form",
}
_DEEPSEEK_TYPES = ("deepseek_v2", "deepseek_v3", "kimi_k2")

# Config-class defaults of transformers for model types whose published config.json leaves
# RoPE keys out (they are then filled by the class, e.g. Gemma3TextConfig).
_MODEL_DEFAULTS: dict[str, dict[str, Any]] = {
    "gemma3_text": {
        "rope_theta": 1_000_000.0,
        "rope_local_base_freq": 10_000.0,
        "head_dim": 256,
        "max_position_embeddings": 131_072,
    },
    "gemma2": {"rope_theta": 10_000.0, "head_dim": 256},
}
_LOCAL_LAYERS = ("full_attention", "sliding_attention")


@dataclass
class _Params:
    """The RoPE parameter dict chosen, and whether it was one layer type's."""

    reader: KeyReader
    per_layer: bool = False


def _as_dict(config: Any) -> dict[str, Any]:
    if isinstance(config, Mapping):
        return dict(config)
    if hasattr(config, "to_dict"):
        d = config.to_dict()
        if isinstance(d, Mapping):
            return dict(d)
    if hasattr(config, "__dict__"):
        return {k: v for k, v in vars(config).items() if not str(k).startswith("_")}
    raise RopeTypeError(
        "config must be a dict (a parsed config.json) or an object with attributes, got "
        f"{describe(config)}"
    )


def _model_type(data: Mapping[str, Any], prefix: str) -> str | None:
    mt = data.get("model_type")
    if mt is not None and not isinstance(mt, str):
        raise RopeTypeError(f"{prefix}model_type must be a string, got {describe(mt)}")
    return mt


def _rope_section(top: dict[str, Any], report: ConfigReport) -> KeyReader:
    """The dict with the RoPE keys (text_config for multimodal configs), class defaults added."""
    check_keys(top, "config")
    _model_type(top, "")
    has_rope_keys = any(k in top for k in ("rope_theta", "rope_scaling", "rope_parameters"))
    data, prefix = top, ""
    if not has_rope_keys and isinstance(top.get("text_config"), Mapping):
        report.notes.append("RoPE keys read from text_config (multimodal config)")
        data, prefix = dict(top["text_config"]), "text_config."
        check_keys(data, "text_config")
        data.setdefault("model_type", top.get("model_type"))
    mt = _model_type(data, prefix)
    added = [k for k in _MODEL_DEFAULTS.get(mt or "", {}) if data.get(k) is None]
    for key in added:
        data[key] = value = _MODEL_DEFAULTS[mt or ""][key]
        report.notes.append(
            f"{prefix}{key} = {value!r} is the transformers default for model_type {mt!r} "
            "(absent from the config)"
        )
    reader = KeyReader(data, prefix, report)
    reader.consumed.update(added)  # class defaults: listed as used when read, never as unused
    return reader


def _layer_params(rp: dict[str, Any], name: str, layer_type: str | None) -> dict[str, Any]:
    """One layer type's dict of a per-layer-type ``rope_parameters``."""
    if layer_type is None:
        raise RopeValueError(f"{name} is per layer type: pass layer_type= one of {sorted(rp)}")
    if layer_type not in rp:
        raise RopeValueError(f"layer_type {layer_type!r} is not in {name}; accepted: {sorted(rp)}")
    if rp[layer_type] is None:
        raise RopeValueError(
            f"{name}.{layer_type} is null: layers of type {layer_type!r} use no RoPE"
        )
    return dict(rp[layer_type])


def _rope_params(r: KeyReader, layer_type: str | None) -> _Params:
    """v5 ``rope_parameters`` (maybe per layer type) or v4 ``rope_scaling``, as a reader."""
    report, prefix = r.report, r.prefix
    if r.has("rope_parameters"):
        rp = r.get("rope_parameters")
        name = r.name("rope_parameters")
        if not isinstance(rp, Mapping):
            raise RopeTypeError(f"{name} must be a dict, got {describe(rp)}")
        check_keys(rp, name)
        if r.has("rope_scaling"):
            r.get("rope_scaling")
            report.notes.append("rope_scaling ignored: rope_parameters (transformers v5) wins")
        values = list(rp.values())
        if any(isinstance(v, Mapping) for v in values) and all(
            v is None or isinstance(v, Mapping) for v in values
        ):
            params = _layer_params(dict(rp), name, layer_type)
            report.notes.append(f"layer type {layer_type!r} of a per-layer-type config")
            return _Params(KeyReader(params, f"{name}.{layer_type}.", report), per_layer=True)
        return _Params(KeyReader(dict(rp), f"{name}.", report))
    if r.has("rope_scaling"):
        rs = r.get("rope_scaling")
        if not isinstance(rs, Mapping):
            raise RopeTypeError(f"{prefix}rope_scaling must be a dict or null, got {describe(rs)}")
        return _Params(KeyReader(dict(rs), f"{prefix}rope_scaling.", report))
    return _Params(KeyReader({}, f"{prefix}rope_scaling.", report))


def _uses_local_base(r: KeyReader, params: _Params, layer_type: str | None) -> bool:
    """Gemma 3 (v4): sliding-window layers use rope_local_base_freq, not rope_theta."""
    if not r.has("rope_local_base_freq") or params.per_layer:
        return False
    if layer_type not in _LOCAL_LAYERS:
        raise RopeValueError(
            f"{r.name('rope_local_base_freq')} is set (sliding-window layers use their own "
            f"base): pass layer_type= one of {list(_LOCAL_LAYERS)}, got {layer_type!r}"
        )
    if layer_type == "full_attention":
        r.report.notes.append(
            "full-attention layer: base = rope_theta with the scaling (rope_local_base_freq "
            "is the sliding layers' base)"
        )
    return layer_type == "sliding_attention"


def _check_layer_type(r: KeyReader, params: _Params, layer_type: str | None) -> None:
    """A layer_type for a config with one RoPE for all layers: checked against layer_types."""
    if layer_type is None or params.per_layer or r.has("rope_local_base_freq"):
        return
    declared = r.data.get("layer_types")
    if (
        isinstance(declared, list)
        and all(isinstance(t, str) for t in declared)
        and layer_type not in declared
    ):
        raise RopeValueError(
            f"layer_type {layer_type!r} is not in {r.name('layer_types')}; accepted: "
            f"{sorted(set(declared))}"
        )
    r.report.notes.append(
        f"layer_type {layer_type!r}: this config has one RoPE for every layer type"
    )


def _rope_type(pr: KeyReader) -> str:
    rope_type: Any = "default"
    for key in ("rope_type", "type"):
        if pr.has(key):
            rope_type = pr.get(key)
            break
    if not isinstance(rope_type, str):
        raise RopeTypeError(f"{pr.name('rope_type')} must be a string, got {describe(rope_type)}")
    if rope_type not in ROPE_TYPES:
        raise RopeValueError(
            f"{pr.name('rope_type')} {rope_type!r} is not supported; accepted: {list(ROPE_TYPES)}"
        )
    if rope_type in ALIASES:
        rope_type, note = ALIASES[rope_type]
        pr.report.notes.append(note)
    return str(rope_type)


def _base(r: KeyReader, pr: KeyReader, use_local: bool) -> float:
    if use_local:
        return r.number("rope_local_base_freq")  # type: ignore[return-value]
    for rd, key in ((pr, "rope_theta"), (r, "rope_theta"), (r, "rotary_emb_base")):
        if rd.has(key):
            return rd.number(key)  # type: ignore[return-value]
    r.report.defaults[r.name("rope_theta")] = 10_000.0
    return 10_000.0


def _head_dim(r: KeyReader) -> tuple[int, str]:
    """The head size, and how the config gave it (for messages)."""
    for key in ("qk_rope_head_dim", "head_dim"):
        if r.has(key):
            if key == "qk_rope_head_dim":
                r.report.notes.append(
                    "DeepSeek-style attention: RoPE acts on the qk_rope_head_dim part"
                )
            return r.integer(key, maximum=MAX_HEAD_DIM), r.name(key)  # type: ignore[return-value]
    hidden_key = "hidden_size" if r.has("hidden_size") else "n_embd"
    heads_key = "num_attention_heads" if r.has("num_attention_heads") else "n_head"
    if not (r.has(hidden_key) and r.has(heads_key)):
        raise RopeValueError(
            f"{r.name('head_dim')} is missing and so is hidden_size / num_attention_heads to "
            "derive it from (or qk_rope_head_dim for DeepSeek-style attention)"
        )
    hidden, heads = r.integer(hidden_key), r.integer(heads_key)
    assert hidden is not None and heads is not None
    if hidden % heads:
        raise RopeValueError(
            f"{r.name(hidden_key)}={hidden} is not a multiple of {r.name(heads_key)}={heads}"
        )
    how = f"{r.name(hidden_key)} // {r.name(heads_key)}"
    if hidden // heads > MAX_HEAD_DIM:
        raise RopeValueError(
            f"head_dim = {how} = {hidden // heads} is too large (at most {MAX_HEAD_DIM})"
        )
    return hidden // heads, how


def _partial(r: KeyReader, pr: KeyReader) -> tuple[float | None, str]:
    """partial_rotary_factor (the dict's, else the model's) or rotary_pct, in (0, 1]."""
    for rd, key in ((pr, "partial_rotary_factor"), (r, "partial_rotary_factor"), (r, "rotary_pct")):
        if rd.has(key):
            value = rd.number(key)
            assert value is not None
            if value > 1:
                raise RopeValueError(f"{rd.name(key)} must be <= 1, got {value}")
            return value, rd.name(key)
    return None, ""


def _rotary_dim(
    r: KeyReader, pr: KeyReader, head: tuple[int, str], rope_type: str
) -> tuple[int, float | None]:
    """(rotary_dim, partial factor): rotary_dim, else int(head_dim * factor) as in HF."""
    head_dim, how = head
    partial, partial_key = _partial(r, pr)
    if r.has("rotary_dim"):
        rotary_dim = r.integer("rotary_dim", maximum=head_dim)
        assert rotary_dim is not None
        if rotary_dim % 2:
            raise RopeValueError(
                f"{r.name('rotary_dim')} must be even (the rotation turns pairs), got {rotary_dim}"
            )
        if partial is not None:
            r.report.notes.append(f"{partial_key} not applied: {r.name('rotary_dim')} is given")
        return rotary_dim, partial
    if partial is None or rope_type == "proportional":
        if head_dim % 2:
            raise RopeValueError(
                f"{how} = {head_dim} is odd: the rotation turns pairs of channels (give an even "
                "rotary_dim or a partial_rotary_factor)"
            )
        return head_dim, partial
    rotary_dim = int(head_dim * partial)  # HF: int(head_dim * partial_rotary_factor)
    if rotary_dim < 2 or rotary_dim % 2:
        raise RopeValueError(
            f"{partial_key} = {partial} gives int({head_dim} * {partial}) = {rotary_dim} "
            "rotating channels; it must give an even number >= 2 (the rotation turns pairs)"
        )
    return rotary_dim, partial


def _max_positions(r: KeyReader) -> int | None:
    for key in ("max_position_embeddings", "n_positions"):
        if r.has(key):
            return r.integer(key)
    return None


def _layout(r: KeyReader, model_type: str | None, layout: str | None) -> str:
    notes = r.report.notes
    if layout is not None:
        notes.append(f"layout {layout!r} given by the caller")
        return layout
    if model_type in _INTERLEAVED_TYPES:
        notes.append(f"layout interleaved: {_INTERLEAVED_TYPES[model_type]}")
        return "interleaved"
    if model_type in _DEEPSEEK_TYPES and r.flag("rope_interleave", True):
        notes.append("layout interleaved: DeepSeek rope_interleave (default true)")
        return "interleaved"
    notes.append("layout half (rotate_half), the transformers default")
    return "half"


def _check_arguments(layer_type: Any, dynamic_variant: Any) -> None:
    from .scaling._dynamic import VARIANTS

    if layer_type is not None and not isinstance(layer_type, str):
        raise RopeTypeError(f"layer_type must be a string or None, got {describe(layer_type)}")
    if not isinstance(dynamic_variant, str) or dynamic_variant not in VARIANTS:
        raise RopeValueError(
            f"dynamic_variant must be one of {list(VARIANTS)}, got {describe(dynamic_variant)}"
        )


def from_hf_config(
    config: Any,
    *,
    layer_type: str | None = None,
    layout: str | None = None,
    dynamic_variant: str = "hf",
) -> tuple[dict[str, Any], ConfigReport]:
    """The ``Rope`` arguments for a Hugging Face config, and the report of what was read.

    Parameters
    ----------
    config : dict or object
        A parsed config.json (or a transformers config object, or any object with
        attributes).
    layer_type : str, optional
        For per-layer-type configs (v5 ``rope_parameters`` keyed by layer type, Gemma 3's
        ``rope_local_base_freq``): which layer type. Checked against ``layer_types`` when a
        config with one RoPE for all layers declares them.
    layout : str, optional
        Overrides the layout read from the model type.
    dynamic_variant : {"hf", "vllm"}
        For ``rope_type`` "dynamic": see ``scaling.DynamicNTK``.

    Returns
    -------
    (dict, ConfigReport)
        ``head_dim``, ``base``, ``rotary_dim``, ``layout``, ``scaling`` (and ``axes`` for
        M-RoPE with a frequency schedule); and the report
        ``Rope.explain()`` prints.

    Raises
    ------
    RopeTypeError, RopeValueError
        Naming the key as written (``text_config.rope_scaling.factor``), the value given and
        what was expected. Decisions where transformers is lax: a YaRN dict without
        ``factor`` (or with null) raises, as transformers 5 does for a missing key, instead of
        inferring max / original max (LongRoPE does infer it, as transformers does); booleans
        must be JSON booleans (the string "false" is refused, never read as true); keys must
        be strings; a head size above ``MAX_HEAD_DIM`` (16384) and lengths above 2**53 are
        refused before anything is built; a partial rotary factor must give an even number
        of channels >= 2.
    """
    _check_arguments(layer_type, dynamic_variant)
    report = ConfigReport()
    r = _rope_section(_as_dict(config), report)
    model_type = r.string("model_type")
    params = _rope_params(r, layer_type)
    pr = params.reader
    use_local = _uses_local_base(r, params, layer_type)
    _check_layer_type(r, params, layer_type)
    rope_type = _rope_type(pr)
    if use_local:
        report.notes.append("sliding-attention layer: base = rope_local_base_freq, no scaling")
    base = _base(r, pr, use_local)
    head = _head_dim(r)
    rotary_dim, partial = _rotary_dim(r, pr, head, rope_type)
    inp = ScheduleInput(
        params=pr,
        top=r,
        rope_type=rope_type,
        rotary_dim=rotary_dim,
        partial=partial,
        max_pos=_max_positions(r),
        dynamic_variant=dynamic_variant,
    )
    scaling, axes = (None, None) if use_local else read_mrope(inp, read_schedule(inp))
    kwargs: dict[str, Any] = {
        "head_dim": head[0],
        "base": base,
        "rotary_dim": rotary_dim,
        "layout": _layout(r, model_type, layout),
        "scaling": scaling,
    }
    if axes is not None:
        kwargs["axes"] = axes
    pr.leftovers()
    r.leftovers(_TOP_KEYS)
    return kwargs, report
