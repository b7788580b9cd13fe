"""The backend adapters themselves: round trips, dtypes, read-only arrays."""

from __future__ import annotations

import numpy as np
import pytest

import backends


def test_roundtrip(bk):
    a = np.random.default_rng(7).standard_normal((3, 4))
    for name in bk.dtypes:
        x = bk.from_numpy(a, name)
        back = bk.to_numpy(x)
        assert back.shape == a.shape
        if name == "float64":
            np.testing.assert_array_equal(back, a)
    bk.synchronize()
    assert bk.xp is not None and bk.is_available()


def test_readonly_backend_blocks_writes():
    b = backends.by_name("numpy-readonly")
    x = b.from_numpy(np.zeros(3))
    with pytest.raises(ValueError, match="read-only"):
        x[0] = 1.0


def test_selection_by_environment(monkeypatch):
    monkeypatch.setenv("ROPE_REF_BACKENDS", "numpy,strict")
    assert [b.name for b in backends.selected()] == ["numpy", "strict"]
    monkeypatch.setenv("ROPE_REF_BACKENDS", "")
    assert len(backends.selected()) == len(backends.ALL)
    with pytest.raises(KeyError, match="unknown backend"):
        backends.by_name("tensorflow")
