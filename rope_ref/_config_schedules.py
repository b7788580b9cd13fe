"""One small reader per frequency schedule of a Hugging Face config (``rope_type``).

Each reader takes a :class:`ScheduleInput` (the ``rope_scaling`` / ``rope_parameters`` dict
and what the rest of the config fixed: sizes, context length) and returns the
``rope_ref.scaling`` object, or None for plain RoPE. Each reads only its own keys, the same
ones transformers 5 reads, and names them as the user wrote them in every error. The table
:data:`READERS` dispatches on the rope type; :data:`KEYS` lists the required and optional
keys of each (for messages). To read a new schedule: write ``_read_<type>`` and add it to
both tables.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import scaling as S
from ._config_reader import KeyReader, as_integer, as_number, scalar_kind
from ._errors import RopeError, RopeValueError

__all__ = ["KEYS", "READERS", "ScheduleInput", "read_mrope", "read_schedule"]

#: per rope type: required and optional keys of its dict (transformers 5's validation)
KEYS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "default": ((), ()),
    "linear": (("factor",), ()),
    "dynamic": (("factor",), ()),
    "yarn": (
        ("factor", "original_max_position_embeddings"),
        ("beta_fast", "beta_slow", "attention_factor", "mscale", "mscale_all_dim", "truncate"),
    ),
    "longrope": (
        ("short_factor", "long_factor", "original_max_position_embeddings"),
        ("factor", "attention_factor"),
    ),
    "llama3": (
        ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"),
        (),
    ),
    "proportional": ((), ("factor", "partial_rotary_factor")),
}

#: old names of rope types, with the note explain() shows
ALIASES = {
    "su": ("longrope", "rope_type 'su' is the old name of 'longrope'"),
    "mrope": ("default", "rope_type 'mrope' (Qwen2-VL, transformers v4) is default + sections"),
}


@dataclass
class ScheduleInput:
    """What a schedule reader needs: its dict, the model-level keys and the sizes."""

    params: KeyReader  # rope_scaling / rope_parameters (maybe of one layer type)
    top: KeyReader  # the model-level keys (config or text_config)
    rope_type: str
    rotary_dim: int
    partial: float | None  # partial_rotary_factor (or rotary_pct), if given
    max_pos: int | None  # max_position_embeddings (or n_positions), if given
    dynamic_variant: str = "hf"
    l0_name: str = "original_max_position_embeddings"  # where original_max() read it

    def why(self) -> str:
        """The end of a 'key is required' message: the rope type and its keys."""
        req, opt = KEYS[self.rope_type]
        return (
            f"for rope_type {self.rope_type!r} (required keys: {list(req) or 'none'}; "
            f"optional: {list(opt) or 'none'})"
        )

    def need(self, key: str) -> float:
        """A required number > 0 of the dict."""
        self.params.require(key, self.why())
        return self.params.number(key)  # type: ignore[return-value]

    def original_max(self) -> int:
        """original_max_position_embeddings: the dict's, else the model's, else
        max_position_embeddings (as transformers' standardize_rope_params)."""
        key = "original_max_position_embeddings"
        p, t = self.params, self.top
        # LongRoPE: the model attribute wins (transformers' Phi-3 exception)
        readers = (t, p) if self.rope_type == "longrope" else (p, t)
        for rd in readers:
            if rd.has(key):
                self.l0_name = rd.name(key)
                return rd.integer(key)  # type: ignore[return-value]
        if self.max_pos is None:
            raise RopeValueError(
                f"{p.name(key)} is required for rope_type {self.rope_type!r} (and "
                f"{t.name('max_position_embeddings')} is missing too)"
            )
        p.report.defaults[p.name(key)] = self.max_pos
        self.l0_name = f"{p.name(key)} (= {t.name('max_position_embeddings')})"
        p.report.notes.append(
            "original_max_position_embeddings taken from max_position_embeddings (as "
            "transformers' standardize_rope_params does)"
        )
        return self.max_pos


def _build(inp: ScheduleInput, make: Callable[..., S.Scaling], *args: Any, **kw: Any) -> S.Scaling:
    """Construct a schedule; an error it raises is re-raised naming the config dict."""
    try:
        return make(*args, **kw)
    except RopeError as exc:
        where = inp.params.prefix.rstrip(".") or "the config"
        raise type(exc)(f"{where} (rope_type {inp.rope_type!r}): {exc}") from None


def _read_default(inp: ScheduleInput) -> None:
    return None


def _read_linear(inp: ScheduleInput) -> S.Scaling:
    return _build(inp, S.Linear, inp.need("factor"))


def _read_dynamic(inp: ScheduleInput) -> S.Scaling:
    factor = inp.need("factor")
    if inp.max_pos is None:
        raise RopeValueError(
            f"{inp.top.name('max_position_embeddings')} is required for rope_type 'dynamic'"
        )
    return _build(inp, S.DynamicNTK, factor, inp.max_pos, variant=inp.dynamic_variant)


def _yarn_betas(inp: ScheduleInput) -> dict[str, float]:
    p, out = inp.params, {}
    for key, default in (("beta_fast", 32.0), ("beta_slow", 1.0)):
        value = p.get(key, record_default=False)
        if value is not None and not (scalar_kind(value) in ("int", "real") and value == 0):
            out[key] = as_number(p.name(key), value)
        else:  # transformers reads these with `or`: absent, null or 0 mean the default
            p.report.defaults[p.name(key)] = default
    fast, slow = out.get("beta_fast", 32.0), out.get("beta_slow", 1.0)
    if fast < slow:
        raise RopeValueError(
            f"{p.name('beta_fast')} ({fast}) must be >= {p.name('beta_slow')} ({slow})"
        )
    return out


def _yarn_magnitudes(inp: ScheduleInput) -> dict[str, float]:
    p, out = inp.params, {}
    for key in ("mscale", "mscale_all_dim"):
        v = p.number(key, positive=False)
        if v is not None and v < 0:
            raise RopeValueError(
                f"{p.name(key)} must be >= 0 (0 counts as absent, as in transformers), got {v}"
            )
        if v:
            out[key] = v
        elif v == 0:
            p.report.notes.append(f"{p.name(key)} 0 counts as absent (transformers tests truth)")
    af = p.number("attention_factor")
    if af is not None:
        out["attention_factor"] = af
    return out


def _read_yarn(inp: ScheduleInput) -> S.Scaling:
    l0 = inp.original_max()
    # transformers 5 raises KeyError without `factor` (and only warns, inferring max /
    # original max, when it is null): a reference does not guess.
    inp.params.require("factor", inp.why() + "; transformers 5 refuses a YaRN config without it")
    factor = inp.need("factor")
    kw: dict[str, Any] = {**_yarn_betas(inp), **_yarn_magnitudes(inp)}
    kw["truncate"] = inp.params.flag("truncate", True)
    return _build(inp, S.YaRN, factor, l0, **kw)


def _factor_list(inp: ScheduleInput, key: str) -> tuple[float, ...]:
    p = inp.params
    p.require(key, inp.why())
    values = p.sequence(key) or []
    n = inp.rotary_dim // 2
    if len(values) != n:
        raise RopeValueError(
            f"{p.name(key)} has {len(values)} values; expected rotary_dim // 2 = {n}"
        )
    return tuple(as_number(f"{p.name(key)}[{i}]", v) for i, v in enumerate(values))


def _read_longrope(inp: ScheduleInput) -> S.Scaling:
    p = inp.params
    short = _factor_list(inp, "short_factor")
    long = _factor_list(inp, "long_factor")
    l0 = inp.original_max()
    factor = p.number("factor")
    if factor is None:  # transformers: max_position_embeddings / original (Phi-3)
        if inp.max_pos is None:
            p.require("factor", inp.why() + " when max_position_embeddings is absent")
        factor = inp.max_pos / l0  # type: ignore[operator]
        p.report.defaults[p.name("factor")] = factor
    af = p.number("attention_factor")
    if af is None and factor > 1 and l0 < 2:
        raise RopeValueError(
            f"{inp.l0_name} must be >= 2 for rope_type 'longrope' without "
            f"{p.name('attention_factor')} (its default sqrt(1 + ln factor / ln L) divides by "
            f"ln L), got {l0}"
        )
    return _build(inp, S.LongRoPE, short, long, l0, factor=factor, attention_factor=af)


def _read_llama3(inp: ScheduleInput) -> S.Scaling:
    factor, low, high = (inp.need(k) for k in ("factor", "low_freq_factor", "high_freq_factor"))
    p = inp.params
    if high < low:
        raise RopeValueError(
            f"{p.name('high_freq_factor')} ({high}) must be >= {p.name('low_freq_factor')} ({low})"
        )
    return _build(inp, S.Llama3, factor, low, high, inp.original_max())


def _read_proportional(inp: ScheduleInput) -> S.Scaling:
    factor = inp.params.number("factor", 1.0)
    if inp.partial is None:
        inp.params.report.notes.append(
            "proportional without partial_rotary_factor: every pair turns"
        )
    return _build(inp, S.Proportional, 1.0 if inp.partial is None else inp.partial, factor)


#: rope type -> reader
READERS: dict[str, Callable[[ScheduleInput], S.Scaling | None]] = {
    "default": _read_default,
    "linear": _read_linear,
    "dynamic": _read_dynamic,
    "yarn": _read_yarn,
    "longrope": _read_longrope,
    "llama3": _read_llama3,
    "proportional": _read_proportional,
}


def read_schedule(inp: ScheduleInput) -> S.Scaling | None:
    """The schedule of ``inp.rope_type`` (a key of :data:`READERS`)."""
    return READERS[inp.rope_type](inp)


def read_mrope(
    inp: ScheduleInput, scaling: S.Scaling | None
) -> tuple[S.Scaling | None, S.Scaling | None]:
    """M-RoPE (Qwen2-VL, Qwen2.5-VL, Qwen3-VL): ``mrope_section`` (in rotary pairs) and
    ``mrope_interleaved`` in the dict. Returns ``(scaling, axes)`` for ``Rope``.

    Without a section: ``(scaling, None)``. With a section and no frequency schedule (rope
    type default / mrope): ``(MRope(...), None)``, the original spelling, unchanged. With a
    section and a schedule (``type`` yarn, linear, dynamic, ...): ``(schedule, MRope(...))``,
    the frequencies of that schedule split between the axes, as transformers builds them (its
    Qwen-VL rotary embeddings take ``inv_freq`` and ``attention_scaling`` from the rope type's
    init function, then select pairs by section).
    """
    p = inp.params
    sections = p.sequence("mrope_section")
    if sections is None:
        return scaling, None
    name = p.name("mrope_section")
    sections = [as_integer(f"{name}[{i}]", s, minimum=0) for i, s in enumerate(sections)]
    if sum(sections) != inp.rotary_dim // 2:
        raise RopeValueError(
            f"{name} {sections} sums to {sum(sections)}; expected rotary_dim // 2 = "
            f"{inp.rotary_dim // 2} (sections count rotary pairs)"
        )
    interleaved = p.flag("mrope_interleaved", False)
    axes = _build(inp, S.MRope, tuple(sections), interleaved=interleaved)
    if scaling is None:
        return axes, None
    if type(scaling).magnitude is not S.Scaling.magnitude:
        raise RopeValueError(
            f"{name} together with rope_type {inp.rope_type!r} is not supported (M-RoPE with "
            "a per-position magnitude)"
        )
    return scaling, axes
