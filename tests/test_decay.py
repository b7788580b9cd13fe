"""rr.relative_upper_bound: the long-term decay curve of RoFormer Figure 2 (eqs. 35-37)."""

from __future__ import annotations

import mpmath
import numpy as np

import rope_ref as rr

# docs/formulation.md (long-term decay), recomputed curve (d=128, b=1e4), 3 decimals
TABLE = {
    0: 32.500,
    1: 31.538,
    2: 28.956,
    5: 20.845,
    10: 17.954,
    20: 15.242,
    50: 12.630,
    100: 10.227,
    150: 7.589,
    200: 7.245,
    250: 6.548,
    256: 6.543,
}


def test_figure2_values(bk):
    r = np.array(list(TABLE), dtype=np.float64)
    got = bk.to_numpy(rr.relative_upper_bound(bk.from_numpy(r)))
    # the sheet rounds twice (12.6295 -> 12.630): allow 6e-4
    np.testing.assert_allclose(got, list(TABLE.values()), rtol=0, atol=6e-4)
    assert got[0] == 32.5  # (d/2 + 1) / 2 exactly


def test_matches_mpmath_and_is_even():
    mpmath.mp.prec = 200
    d, b = 64, 500.0
    for r in (0.25, 3.0, 77.5, 1234.0):
        th = [mpmath.mpf(b) ** (mpmath.mpf(-2 * j) / d) for j in range(d // 2)]
        want = mpmath.fsum(
            abs(mpmath.fsum(mpmath.expj(r * t) for t in th[:j])) for j in range(1, d // 2 + 1)
        ) / (d // 2)
        got = rr.relative_upper_bound(np.array([r, -r]), head_dim=d, base=b)
        assert abs(got[0] - float(want)) <= 1e-13 * float(want)
        assert got[0] == got[1]


def test_decays_overall():
    r = np.arange(0, 257, dtype=np.float64)
    curve = rr.relative_upper_bound(r)
    assert curve[0] > curve[10] > curve[100] > curve[250]
    assert curve[7] > 20 >= curve[8]  # first drops to 20 near r = 7.69 (docs/formulation.md)
    assert rr.relative_upper_bound(7.6) > 20 > rr.relative_upper_bound(7.8)


# ---------------------------------------------------------------- the rope-ref decay command
def test_cli_streams_the_curve_across_chunks(tmp_path, capsys):
    # more points than one streamed chunk (2**14): every row equals the library's value at
    # r = i * step, and the file matches what is printed
    from rope_ref._cli import _DECAY_CHUNK, main

    n = _DECAY_CHUNK + 5
    step = 0.25
    assert (
        main(
            [
                "decay",
                "--head-dim",
                "8",
                "--max",
                str((n - 1) * step),
                "--step",
                str(step),
                "--csv",
                str(tmp_path / "d.csv"),
            ]
        )
        == 0
    )
    rows = (tmp_path / "d.csv").read_text().splitlines()
    assert rows[0] == "relative_distance,relative_upper_bound" and len(rows) == n + 1
    idx = np.array([0, 1, _DECAY_CHUNK - 1, _DECAY_CHUNK, n - 1])
    r = idx * step
    want = rr.relative_upper_bound(r, head_dim=8)
    for i, ri, bi in zip(idx, r, want, strict=True):
        assert rows[i + 1] == f"{ri:g},{bi:.6f}"
    assert main(["decay", "--head-dim", "8", "--max", "2", "--step", "0.25"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed == rows[:10]


def _peak_bytes(fn):
    """fn's result and the peak of traced allocations while it ran (NumPy reports its
    buffers to tracemalloc), measured without any clock."""
    import tracemalloc

    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    try:
        result = fn()
        return result, tracemalloc.get_traced_memory()[1] - base
    finally:
        if not was_tracing:
            tracemalloc.stop()


def test_cli_bounds_the_number_of_points(capsys):
    # --max 1e9 used to end in MemoryError: a usage error naming the limit, before anything
    # is allocated: less than one float64 curve at the limit (the request would need 8 GB)
    from rope_ref._cli import DECAY_MAX_POINTS, main

    code, peak = _peak_bytes(lambda: main(["decay", "--max", "1e9"]))
    assert code == 2 and peak < 8 * DECAY_MAX_POINTS
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and str(DECAY_MAX_POINTS) in err
    # the head_dim check comes first, still cheap
    code, peak = _peak_bytes(
        lambda: main(
            ["decay", "--max", str(DECAY_MAX_POINTS - 1), "--step", "1", "--head-dim", "3"]
        )
    )
    assert code == 2 and peak < 8 * DECAY_MAX_POINTS
    capsys.readouterr()
    # and the measure sees NumPy's buffers: one such curve is over the bound
    _, peak = _peak_bytes(lambda: np.ones(DECAY_MAX_POINTS).sum())
    assert peak >= 8 * DECAY_MAX_POINTS
