"""rope_ref.testing.write_vectors_dask: golden outputs written chunk by chunk from Dask
arrays (threads and synchronous schedulers, a dask.distributed LocalCluster),
equal bit for bit to rope_ref on NumPy; the sha256 of every chunk; progress; the CLI entry;
Dask imported only when called."""

from __future__ import annotations

import argparse
import builtins
import hashlib
import io
import itertools
import json
import re
import subprocess
import sys

import numpy as np
import pytest
from _helpers import ROOT

import rope_ref as rr
from rope_ref.testing import DaskUnavailableError, read_vectors_dask, write_vectors_dask
from rope_ref.testing._dask_vectors import (
    add_dask_arguments,
    reject_dask_options,
    run_vectors_dask,
)

needs_dask = pytest.mark.skipif(
    __import__("importlib").util.find_spec("dask") is None, reason="needs dask"
)


def _check(out, manifest, rope, tokens, heads):
    read_back, x, y = read_vectors_dask(out)  # every chunk's sha256 verified
    assert read_back == manifest
    x, y = np.array(x), np.array(y)
    assert x.shape == y.shape == (tokens, heads, rope.head_dim)
    assert y.dtype == np.dtype(manifest["dtype"])
    # the independent route: rope_ref on NumPy over the whole array at once
    np.testing.assert_array_equal(y, rr.apply_rope(x, np.arange(tokens)[:, None], rope))
    # every chunk digest matches the bytes, hashed here from the arrays read back
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
    # atol is a multiple of max|y|, measured here from the file
    biggest = float(np.max(np.abs(y.astype(np.float64)))) if y.size else 0.0
    _, unit = rr.testing.default_tolerance(
        manifest["dtype"], rope=rope, positions=np.array([0, max(tokens - 1, 0)])
    )
    assert tol["atol"] == pytest.approx(unit * biggest, rel=1e-12)
    assert manifest["generator"] == "rope_ref.testing.write_vectors_dask"


@needs_dask
def test_threads_scheduler(tmp_path):
    rope = rr.Rope(32, base=5e5, layout="interleaved", rotary_dim=24)
    m = write_vectors_dask(tmp_path, rope=rope, tokens=2500, heads=3, chunk_tokens=700)
    assert m["chunks"]["bounds"] == [0, 700, 1400, 2100, 2500]
    _check(tmp_path, m, rope, 2500, 3)


@needs_dask
def test_float64_seed_and_local_schedulers_agree(tmp_path):
    rope = rr.Rope(16)
    kw = dict(rope=rope, tokens=300, heads=2, dtype="float64", chunk_tokens=128, seed=1)
    a = write_vectors_dask(tmp_path / "a", **kw)
    b = write_vectors_dask(tmp_path / "b", scheduler="synchronous", **kw)
    _check(tmp_path / "a", a, rope, 300, 2)
    assert a["files"] == b["files"]  # same seed and chunks: the same bytes, any scheduler
    c = write_vectors_dask(tmp_path / "c", **dict(kw, seed=2))
    assert c["files"]["x.npy"]["chunk_sha256"] != a["files"]["x.npy"]["chunk_sha256"]


@needs_dask
def test_float16_synchronous(tmp_path):
    rope = rr.Rope(64, base=5e5)
    m = write_vectors_dask(
        tmp_path,
        rope=rope,
        tokens=1000,
        heads=2,
        chunk_tokens=400,
        dtype="float16",
        scheduler="synchronous",
    )
    _check(tmp_path, m, rope, 1000, 2)


@needs_dask
def test_local_cluster_two_workers_with_progress(tmp_path):
    distributed = pytest.importorskip("distributed")
    rope = rr.Rope(64, base=5e5)
    calls = []
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        m = write_vectors_dask(
            tmp_path / "a",
            rope=rope,
            tokens=2048,
            heads=4,
            chunk_tokens=512,
            client=client,
            progress=lambda d, t: calls.append((d, t)),
        )
        # the same cluster by its address, as the CLI's --scheduler connects to it
        b = write_vectors_dask(
            tmp_path / "b",
            rope=rope,
            tokens=2048,
            heads=4,
            chunk_tokens=512,
            scheduler=cluster.scheduler_address,
        )
    _check(tmp_path / "a", m, rope, 2048, 4)
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert b["files"] == m["files"]


