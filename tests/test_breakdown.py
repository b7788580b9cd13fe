"""The failure breakdown of compare / assert_close on RoPE outputs: which rotary pairs, which
pass-through channels and which indices of each leading axis hold the failing elements.

Each test builds a realistic kernel bug whose breakdown is known by construction (the pairs a
partial-rotary kernel skips, the head a kernel mis-indexes, the batch entry whose offset is
dropped, ...) and asserts the report's sets and lines against that construction; the float32
angle test, whose failing pairs depend on the roundings, derives them from the per-pair error
computed here against the documented allowance, and brackets them with bounds proved from
the roundings.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from _helpers import rope_numpy_formula

import rope_ref as rr
from rope_ref.scaling import MRope
from rope_ref.testing import assert_close, compare

U32 = 2.0**-24
B, S, H, D = 2, 16, 8, 64


def ranges(values):
    """'0-5, 9, 12-15': a loop, independent of the library's vectorized formatting."""
    out = []
    for v in sorted(values):
        if out and v == out[-1][1] + 1:
            out[-1][1] = v
        else:
            out.append([v, v])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in out)


def counted(values, size):
    k = len(values)
    if k == 0:
        return f"none (of {size})"
    return f"{ranges(values)} ({f'all {size}' if k == size else f'{k} of {size}'})"


def lines_of(report):
    """The breakdown lines: those after the by-|position| table, up to the allowance line."""
    lines = report.message.splitlines()
    start = lines.index("  max abs error by |position|:") + 1
    while lines[start].startswith("    |position| in ["):
        start += 1
    end = start
    while end < len(lines) and lines[end].startswith("  failing "):
        end += 1
    assert end > start, report.message
    return lines[start:end]


