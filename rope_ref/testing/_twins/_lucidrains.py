"""lucidrains' rotary-embedding-torch: the ``RotaryEmbedding`` module convention of
``rope-ref check --convention lucidrains``."""

from __future__ import annotations

from typing import Any

from ... import _compat

__all__: list[str] = []


def lucidrains_prepare(cls: Any, ci: Any) -> Any:
    """``emb = cls(dim=rotary_dim, theta=base[, interpolate_factor=f])``;
    ``emb.rotate_queries_or_keys(t, seq_dim=..., offset=...)`` per sequence (bhsd with
    seq_dim=-2, bshd and packed sequences with seq_dim=-3). The module rotates interleaved
    pairs of the first ``dim`` channels: half-layout cases go through the channel permutation
    (exact). Plain RoPE and linear position interpolation (``scaling.Linear``) only."""
    from ._common import (
        Call,
        Unfit,
        from_layout,
        require_1d,
        require_plain,
        row_offsets,
        segment_offsets,
        to_layout,
    )

    who = "lucidrains' RotaryEmbedding"
    require_1d(ci.rope, who)
    require_plain(ci.rope, who, allow_linear=True)
    xp = ci.xp
    kw: dict[str, Any] = {"dim": ci.rope.rotary_dim, "theta": ci.rope.base}
    if ci.rope.scaling is not None:  # Linear(factor): positions / factor
        kw["interpolate_factor"] = float(ci.rope.scaling.factor)
    x = to_layout(ci, ci.x, "interleaved")
    unfit = f"{who} takes positions offset + arange(seq) per call"
    if ci.family == "thd":
        segs = segment_offsets(ci)
        if segs is None:
            raise Unfit(unfit)
        parts = [(x[a:b, ...], off) for a, b, off in segs]
        seq_dim = -3
    else:
        off = row_offsets(ci.tok)
        if off is None:
            raise Unfit(unfit)
        seq_dim = -2 if ci.family == "bhsd" else -3
        if len(set(off.tolist())) == 1:
            parts = [(x, int(off[0]))]
        else:
            parts = [(x[i : i + 1, ...], int(o)) for i, o in enumerate(off)]

    def run() -> Any:
        emb = cls(**kw)
        return [emb.rotate_queries_or_keys(t, seq_dim=seq_dim, offset=o) for t, o in parts]

    def unpack(out: Any) -> dict[str, Any]:
        for o in out:
            if not _compat.is_array(o):
                raise TypeError(f"the target returned {type(o).__name__}, not an array")
        y = out[0] if len(out) == 1 else xp.concat(list(out), axis=0)
        return {"q": from_layout(ci, y, "interleaved")}

    return Call(run=run, unpack=unpack, note=f"{len(parts)} call(s)")