@needs_dask
def test_progress_callback_and_stderr(tmp_path, capsys):
    rope = rr.Rope(8)
    calls = []
    write_vectors_dask(
        tmp_path / "a",
        rope=rope,
        tokens=50,
        heads=1,
        chunk_tokens=10,
        progress=lambda d, t: calls.append((d, t)),
    )
    assert calls == [(i, 5) for i in range(1, 6)]  # once per block, in order, in this thread
    write_vectors_dask(
        tmp_path / "b", rope=rope, tokens=50, heads=1, chunk_tokens=10, progress=True
    )
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 5
    assert all(
        re.fullmatch(
            rf"rope-ref vectors \(dask\): {i}/5 blocks written \({20 * i}%\), "
            r"\d+\.\d s",
            line,
        )
        for i, line in enumerate(err, 1)
    )
    # many blocks: a log gets about one line per 5%, and always the last
    write_vectors_dask(tmp_path / "c", rope=rope, tokens=45, heads=1, chunk_tokens=1, progress=True)
    err = capsys.readouterr().err.splitlines()
    assert [int(line.split(": ")[1].split("/")[0]) for line in err] == [*range(2, 45, 2), 45]


@needs_dask
def test_empty_and_single_chunk(tmp_path):
    rope = rr.Rope(8)
    m = write_vectors_dask(tmp_path / "e", rope=rope, tokens=0, heads=2)
    assert m["chunks"]["bounds"] == [0] and m["shape"] == [0, 2, 8]
    _, x, y = read_vectors_dask(tmp_path / "e")
    assert x.shape == y.shape == (0, 2, 8)
    m = write_vectors_dask(tmp_path / "s", rope=rope, tokens=5, heads=1, chunk_tokens=64)
    assert m["chunks"]["bounds"] == [0, 5]
    _check(tmp_path / "s", m, rope, 5, 1)


def test_bad_arguments_are_typed_errors(tmp_path):
    rope = rr.Rope(8)
    kw = dict(rope=rope, tokens=10, heads=1)
    cases = [
        (dict(kw, rope="llama"), rr.RopeTypeError, "rope must be a rope_ref.Rope"),
        (dict(kw, tokens=-1), rr.RopeValueError, "tokens must be >= 0, got -1"),
        (dict(kw, tokens=2.0), rr.RopeTypeError, "tokens must be an int, got float"),
        (dict(kw, heads=0), rr.RopeValueError, "heads must be >= 1"),
        (dict(kw, chunk_tokens=True), rr.RopeTypeError, "chunk_tokens must be an int"),
        (dict(kw, dtype="bfloat16"), rr.RopeValueError, "dtype must be one of"),
        (dict(kw, progress="yes"), rr.RopeTypeError, "progress must be True, False or"),
        (dict(kw, client=object(), scheduler="threads"), rr.RopeValueError, "not both"),
        (dict(kw, scheduler=" "), rr.RopeValueError, "scheduler must be"),
    ]
    for kwargs, err, msg in cases:
        with pytest.raises(err, match=re.escape(msg)):
            write_vectors_dask(tmp_path / "o", **kwargs)
    (tmp_path / "f").write_text("")
    with pytest.raises(rr.RopeValueError, match="is a file, not a directory"):
        write_vectors_dask(tmp_path / "f", **kw)
    assert not (tmp_path / "o").exists()  # nothing written on bad input


@needs_dask
def test_unreachable_scheduler_address(tmp_path):
    pytest.importorskip("distributed")
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(
        rr.RopeValueError,
        match=r"scheduler 'tcp://127\.0\.0\.1:\d+': cannot "
        "connect",
    ):
        write_vectors_dask(
            tmp_path,
            rope=rr.Rope(8),
            tokens=10,
            heads=1,
            scheduler=f"tcp://127.0.0.1:{port}",
            connect_timeout=2,
        )


def _hide(monkeypatch, *names):
    """Make ``import NAME`` (and its submodules) fail, as if not installed."""
    for mod in list(sys.modules):
        if mod.split(".")[0] in names:
            monkeypatch.delitem(sys.modules, mod)
    real = builtins.__import__

    def fake(name, *args, **kwargs):
        if name.split(".")[0] in names:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake)
    import importlib

    real_im = importlib.import_module

    def fake_im(name, package=None):
        if name.split(".")[0] in names:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real_im(name, package)

    monkeypatch.setattr(importlib, "import_module", fake_im)


