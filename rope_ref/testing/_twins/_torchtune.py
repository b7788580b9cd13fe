"""torchtune's ``RotaryPositionalEmbeddings``: the module convention of
``rope-ref check --convention torchtune``."""

from __future__ import annotations

from typing import Any

from ... import _compat

__all__: list[str] = []


def torchtune_prepare(cls: Any, ci: Any) -> Any:
    """``emb = cls(dim=rotary_dim, max_seq_len=max(positions) + 1, base=base)``;
    ``emb(x[..., :rotary_dim], input_pos=positions)`` with x (b, s, n_h, h_d) and positions
    (b, s) (bhsd transposed, packed cases as one sequence of batch 1), the pass-through
    channels appended. The module rotates interleaved pairs: half-layout cases go through the
    channel permutation (exact). Plain RoPE only; the module builds a cache with a row per
    position, so positions beyond ``--table-rows`` are skipped."""
    from ._common import (
        Call,
        from_layout,
        require_1d,
        require_plain,
        swap_12,
        table_window,
        to_layout,
    )

    who = "torchtune's RotaryPositionalEmbeddings"
    require_1d(ci.rope, who)
    require_plain(ci.rope, who)
    xp, r = ci.xp, ci.rope.rotary_dim
    _, p1 = table_window(ci, who, rebase=False)
    x, tok = ci.x, ci.tok
    if ci.family == "thd":
        x, tok = x[None, ...], tok[None, :]
    elif ci.family == "bhsd":
        x = swap_12(xp, x)
    x = to_layout(ci, x, "interleaved")
    rot = x[..., :r]
    pos = xp.asarray(tok, dtype=xp.int64, device=ci.device)
    kw = {"dim": r, "max_seq_len": p1, "base": ci.rope.base}

    def run() -> Any:
        return cls(**kw)(rot, input_pos=pos)

    def unpack(out: Any) -> dict[str, Any]:
        if not _compat.is_array(out):
            raise TypeError(f"the target returned {type(out).__name__}, not an array")
        y = out if r == x.shape[-1] else xp.concat([out, x[..., r:]], axis=-1)
        y = from_layout(ci, y, "interleaved")
        if ci.family == "thd":
            return {"q": y[0, ...]}
        return {"q": swap_12(xp, y) if ci.family == "bhsd" else y}

    return Call(run=run, unpack=unpack)
