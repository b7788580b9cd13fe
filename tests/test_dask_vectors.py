"""backends.dask_vectors.write_vectors_dask: golden outputs written chunk by chunk from Dask
arrays, locally and on a dask.distributed LocalCluster, equal bit for bit to rope_ref on
NumPy."""

from __future__ import annotations

import hashlib
import itertools
import json

import numpy as np
import pytest

import rope_ref as rr
from backends.dask_vectors import read_vectors_dask, write_vectors_dask

pytest.importorskip("dask.array")


def _check(out, manifest, rope, tokens, heads):
    read_back, x, y = read_vectors_dask(out)  # every chunk's sha256 verified
    assert read_back == manifest
    x, y = np.array(x), np.array(y)
    assert x.shape == y.shape == (tokens, heads, rope.head_dim)
    assert y.dtype == np.dtype(manifest["dtype"])
    np.testing.assert_array_equal(y, rr.apply_rope(x, np.arange(tokens)[:, None], rope))
    # the inputs are the documented generator's, and every chunk digest matches the bytes
    bounds = manifest["chunks"]["bounds"]
    assert bounds[0] == 0 and bounds[-1] == tokens
    for name, arr in (("x.npy", x), ("y.npy", y)):
        digests = manifest["files"][name]["chunk_sha256"]
        assert len(digests) == len(bounds) - 1
        for (lo, hi), d in zip(itertools.pairwise(bounds), digests, strict=True):
            assert hashlib.sha256(arr[lo:hi].tobytes()).hexdigest() == d
    assert json.loads((out / "manifest.json").read_text()) == manifest
    tol = manifest["tolerance"]
    assert tol["rtol"] == pytest.approx(4 * float(np.finfo(y.dtype).eps))  # 8 u
    assert 0 < tol["atol"] < 1


def test_threads_scheduler(tmp_path):
    rope = rr.Rope(32, base=5e5, layout="interleaved", rotary_dim=24)
    m = write_vectors_dask(tmp_path, rope=rope, tokens=2500, heads=3, chunk_tokens=700)
    assert m["chunks"]["bounds"] == [0, 700, 1400, 2100, 2500]
    _check(tmp_path, m, rope, 2500, 3)


def test_float64_and_seed(tmp_path):
    rope = rr.Rope(16)
    a = write_vectors_dask(tmp_path / "a", rope=rope, tokens=300, heads=2, dtype="float64",
                           chunk_tokens=128, seed=1)
    b = write_vectors_dask(tmp_path / "b", rope=rope, tokens=300, heads=2, dtype="float64",
                           chunk_tokens=128, seed=1)
    _check(tmp_path / "a", a, rope, 300, 2)
    assert a["files"] == b["files"]  # same seed and chunks: the same bytes


def test_local_cluster_two_workers(tmp_path):
    distributed = pytest.importorskip("distributed")
    rope = rr.Rope(64, base=5e5)
    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                 dashboard_address=None) as cluster,
        distributed.Client(cluster) as client,
    ):
        m = write_vectors_dask(tmp_path, rope=rope, tokens=4096, heads=4, chunk_tokens=1024,
                               client=client)
    _check(tmp_path, m, rope, 4096, 4)


def test_read_back_rejects_changed_or_inconsistent_files(tmp_path):
    rope = rr.Rope(16)
    write_vectors_dask(tmp_path, rope=rope, tokens=300, heads=2, chunk_tokens=128)
    manifest, _, y = read_vectors_dask(tmp_path)
    del y  # release the memory map before the file changes
    # one flipped bit in the last chunk of y: the third chunk digest fails, naming it
    path = tmp_path / "y.npy"
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 1
    path.write_bytes(bytes(raw))
    with pytest.raises(rr.RopeValueError, match=r"chunk 2 \(rows 256\.\.300\) does not match"):
        read_vectors_dask(tmp_path)
    read_vectors_dask(tmp_path, verify=False)  # structure alone still reads
    # a truncated file, a manifest that disagrees, a manifest that is not JSON
    path.write_bytes(bytes(raw[:-100]))
    with pytest.raises(rr.RopeValueError, match=r"y\.npy"):
        read_vectors_dask(tmp_path)
    bad = dict(manifest, shape=[301, 2, 16])
    (tmp_path / "manifest.json").write_text(json.dumps(bad))
    with pytest.raises(rr.RopeValueError, match=r"chunks\.bounds must rise from 0 to 301"):
        read_vectors_dask(tmp_path)
    bad = dict(manifest, dtype="object")
    (tmp_path / "manifest.json").write_text(json.dumps(bad))
    with pytest.raises(rr.RopeValueError, match="dtype must be a float dtype name"):
        read_vectors_dask(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps(manifest)[:-10])
    with pytest.raises(rr.RopeValueError, match="not valid JSON"):
        read_vectors_dask(tmp_path)