def test_missing_dask_is_a_typed_error(tmp_path, monkeypatch, capsys):
    _hide(monkeypatch, "dask", "distributed")
    with pytest.raises(DaskUnavailableError, match=r"install rope-ref\[dask\]") as info:
        write_vectors_dask(tmp_path, rope=rr.Rope(8), tokens=10, heads=1)
    assert isinstance(info.value, ImportError) and isinstance(info.value, rr.RopeError)
    assert "needs Dask" in str(info.value)
    # the CLI entry raises the same (rope-ref's main prints it as one line, exit 2)
    args = _cli_args(tmp_path / "cli", "--tokens", "10")
    with pytest.raises(DaskUnavailableError, match=r"install rope-ref\[dask\]"):
        run_vectors_dask(args)
    # reading needs no Dask
    (tmp_path / "r").mkdir()
    with pytest.raises(rr.RopeValueError, match=r"manifest\.json cannot be read"):
        read_vectors_dask(tmp_path / "r")


@needs_dask
def test_missing_distributed_for_an_address(tmp_path, monkeypatch):
    _hide(monkeypatch, "distributed")
    with pytest.raises(DaskUnavailableError, match=r"needs dask\.distributed.*rope-ref\[dask\]"):
        write_vectors_dask(
            tmp_path, rope=rr.Rope(8), tokens=10, heads=1, scheduler="tcp://127.0.0.1:1"
        )


NO_DASK_SCRIPT = r"""
import sys
import rope_ref
import rope_ref.testing
from rope_ref.testing import write_vectors_dask, read_vectors_dask
from rope_ref.testing._dask_vectors import add_dask_arguments, run_vectors_dask
import argparse
add_dask_arguments(argparse.ArgumentParser())
loaded = sorted(m for m in ("dask", "distributed", "torch", "jax", "cupy") if m in sys.modules)
print("LOADED", loaded)
"""


