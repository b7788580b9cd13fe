"""Reading a Hugging Face ``config.json`` (transformers v4 and v5) into a ``Rope``.

Everything read is recorded, so ``rope.explain()`` can say which keys were used, which
defaults were applied and which keys were present but not used (never silently ignored).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ._errors import RopeTypeError, RopeValueError

__all__ = ["ConfigReport", "from_hf_config"]

#: rope types accepted, with the scaling each maps to
ROPE_TYPES = (
    "default",
    "linear",
    "dynamic",
    "yarn",
    "longrope",
    "su",
    "llama3",
    "proportional",
    "mrope",
)

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

# per rope type: required and optional keys of the rope_scaling / rope_parameters dict
_KEYS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "default": ((), ()),
    "linear": (("factor",), ()),
    "dynamic": (("factor",), ()),
    "yarn": (
        ("factor",),
        (
            "original_max_position_embeddings",
            "beta_fast",
            "beta_slow",
            "attention_factor",
            "mscale",
            "mscale_all_dim",
            "truncate",
        ),
    ),
    "longrope": (
        ("short_factor", "long_factor"),
        ("original_max_position_embeddings", "factor", "attention_factor"),
    ),
    "llama3": (
        ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"),
        (),
    ),
    "proportional": ((), ("factor",)),
}


@dataclass
class ConfigReport:
    """What ``from_hf_config`` read: used keys (with values), defaults, unused keys, notes."""

    used: dict[str, Any] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)
    unused: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def text(self, rope: Any) -> str:
        lines = [f"{rope!r}"]
        lines.append("used:")
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
    r = repr(v)
    return r if len(r) <= 90 else r[:80] + f"... ({len(v) if hasattr(v, '__len__') else ''} items)"


def _as_dict(config: Any) -> dict[str, Any]:
    if isinstance(config, dict):
        return dict(config)
    if hasattr(config, "to_dict"):
        d = config.to_dict()
        if isinstance(d, dict):
            return d
    if hasattr(config, "__dict__"):
        return {k: v for k, v in vars(config).items() if not k.startswith("_")}
    raise RopeTypeError(
        f"config must be a dict (a parsed config.json) or an object with attributes, got "
        f"{type(config).__name__}"
    )


class _Reader:
    """Reads keys from a dict, recording each use."""

    def __init__(self, data: dict[str, Any], prefix: str, report: ConfigReport) -> None:
        self.data = data
        self.prefix = prefix
        self.report = report
        self.consumed: set[str] = set()

    def has(self, key: str) -> bool:
        return key in self.data and self.data[key] is not None

    def get(self, key: str, default: Any = None, *, record_default: bool = True) -> Any:
        if self.has(key):
            self.consumed.add(key)
            self.report.used[self.prefix + key] = self.data[key]
            return self.data[key]
        if key in self.data:
            self.consumed.add(key)  # present as null
        if default is not None and record_default:
            self.report.defaults[self.prefix + key] = default
        return default

    def require(self, key: str, rope_type: str) -> Any:
        if not self.has(key):
            req, opt = _KEYS[rope_type]
            raise RopeValueError(
                f"{self.prefix}{key} is required for rope_type {rope_type!r} (required keys: "
                f"{list(req) or 'none'}; optional: {list(opt) or 'none'})"
            )
        return self.get(key)

    def number(self, key: str, value: Any, *, positive: bool = True) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RopeTypeError(
                f"{self.prefix}{key} must be a number, got {type(value).__name__} {value!r}"
            )
        v = float(value)
        if not math.isfinite(v) or (positive and v <= 0):
            raise RopeValueError(f"{self.prefix}{key} must be a finite number > 0, got {value!r}")
        return v

    def integer(self, key: str, value: Any) -> int:
        if isinstance(value, bool) or not (
            isinstance(value, int) or (isinstance(value, float) and value.is_integer())
        ):
            raise RopeTypeError(
                f"{self.prefix}{key} must be an integer, got {type(value).__name__} {value!r}"
            )
        if value <= 0:
            raise RopeValueError(f"{self.prefix}{key} must be a positive integer, got {value!r}")
        return int(value)

    def leftovers(self, keys: tuple[str, ...] | None = None) -> None:
        for k, v in self.data.items():
            if k in self.consumed:
                continue
            if keys is None or k in keys:
                self.report.unused[self.prefix + k] = v


def from_hf_config(
    config: Any,
    *,
    layer_type: str | None = None,
    layout: str | None = None,
    dynamic_variant: str = "hf",
) -> tuple[dict[str, Any], ConfigReport]:
    """The ``Rope`` arguments for a Hugging Face config, and the report of what was read."""
    from . import scaling as S

    report = ConfigReport()
    top = _as_dict(config)
    if not isinstance(top, dict):  # pragma: no cover
        raise RopeTypeError("config must be a mapping")
    has_rope_keys = any(k in top for k in ("rope_theta", "rope_scaling", "rope_parameters"))
    if not has_rope_keys and isinstance(top.get("text_config"), dict):
        report.notes.append("RoPE keys read from text_config (multimodal config)")
        data = dict(top["text_config"])
        data.setdefault("model_type", top.get("model_type"))
        prefix = "text_config."
    else:
        data = top
        prefix = ""
    mt = data.get("model_type")
    for key, value in _MODEL_DEFAULTS.get(mt, {}).items() if isinstance(mt, str) else ():
        if data.get(key) is None:
            data[key] = value
            report.notes.append(
                f"{prefix}{key} = {value!r} is the transformers default for model_type {mt!r} "
                "(absent from the config)"
            )
    r = _Reader(data, prefix, report)
    model_type = r.get("model_type") if r.has("model_type") else None

    # ---- the rope parameter dict: v5 rope_parameters (maybe per layer type) or v4 rope_scaling
    params: dict[str, Any] | None = None
    params_name = ""
    if r.has("rope_parameters"):
        rp = r.get("rope_parameters")
        if not isinstance(rp, dict):
            raise RopeTypeError(f"{prefix}rope_parameters must be a dict, got {rp!r}")
        nested = rp and all(isinstance(v, dict) for v in rp.values())
        if nested:
            if layer_type is None:
                raise RopeValueError(
                    f"{prefix}rope_parameters is per layer type: pass layer_type= one of "
                    f"{sorted(rp)}"
                )
            if layer_type not in rp:
                raise RopeValueError(
                    f"layer_type {layer_type!r} is not in {prefix}rope_parameters; accepted: "
                    f"{sorted(rp)}"
                )
            params = dict(rp[layer_type])
            params_name = f"{prefix}rope_parameters.{layer_type}."
            report.notes.append(f"layer type {layer_type!r} of a per-layer-type config")
        else:
            params = dict(rp)
            params_name = f"{prefix}rope_parameters."
        if r.has("rope_scaling"):
            r.get("rope_scaling")
            report.notes.append("rope_scaling ignored: rope_parameters (transformers v5) wins")
    elif r.has("rope_scaling"):
        rs = r.get("rope_scaling")
        if not isinstance(rs, dict):
            raise RopeTypeError(f"{prefix}rope_scaling must be a dict or null, got {rs!r}")
        params = dict(rs)
        params_name = f"{prefix}rope_scaling."
    pr = _Reader(params or {}, params_name, report)

    # ---- Gemma 3 style (v4): a local base for sliding layers beside the global rope_theta
    use_local = False
    if data.get("rope_local_base_freq") is not None and not params_name.endswith(f".{layer_type}."):
        if layer_type not in ("sliding_attention", "full_attention"):
            raise RopeValueError(
                f"{prefix}rope_local_base_freq is set (sliding-window layers use their own "
                f"base): pass layer_type= one of ['full_attention', 'sliding_attention'], got "
                f"{layer_type!r}"
            )
        use_local = layer_type == "sliding_attention"

    # ---- rope type
    rope_type = "default"
    if params:
        for key in ("rope_type", "type"):
            if pr.has(key):
                rope_type = pr.get(key)
                break
        if not isinstance(rope_type, str):
            raise RopeTypeError(f"{params_name}rope_type must be a string, got {rope_type!r}")
        if rope_type not in ROPE_TYPES:
            raise RopeValueError(
                f"{params_name}rope_type {rope_type!r} is not supported; accepted: "
                f"{list(ROPE_TYPES)}"
            )
    if rope_type == "su":
        report.notes.append("rope_type 'su' is the old name of 'longrope'")
        rope_type = "longrope"
    if rope_type == "mrope":
        report.notes.append("rope_type 'mrope' (Qwen2-VL, transformers v4) is default + sections")
        rope_type = "default"
    if use_local:
        report.notes.append("sliding-attention layer: base = rope_local_base_freq, no scaling")

    # ---- base
    if use_local:
        base = r.number("rope_local_base_freq", r.get("rope_local_base_freq"))
    elif pr.has("rope_theta"):
        base = pr.number("rope_theta", pr.get("rope_theta"))
    elif r.has("rope_theta"):
        base = r.number("rope_theta", r.get("rope_theta"))
    elif r.has("rotary_emb_base"):
        base = r.number("rotary_emb_base", r.get("rotary_emb_base"))
    else:
        base = 10_000.0
        report.defaults[f"{prefix}rope_theta"] = base

    # ---- head size and rotary part
    if r.has("qk_rope_head_dim"):
        head_dim = r.integer("qk_rope_head_dim", r.get("qk_rope_head_dim"))
        report.notes.append("DeepSeek-style attention: RoPE acts on the qk_rope_head_dim part")
    elif r.has("head_dim"):
        head_dim = r.integer("head_dim", r.get("head_dim"))
    else:
        hidden_key = "hidden_size" if r.has("hidden_size") else "n_embd"
        heads_key = "num_attention_heads" if r.has("num_attention_heads") else "n_head"
        if not (r.has(hidden_key) and r.has(heads_key)):
            raise RopeValueError(
                f"{prefix}head_dim is missing and so is hidden_size / num_attention_heads to "
                "derive it from (or qk_rope_head_dim for DeepSeek-style attention)"
            )
        hidden = r.integer(hidden_key, r.get(hidden_key))
        heads = r.integer(heads_key, r.get(heads_key))
        if hidden % heads:
            raise RopeValueError(
                f"{prefix}{hidden_key}={hidden} is not a multiple of {heads_key}={heads}"
            )
        head_dim = hidden // heads
    rotary_dim = head_dim
    partial: float | None = None
    for rd, key in ((pr, "partial_rotary_factor"), (r, "partial_rotary_factor"), (r, "rotary_pct")):
        if rd.has(key):
            partial = rd.number(key, rd.get(key))
            break
    if r.has("rotary_dim"):
        rotary_dim = r.integer("rotary_dim", r.get("rotary_dim"))
    elif partial is not None and rope_type != "proportional":
        if partial > 1:
            raise RopeValueError(f"partial_rotary_factor must be <= 1, got {partial}")
        rotary_dim = int(head_dim * partial)  # HF: int(head_dim * partial_rotary_factor)

    max_pos = None
    for key in ("max_position_embeddings", "n_positions"):
        if r.has(key):
            max_pos = r.integer(key, r.get(key))
            break

    def original_max(required: bool) -> int:
        # LongRoPE: the model attribute wins (the Phi-3 exception in HF); else the dict's.
        if rope_type == "longrope" and r.has("original_max_position_embeddings"):
            return r.integer(
                "original_max_position_embeddings", r.get("original_max_position_embeddings")
            )
        if pr.has("original_max_position_embeddings"):
            return pr.integer(
                "original_max_position_embeddings", pr.get("original_max_position_embeddings")
            )
        if r.has("original_max_position_embeddings"):
            return r.integer(
                "original_max_position_embeddings", r.get("original_max_position_embeddings")
            )
        if required and max_pos is not None:
            report.defaults[f"{params_name}original_max_position_embeddings"] = max_pos
            report.notes.append(
                "original_max_position_embeddings taken from "
                "max_position_embeddings (as HF standardize_rope_params does)"
            )
            return max_pos
        raise RopeValueError(
            f"{params_name}original_max_position_embeddings is required for rope_type "
            f"{rope_type!r} (and max_position_embeddings is missing too)"
        )

    def factor_or_ratio(l0: int) -> float:
        # YaRN and LongRoPE: `factor`, else max_position_embeddings / original (as HF does)
        if pr.has("factor"):
            return pr.number("factor", pr.get("factor"))
        if max_pos is None:
            pr.require("factor", rope_type)
        ratio = max_pos / l0  # type: ignore[operator]
        report.defaults[f"{params_name}factor"] = ratio
        return ratio

    # ---- scaling object
    scaling: Any = None
    if use_local:
        pass
    elif rope_type == "linear":
        scaling = S.Linear(pr.number("factor", pr.require("factor", "linear")))
    elif rope_type == "dynamic":
        factor = pr.number("factor", pr.require("factor", "dynamic"))
        if max_pos is None:
            raise RopeValueError(
                f"{prefix}max_position_embeddings is required for rope_type 'dynamic'"
            )
        scaling = S.DynamicNTK(factor, max_pos, variant=dynamic_variant)
    elif rope_type == "yarn":
        l0 = original_max(True)
        factor = factor_or_ratio(l0)
        kw: dict[str, Any] = {}
        for key in ("beta_fast", "beta_slow"):
            v = pr.get(key, record_default=False)
            if v:  # HF reads these with `or`: 0 means the default
                kw[key] = pr.number(key, v)
            else:
                report.defaults[params_name + key] = 32.0 if key == "beta_fast" else 1.0
        for key in ("mscale", "mscale_all_dim", "attention_factor"):
            v = pr.get(key, record_default=False)
            if v is not None:
                kw[key] = pr.number(key, v, positive=False)
        if pr.has("truncate"):
            t = pr.get("truncate")
            if not isinstance(t, bool):
                raise RopeTypeError(f"{params_name}truncate must be true or false, got {t!r}")
            kw["truncate"] = t
        if kw.get("mscale") == 0 or kw.get("mscale_all_dim") == 0:
            report.notes.append("mscale 0 counts as absent (HF tests truthiness)")
            kw = {k: v for k, v in kw.items() if not (k.startswith("mscale") and v == 0)}
        scaling = S.YaRN(factor, l0, **kw)
    elif rope_type == "longrope":
        short = pr.require("short_factor", "longrope")
        long = pr.require("long_factor", "longrope")
        for name, lst in (("short_factor", short), ("long_factor", long)):
            if not isinstance(lst, (list, tuple)):
                raise RopeTypeError(f"{params_name}{name} must be a list, got {lst!r}")
            if len(lst) != rotary_dim // 2:
                raise RopeValueError(
                    f"{params_name}{name} has {len(lst)} values; expected rotary_dim // 2 = "
                    f"{rotary_dim // 2}"
                )
        l0 = original_max(True)
        factor = factor_or_ratio(l0)
        af = pr.get("attention_factor", record_default=False)
        scaling = S.LongRoPE(
            tuple(short),
            tuple(long),
            l0,
            factor=factor,
            attention_factor=None if af is None else pr.number("attention_factor", af),
        )
    elif rope_type == "llama3":
        scaling = S.Llama3(
            pr.number("factor", pr.require("factor", "llama3")),
            pr.number("low_freq_factor", pr.require("low_freq_factor", "llama3")),
            pr.number("high_freq_factor", pr.require("high_freq_factor", "llama3")),
            original_max(True),
        )
    elif rope_type == "proportional":
        f = pr.get("factor", 1.0)
        scaling = S.Proportional(partial if partial is not None else 1.0, pr.number("factor", f))
        if partial is None:
            report.notes.append("proportional without partial_rotary_factor: every pair turns")

    # ---- multi-axis (M-RoPE): mrope_section in the dict
    if pr.has("mrope_section") and not use_local:
        sections = pr.get("mrope_section")
        if not isinstance(sections, (list, tuple)):
            raise RopeTypeError(f"{params_name}mrope_section must be a list, got {sections!r}")
        interleaved = bool(pr.get("mrope_interleaved", False, record_default=False))
        if scaling is not None:
            raise RopeValueError(
                f"{params_name}mrope_section together with rope_type {rope_type!r} is not "
                "supported (M-RoPE with a frequency scaling)"
            )
        scaling = S.MRope(tuple(sections), interleaved=interleaved)

    # ---- layout
    if layout is None:
        if model_type in _INTERLEAVED_TYPES:
            layout = "interleaved"
            report.notes.append(f"layout interleaved: {_INTERLEAVED_TYPES[model_type]}")
        elif model_type in _DEEPSEEK_TYPES and r.get("rope_interleave", True, record_default=False):
            layout = "interleaved"
            report.notes.append("layout interleaved: DeepSeek rope_interleave (default true)")
        else:
            layout = "half"
            report.notes.append("layout half (rotate_half), the transformers default")
    else:
        report.notes.append(f"layout {layout!r} given by the caller")

    # ---- leftovers
    if params is not None:
        pr.leftovers()
    r.leftovers(_TOP_KEYS)

    kwargs: dict[str, Any] = {
        "head_dim": head_dim,
        "base": base,
        "rotary_dim": rotary_dim,
        "layout": layout,
        "scaling": scaling,
    }
    return kwargs, report