def data(shape=(B, S, H, D), seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def test_partial_rotary_kernel_fails_in_the_last_four_pairs():
    """A kernel that rotates only the first rotary_dim - 8 channels (interleaved layout: the
    last 4 pairs pass through unrotated)."""
    rope = rr.Rope(D, base=1e4, layout="interleaved")
    x = data()
    pos = np.arange(1000, 1000 + S)[:, None]  # (seq, 1): broadcast over batch and heads
    cos, sin = (np.asarray(t, dtype=np.float64) for t in rope.cos_sin(pos))
    n = rope.n_pairs
    got = rope_numpy_formula(x, cos[..., : n - 4], sin[..., : n - 4], "interleaved", D - 8)
    got = got.astype(np.float32)
    want = rr.apply_rope(x, pos, rope)
    # the slowest skipped pair turns by 1000 * theta_31 = 0.13 rad: far beyond the allowance
    assert 1000 * rope.inv_freq()[-1] > 0.1
    r = compare(got, want, rope=rope, positions=pos)
    assert not r.passed
    skipped = list(range(n - 4, n))
    assert r.failing_pairs == tuple(skipped)
    assert r.failing_channels == tuple(range(D - 8, D))
    assert r.failing_indices == {0: tuple(range(B)), 1: tuple(range(S)), 2: tuple(range(H))}
    assert lines_of(r) == [
        f"  failing rotary pairs: {counted(skipped, n)}, in {B * S * H} of {B * S * H} tokens",
        f"  failing indices along axis 0 (size {B}, positions broadcast): {counted(range(B), B)}",
        f"  failing indices along axis 1 (size {S}, positions per index): {counted(range(S), S)}",
        f"  failing indices along axis 2 (size {H}, positions broadcast): {counted(range(H), H)}",
    ]
    assert lines_of(r)[0] == "  failing rotary pairs: 28-31 (4 of 32), in 256 of 256 tokens"


@pytest.mark.parametrize(
    "heads",
    [(3,), (4, 5, 6, 7), (1, 5)],
    ids=["one-head", "second-half", "one-per-kv-group"],
)
def test_mis_indexed_heads_fail_alone(bk, heads):
    """x (b, s, h, d), positions (b, s, 1): the corrupted heads get another head's rotated
    values (a head-indexing bug; (1, 5): every 4th query head of a GQA grouping)."""
    if "float32" not in bk.dtypes:
        pytest.skip(f"{bk.library} has no float32")
    rope = rr.Rope(D, base=5e5)
    x = data()
    offsets = np.array([0, 700])
    pos = (offsets[:, None] + np.arange(S))[..., None]  # (b, s, 1): per-sequence offsets
    want = rr.apply_rope(x, pos, rope)
    got = want.copy()
    for h in heads:
        got[:, :, h] = want[:, :, (h + 1) % H]
    r = compare(bk.from_numpy(got, "float32"), bk.from_numpy(want, "float32"), rope=rope,
                positions=bk.from_numpy(pos))  # fmt: skip
    assert not r.passed
    assert r.failing_indices == {0: (0, 1), 1: tuple(range(S)), 2: heads}
    assert r.failing_pairs == tuple(range(rope.n_pairs))  # random data: every pair differs
    tokens = B * S * len(heads)
    assert lines_of(r) == [
        f"  failing rotary pairs: 0-31 (all 32), in {tokens} of {B * S * H} tokens",
        "  failing indices along axis 0 (size 2, positions per index): 0-1 (all 2)",
        "  failing indices along axis 1 (size 16, positions per index): 0-15 (all 16)",
        f"  failing indices along axis 2 (size 8, positions broadcast): {counted(heads, H)}",
    ]
    with pytest.raises(AssertionError) as info:  # assert_close raises the same text
        assert_close(got, want, rope=rope, positions=pos)
    assert str(info.value) == r.message


def test_dropped_offset_in_one_batch_entry():
    """Per-sequence offsets (0, 500, 3000): the kernel ignores batch entry 1's offset."""
    rope = rr.Rope(D, base=1e4)
    x = data((3, S, H, D))
    offsets = np.array([0, 500, 3000])
    pos = (offsets[:, None] + np.arange(S))[..., None]  # (b, s, 1)
    used = pos.copy()
    used[1] -= offsets[1]
    got = rr.apply_rope(x, used, rope)
    want = rr.apply_rope(x, pos, rope)
    # every pair turns visibly over 500 positions: |2 sin(500 theta_j / 2)| >= 0.06
    theta = rope.inv_freq()
    assert np.min(np.abs(2 * np.sin(500 * theta / 2))) > 0.06
    r = compare(got, want, rope=rope, positions=pos)
    assert r.failing_indices == {0: (1,), 1: tuple(range(S)), 2: tuple(range(H))}
    assert r.failing_pairs == tuple(range(rope.n_pairs))
    assert (
        lines_of(r)[1] == "  failing indices along axis 0 (size 3, positions per index): 1 (1 of 3)"
    )
    assert (
        lines_of(r)[3]
        == "  failing indices along axis 2 (size 8, positions broadcast): 0-7 (all 8)"
    )


def test_layout_mix_up_fails_everywhere():
    """Interleaved code on a half-layout head: every pair, every token (positions from 1:
    at position 0 both layouts are the identity)."""
    rope = rr.Rope(D, base=1e4, layout="half")
    x = data((S, H, D))
    pos = np.arange(1, S + 1)[:, None]
    got = rr.apply_rope(x, pos, rr.Rope(D, base=1e4, layout="interleaved"))
    want = rr.apply_rope(x, pos, rope)
    r = compare(got, want, rope=rope, positions=pos, x=x)
    assert r.failing_pairs == tuple(range(32)) and r.failing_channels == tuple(range(D))
    assert r.failing_indices == {0: tuple(range(S)), 1: tuple(range(H))}
    assert lines_of(r) == [
        f"  failing rotary pairs: 0-31 (all 32), in {S * H} of {S * H} tokens",
        "  failing indices along axis 0 (size 16, positions per index): 0-15 (all 16)",
        "  failing indices along axis 1 (size 8, positions broadcast): 0-7 (all 8)",
    ]
    # the lines sit between the by-|position| table and the allowance line, before the class
    lines = r.message.splitlines()
    i = lines.index(lines_of(r)[0])
    assert lines[i - 1].startswith("    |position| in [")
    assert lines[i + 3].startswith("  the model allows pair ")
    assert lines[i + 4].startswith("  accuracy class: fail (")
    assert "the other layout" in lines[-1]


def test_float32_angles_far_out_fail_in_the_fast_pairs_only():
    """A float32 kernel forming positions * inv_freq in float32, judged strictly (the exact
    class: 8 u rho per pair). Its phase error in pair j is |fl(m fl(theta_j)) - m theta_j|,
    known here exactly; with the output roundings (at most 2 u rho per pair vector) a pair
    fails where that error exceeds 10 u in some token and cannot fail where it stays below
    5.9 u. The failing pairs are also derived from the documented allowance directly."""
    rope = rr.Rope(D, base=5e5)
    x = data((B, S, 4, D))
    pos = np.arange(2**16, 2**16 + S)[:, None]
    theta32 = np.asarray(rope.inv_freq(dtype=np.float32), dtype=np.float32)
    ang32 = (pos.astype(np.float32)[..., None] * theta32).astype(np.float64)  # (s, 1, n)
    ang = pos[..., None].astype(np.float64) * rope.inv_freq()
    got = rope_numpy_formula(x, np.cos(ang32), np.sin(ang32), "half", D).astype(np.float32)
    want = rr.apply_rope(x, pos, rope)
    r = compare(got, want, rope=rope, positions=pos, strict=True)
    assert not r.passed
    # the bracket, from the angle errors alone
    dphi = np.abs(ang32 - ang).reshape(-1, rope.n_pairs).max(axis=0)  # per pair
    surely = {j for j in range(rope.n_pairs) if dphi[j] > 10 * U32}
    maybe = {j for j in range(rope.n_pairs) if dphi[j] >= 5.9 * U32}
    assert surely <= set(r.failing_pairs) <= maybe
    assert len(surely) >= 10 and max(maybe) < rope.n_pairs - 3  # fast pairs fail, slow pass
    # directly: the pair error vector against 8 u rho + 2**-126 (strict), per token and pair
    g, w = got.astype(np.float64), want.astype(np.float64)
    h = D // 2
    err = np.hypot(g[..., :h] - w[..., :h], g[..., h:] - w[..., h:])
    fails = err > 8 * U32 * np.hypot(w[..., :h], w[..., h:]) + 2.0**-126  # (b, s, heads, n)
    assert r.failing_pairs == tuple(np.flatnonzero(fails.any(axis=(0, 1, 2))).tolist())
    for k in range(3):
        others = tuple(i for i in range(4) if i != k)
        assert r.failing_indices[k] == tuple(np.flatnonzero(fails.any(axis=others)).tolist())
    n_tok = int(np.count_nonzero(fails.any(axis=-1)))
    text = f"  failing rotary pairs: {counted(r.failing_pairs, 32)}, in {n_tok} of {B * S * 4}"
    assert lines_of(r)[0] == text + " tokens"


def test_mrope_section_mix_up_fails_in_that_section_only():
    """M-RoPE (sections 8, 12, 12): the kernel feeds the temporal positions to the height
    section's pairs (a table bug): only pairs 8-19 fail."""
    rope = rr.Rope(D, base=1e4, axes=MRope((8, 12, 12)))
    x = data((B, S, 4, D))
    t = np.broadcast_to(np.arange(S), (B, S))
    pos = np.stack([t, t + 7 + np.arange(S), t + 100])[..., None]  # (3, b, s, 1)
    wrong = pos.copy()
    wrong[1] = pos[0]
    got = rr.apply_rope(x, wrong, rope)
    want = rr.apply_rope(x, pos, rope)
    r = compare(got, want, rope=rope, positions=pos)
    assert r.failing_pairs == tuple(range(8, 20))
    assert r.failing_indices == {0: (0, 1), 1: tuple(range(S)), 2: (0, 1, 2, 3)}
    assert lines_of(r) == [
        f"  failing rotary pairs: 8-19 (12 of 32), in {B * S * 4} of {B * S * 4} tokens",
        "  failing indices along axis 0 (size 2, positions per index): 0-1 (all 2)",
        "  failing indices along axis 1 (size 16, positions per index): 0-15 (all 16)",
        "  failing indices along axis 2 (size 4, positions broadcast): 0-3 (all 4)",
    ]


def test_rotary_dim_ignored_fails_in_the_pass_through_channels():
    """Partial rotary (rotary_dim 48 of 64, half layout): a kernel that rotates the whole
    head changes every pair (the halves split at 32, not 24) and the 16 pass-through
    channels."""
    rope = rr.Rope(D, base=1e4, rotary_dim=48)
    x = data((S, 2, D))
    pos = np.arange(10, 10 + S)
    got = rr.apply_rope(x, pos[:, None], rr.Rope(D, base=1e4))
    want = rr.apply_rope(x, pos[:, None], rope)
    r = compare(got, want, rope=rope, positions=pos[:, None])
    assert r.failing_pairs == tuple(range(24))
    assert r.failing_channels == tuple(range(D))
    assert lines_of(r)[:2] == [
        f"  failing rotary pairs: 0-23 (all 24), in {2 * S} of {2 * S} tokens",
        "  failing pass-through channels: 48-63 (all 16)",
    ]


def test_pass_through_line_names_channels_and_none_for_pairs():
    """Only a pass-through channel is wrong (MLA: the rotated channels trail at 128)."""
    rope = rr.Rope(192, rotary_offset=128)
    x = np.random.default_rng(1).standard_normal((4, 192))
    pos = np.arange(4) + 100
    want = rr.apply_rope(x, pos, rope)
    got = want.copy()
    got[2, 5] += 1.0
    r = compare(got, want, rope=rope, positions=pos)
    assert r.failing_pairs == () and r.failing_channels == (5,)
    assert r.failing_indices == {0: (2,)}
    assert lines_of(r) == [
        "  failing rotary pairs: none (of 32)",
        "  failing pass-through channels: 5 (1 of 128)",
        "  failing indices along axis 0 (size 4, positions per index): 2 (1 of 4)",
    ]
    got = want.copy()
    got[1, 150] += 1.0  # channel 150: half-layout pair 150 - 128 = 22
    r = compare(got, want, rope=rope, positions=pos)
    assert r.failing_pairs == (22,) and r.failing_channels == (150,)
    assert "rotary pair 22 (channel 150, half layout)" in r.message


def test_long_index_lists_are_capped_after_ten_ranges():
    """Every other position fails: 32 ranges of one index, shown up to the tenth."""
    rope = rr.Rope(16)
    x = np.random.default_rng(2).standard_normal((64, 16))
    pos = np.arange(64)
    want = rr.apply_rope(x, pos, rope)
    got = want.copy()
    got[::2, 0] += 1.0
    r = compare(got, want, rope=rope, positions=pos)
    assert r.failing_indices == {0: tuple(range(0, 64, 2))}
    assert lines_of(r)[-1] == (
        "  failing indices along axis 0 (size 64, positions per index): "
        "0, 2, 4, 6, 8, 10, 12, 14, 16, 18, ... (32 of 64)"
    )


def test_size_one_axes_are_in_the_data_not_in_the_text():
    rope = rr.Rope(16)
    x = np.random.default_rng(3).standard_normal((1, 8, 1, 16))
    pos = np.arange(8)[:, None]
    want = rr.apply_rope(x, pos, rope)
    got = want.copy()
    got[0, 5, 0, 3] += 1.0
    r = compare(got, want, rope=rope, positions=pos)
    assert r.failing_indices == {0: (0,), 1: (5,), 2: (0,)}
    assert r.failing_pairs == (3,)
    assert [ln for ln in lines_of(r) if "along axis" in ln] == [
        "  failing indices along axis 1 (size 8, positions per index): 5 (1 of 8)"
    ]


def test_empty_when_passing_or_not_judged_as_rope():
    rope = rr.Rope(16)
    x = np.random.default_rng(4).standard_normal((8, 16))
    pos = np.arange(8)
    want = rr.apply_rope(x, pos, rope)
    ok = compare(want, want, rope=rope, positions=pos)
    assert ok.passed
    assert (ok.failing_pairs, ok.failing_channels, ok.failing_indices) == ((), (), {})
    plain = compare(want + 1.0, want)  # no rope: a plain comparison, no breakdown
    assert not plain.passed
    assert (plain.failing_pairs, plain.failing_channels, plain.failing_indices) == ((), (), {})
    assert "failing rotary pairs" not in plain.message
    shape = compare(want[:1], want, rope=rope, positions=pos)  # a structural failure
    assert (shape.failing_pairs, shape.failing_indices) == ((), {})


def test_float8_output_gets_the_breakdown():
    """A float8 output against its unquantized reference: the breakdown of a head bug."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    rope = rr.Rope(32, base=1e4)
    x = np.random.default_rng(5).standard_normal((S, 4, 32))
    pos = np.arange(S)[:, None] + 50
    y = rr.apply_rope(x, pos, rope)
    q = y.astype(ml_dtypes.float8_e4m3fn)
    q[:, 2] = y[:, 3].astype(ml_dtypes.float8_e4m3fn)
    r = compare(q, y, rope=rope, positions=pos, scale=1.0)
    assert not r.passed
    assert r.failing_indices[1] == (2,)
    assert "  failing indices along axis 1 (size 4, positions broadcast): 2 (1 of 4)" in (
        r.message.splitlines()
    )


def test_breakdown_counts_match_the_failing_elements():
    """Consistency with the headline count: an element is counted on the first line iff it
    lies in a failing pair or channel and a failing index of every axis."""
    rope = rr.Rope(D, base=1e4)
    x = data((3, S, H, D), seed=7)
    pos = np.arange(S)[:, None]
    want = rr.apply_rope(x, pos, rope)
    got = want.copy()
    got[2, 3:9, 6, 40] += 0.5  # channel 40: half-layout pair 8
    r = compare(got, want, rope=rope, positions=pos)
    assert r.message.startswith("arrays are not close: 6 of ")
    assert r.failing_pairs == (8,) and r.failing_channels == (40,)
    assert r.failing_indices == {0: (2,), 1: tuple(range(3, 9)), 2: (6,)}
    assert lines_of(r)[0] == f"  failing rotary pairs: 8 (1 of 32), in 6 of {3 * S * H} tokens"
    assert math.prod(len(v) for v in r.failing_indices.values()) == 6