def test_import_loads_no_dask():
    out = subprocess.run(
        [sys.executable, "-c", NO_DASK_SCRIPT], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert "LOADED []" in out.stdout, out.stdout + out.stderr


def test_backends_module_is_a_reexport():
    from backends import dask_vectors

    assert dask_vectors.write_vectors_dask is write_vectors_dask
    assert dask_vectors.read_vectors_dask is read_vectors_dask


def test_read_back_rejects_changed_or_inconsistent_files(tmp_path):
    pytest.importorskip("dask.array")
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
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    (tmp_path / "x.npy").unlink()
    with pytest.raises(rr.RopeValueError, match=r"x\.npy is not a readable \.npy file"):
        read_vectors_dask(tmp_path)


# --------------------------------------------------------------------------- the CLI entry


def _cli_args(out, *argv):
    """Parse as `rope-ref vectors` would: its own options plus add_dask_arguments."""
    p = argparse.ArgumentParser()
    p.add_argument("--preset")
    p.add_argument("--cases", nargs="+")
    p.add_argument("--dtype", nargs="+")
    p.add_argument("--no-presets", action="store_true")
    p.add_argument("--layer-type")
    p.add_argument("--hf-config")
    p.add_argument("--out", required=True)
    add_dask_arguments(p)
    return p.parse_args(["--backend", "dask", "--out", str(out), *argv])


@needs_dask
def test_cli_entry_writes_and_reports(tmp_path, capsys):
    args = _cli_args(
        tmp_path / "o",
        "--tokens",
        "300",
        "--heads",
        "2",
        "--head-dim",
        "32",
        "--base",
        "500000",
        "--chunk-tokens",
        "100",
        "--seed",
        "3",
        "--dtype",
        "float64",
    )
    assert run_vectors_dask(args) == 0
    cap = capsys.readouterr()
    assert cap.out.strip() == (
        f"wrote 300 tokens x 2 heads x 32 (float64) in 3 blocks to "
        f"{tmp_path / 'o'} (x.npy, y.npy, manifest.json)"
    )
    assert re.search(r"rope-ref vectors: 3/3 blocks written \(100%\)", cap.err)
    m, _, _ = read_vectors_dask(tmp_path / "o")
    assert m["seed"] == 3 and m["rope"]["base"] == 500000.0
    _check(tmp_path / "o", m, rr.Rope(32, base=5e5), 300, 2)
    # a preset, no progress
    args = _cli_args(tmp_path / "p", "--tokens", "64", "--preset", "llama-3.1-8b", "--no-progress")
    assert run_vectors_dask(args) == 0
    assert capsys.readouterr().err == ""
    m, _, _ = read_vectors_dask(tmp_path / "p")
    _check(tmp_path / "p", m, rr.Rope.preset("llama-3.1-8b"), 64, 1)
    # an HF config file
    cfg = tmp_path / "config.json"
    cfg.write_text(
        json.dumps(
            {
                "hidden_size": 256,
                "num_attention_heads": 4,
                "rope_theta": 1e6,
                "max_position_embeddings": 4096,
            }
        )
    )
    args = _cli_args(tmp_path / "h", "--tokens", "20", "--hf-config", str(cfg), "--no-progress")
    assert run_vectors_dask(args) == 0
    m, _, _ = read_vectors_dask(tmp_path / "h")
    assert m["shape"] == [20, 1, 64] and m["rope"]["base"] == 1e6


def test_cli_entry_rejects_bad_options(tmp_path):
    bad = [
        ((), "--backend dask needs --tokens N"),
        (("--tokens", "-5"), "--tokens must be >= 0, got -5"),
        (("--tokens", "5", "--heads", "0"), "--heads must be >= 1, got 0"),
        (("--tokens", "5", "--chunk-tokens", "0"), "--chunk-tokens must be >= 1"),
        (("--tokens", "5", "--seed", "-1"), "--seed must be >= 0"),
        (("--tokens", "5", "--dtype", "bfloat16"), "--dtype: --backend dask writes one of"),
        (("--tokens", "5", "--dtype", "float32", "float64"), "--dtype: --backend dask"),
        (("--tokens", "5", "--cases", "a"), "--cases: not with --backend dask"),
        (("--tokens", "5", "--no-presets"), "--no-presets: not with --backend dask"),
        (
            ("--tokens", "5", "--preset", "llama-3.1-8b", "--head-dim", "64"),
            "give one of --preset, --hf-config or --head-dim/--base",
        ),
        (("--tokens", "5", "--preset", "no-such-model"), "no-such-model"),
        (
            ("--tokens", "5", "--hf-config", "/nonexistent/config.json"),
            "--hf-config /nonexistent/config.json: cannot read it",
        ),
        (("--tokens", "5", "--head-dim", "7"), "--head-dim"),
        (("--tokens", "5", "--layer-type", "sliding_attention"), "--layer-type needs"),
    ]
    for argv, msg in bad:
        with pytest.raises(rr.RopeError, match=re.escape(msg)):
            run_vectors_dask(_cli_args(tmp_path / "o", *argv))
    assert not (tmp_path / "o").exists()
    (tmp_path / "file").write_text("")
    with pytest.raises(rr.RopeValueError, match=r"--out .*file: is a file, not a directory"):
        run_vectors_dask(_cli_args(tmp_path / "file", "--tokens", "5"))


@needs_dask
def test_cli_entry_unreachable_scheduler_names_the_option(tmp_path, monkeypatch):
    pytest.importorskip("distributed")
    import socket

    from rope_ref.testing import _dask_vectors

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    real = _dask_vectors.write_vectors_dask
    monkeypatch.setattr(
        _dask_vectors, "write_vectors_dask", lambda *a, **k: real(*a, **dict(k, connect_timeout=2))
    )
    args = _cli_args(tmp_path, "--tokens", "5", "--scheduler", f"tcp://127.0.0.1:{port}")
    with pytest.raises(
        rr.RopeValueError,
        match=r"^--scheduler 'tcp://127\.0\.0\.1:\d+': "
        "cannot connect",
    ):
        run_vectors_dask(args)


def test_dask_options_need_the_dask_backend():
    p = argparse.ArgumentParser()
    add_dask_arguments(p)
    reject_dask_options(p.parse_args([]))  # nothing given: fine
    assert p.parse_args([]).backend == "numpy"
    with pytest.raises(
        rr.RopeValueError,
        match=r"^--scheduler, --tokens: only with --backend "
        "dask$",
    ):
        reject_dask_options(p.parse_args(["--tokens", "5", "--scheduler", "tcp://h:1"]))


def test_progress_on_a_terminal_rewrites_one_line():
    from rope_ref.testing._dask_vectors import _StderrProgress

    class Tty(io.StringIO):
        def isatty(self):
            return True

    stream = Tty()
    show = _StderrProgress("x", stream)
    for d in range(1, 4):
        show(d, 3)
    text = stream.getvalue()
    assert text.count("\r") == 3 and text.endswith("\n") and text.count("\n") == 1
    assert "x: 3/3 blocks written (100%)" in text
