"""The case battery, golden vector files and the rope-ref check / vectors / decay commands."""

from __future__ import annotations

import hashlib
import itertools
import json
import sys

import numpy as np
import pytest

import rope_ref as rr
from rope_ref._cli import main
from rope_ref.testing._cases import FAMILIES, POSITION_FORMS, case, cases
from rope_ref.testing._vectors import read_safetensors, write_vectors

ALL = cases()


def test_battery_covers_the_matrix():
    names = [c.name for c in ALL]
    assert len(names) == len(set(names)) >= 100
    assert {c.family for c in ALL} == set(FAMILIES)
    assert {c.positions for c in ALL} == set(POSITION_FORMS)
    assert {c.dtype for c in ALL} == {"float32", "float16", "bfloat16", "float64"}
    assert {c.head_dim for c in ALL} >= {72, 80, 96, 100, 256}
    assert {c.preset for c in ALL if c.preset} == set(rr.presets()) - {"gemma-3"}
    assert any(c.seq == 1 and c.batch > 1 for c in ALL) and any(c.heads == 1 for c in ALL)
    assert any(c.heads % 2 for c in ALL)
    assert max(int(np.max(np.abs(c.token_positions()))) for c in ALL) >= 2**20 - 4096


def test_every_case_rebuilds_from_its_name():
    for c in ALL:
        assert case(c.name) == c
        np.testing.assert_array_equal(case(c.name).x(), c.x())  # deterministic data
    with pytest.raises(ValueError, match="not a case name"):
        case("bshd-b2-nonsense")


def test_expected_values_on_every_backend(bk):
    # the battery's answers are apply_rope's, rounded once, in each backend
    for c in [c for c in ALL if c.dtype == "float32"]:
        x, pos, rope = c.data(bk.xp, bk.device)
        seq_len = None
        if bk.lazy and rope.scaling is not None and rope.scaling.dynamic:
            seq_len = int(np.max(c.token_positions())) + 1  # lazy: cannot read max(positions)
        got = bk.to_numpy(rr.apply_rope(x, pos, rope, seq_len=seq_len)).astype(np.float64)
        np.testing.assert_array_equal(got, c.expected(), err_msg=c.name)


def test_packed_cases_restart_positions():
    c = case("thd-b2-s16-h4-d128-half-r128-base=10000-pos=arange-float32")
    cu = c.cu_seqlens()
    pos = c.token_positions()
    assert cu[0] == 0 and cu[-1] == 32 and len(cu) == 3
    for a, b in itertools.pairwise(cu):
        np.testing.assert_array_equal(pos[a:b], np.arange(b - a))


def test_vectors_are_deterministic_and_self_describing(tmp_path):
    chosen = [c for c in ALL if c.dtype == "bfloat16"][:2] + [
        c for c in ALL if c.dtype == "float16"
    ][:1]
    chosen += [c for c in ALL if c.preset == "phi-3-mini-128k"]
    m1 = write_vectors(chosen, tmp_path / "a")
    write_vectors(chosen, tmp_path / "b")
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert len(files) == 2 * len(chosen) + 1
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    for entry in m1["cases"]:
        for fname, digest in entry["sha256"].items():
            assert hashlib.sha256((tmp_path / "a" / fname).read_bytes()).hexdigest() == digest
        data = read_safetensors(tmp_path / "a" / entry["files"]["safetensors"])
        c = case(entry["name"])
        np.testing.assert_array_equal(data["y"].astype(np.float64), c.expected())
        np.testing.assert_array_equal(data["x"].astype(np.float64), c.x())
        assert entry["tolerance"]["rtol"] > 0 and entry["rope"]["inv_freq"]
    bf16 = next(e for e in m1["cases"] if e["dtype"] == "bfloat16")
    npz = np.load(tmp_path / "a" / bf16["files"]["npz"])
    assert npz["y"].dtype == np.uint16  # bfloat16 stored as bit patterns (documented)
    bits = npz["y"].astype(np.uint32) << np.uint32(16)
    np.testing.assert_array_equal(bits.view(np.float32), case(bf16["name"]).expected())


def test_safetensors_files_open_in_the_reference_library(tmp_path):
    st = pytest.importorskip("safetensors.numpy")
    chosen = [c for c in ALL if c.dtype == "float16"][:2]
    write_vectors(chosen, tmp_path)
    for c in chosen:
        data = st.load_file(str(tmp_path / f"{c.name.replace('=', '_')}.safetensors"))
        np.testing.assert_array_equal(data["y"].astype(np.float64), c.expected())


def test_cli_vectors_decay(tmp_path, capsys):
    assert main(["vectors", "--preset", "llama-3.1-8b", "--out", str(tmp_path)]) == 0
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert {e["rope"]["scaling"]["type"] for e in manifest["cases"]} == {"Llama3"}
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"hidden_size": 256, "num_attention_heads": 4, "rope_theta": 5e5}))
    assert main(["vectors", "--hf-config", str(cfg), "--out", str(tmp_path / "c")]) == 0
    capsys.readouterr()
    assert main(["decay", "--max", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == "0,32.500000"


def test_cli_check_examples_json(tmp_path, capsys):
    # the shipped examples: the exact one passes, float32 angles fail in float64 and are
    # diagnosed; the JSON report has every case, with its class
    report = tmp_path / "report.json"
    few = [c.name for c in ALL if c.dtype == "float64" and not c.preset][:3]
    assert main(["check", "rope_ref.examples:exact", "--cases", *few]) == 0
    capsys.readouterr()
    code = main(
        ["check", "rope_ref.examples:float32_angles", "--cases", *few, "--json", str(report)]
    )
    out = capsys.readouterr().out
    assert code == 1 and "angles formed in float32" in out
    data = json.loads(report.read_text())
    assert [r["case"] for r in data["cases"]] == few
    assert all(r["result"] == "fail" for r in data["cases"])
    assert all(r["outputs"]["x"]["class"] == "fail" for r in data["cases"])
    assert data["summary"]["exit_code"] == 1


def test_cli_vectors_hf_config_with_scaling(tmp_path):
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(rr.preset_info("phi-3-mini-128k")["config"]))
    assert main(["vectors", "--hf-config", str(cfg), "--out", str(tmp_path / "v")]) == 0
    manifest = json.loads((tmp_path / "v" / "manifest.json").read_text())
    assert manifest["config"]["rope_scaling"]["type"] == "longrope"
    entry = manifest["cases"][1]  # large positions: the long factors
    data = read_safetensors(tmp_path / "v" / entry["files"]["safetensors"])
    rope = rr.Rope.from_hf_config(manifest["config"])
    want = rr.apply_rope(data["x"].astype(np.float64), data["positions"], rope)
    np.testing.assert_array_equal(data["y"], want.astype(np.float32))


def test_cli_decay_png(tmp_path):
    pytest.importorskip("matplotlib")
    assert main(["decay", "--csv", str(tmp_path / "d.csv"), "--png", str(tmp_path / "d.png")]) == 0
    assert (tmp_path / "d.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = (tmp_path / "d.csv").read_text().splitlines()
    assert rows[0] == "relative_distance,relative_upper_bound" and len(rows) == 258


def test_float32_angles_example_passes_float32_presets(capsys):
    # presets included: dynamic schedules (LongRoPE) form their angles with the length read
    # from the positions, multi-axis ones (Qwen-VL) per axis, as rope_ref does
    before = list(sys.path)
    names = [
        c.name
        for c in ALL
        if c.dtype == "float32" and c.preset in ("phi-3-mini-128k", "qwen2-vl-7b", "llama-3.1-8b")
    ]
    assert main(["check", "rope_ref.examples:float32_angles", "--cases", *names]) == 0
    out = capsys.readouterr().out
    assert f"{len(names)} passed, 0 failed" in out and "phi-3" in out and "qwen2-vl" in out
    assert sys.path == before  # loading the target leaves sys.path as it was


def test_float32_angles_on_longrope_diagnosed_at_float64():
    # the diagnosis simulates float32 angles with the length-dependent factors rope_ref uses
    from rope_ref.examples import float32_angles

    rope = rr.Rope.preset("phi-3-mini-128k")
    pos = np.arange(60_000, 60_016)
    x = np.random.default_rng(5).standard_normal((3, 16, rope.head_dim))
    with pytest.raises(AssertionError, match="angles formed in float32"):
        rr.testing.assert_close(
            float32_angles(x, pos, rope), rr.apply_rope(x, pos, rope), rope=rope, positions=pos, x=x
        )


def test_case_data_accepts_a_plain_module():
    torch = pytest.importorskip("torch")
    c = ALL[0]
    x, _, _ = c.data(torch)
    assert isinstance(x, torch.Tensor) and str(x.dtype) == f"torch.{c.dtype}"
    np.testing.assert_array_equal(x.numpy(), c.data()[0])


def test_keys_are_independent_data_of_the_same_shape():
    c = ALL[0]
    q, k = c.x(), c.x(role="key")
    assert q.shape == k.shape and not np.array_equal(q, k)
    rope = c.rope()
    want = rr.apply_rope(k, c.positions_for(rope), rope).astype(c.dtype)
    np.testing.assert_array_equal(c.expected(role="key"), want)
    with pytest.raises(ValueError, match="role"):
        c.x(role="value")


def test_rope_override_must_match_the_head_dim():
    c = ALL[0]
    rope = rr.Rope(128, base=5e5)
    y = c.expected(rope=rope)
    np.testing.assert_array_equal(
        y, rr.apply_rope(c.x(), c.positions_for(rope), rope).astype(np.float32)
    )
    with pytest.raises(ValueError, match="head_dim"):
        c.expected(rope=rr.Rope(64))


@pytest.mark.parametrize(
    "name",
    [
        "bshd-b999999-s999999-h4-d128-half-r128-base=10000-pos=arange-float32",  # exabytes
        "bshd-b0-s16-h4-d128-half-r128-base=10000-pos=arange-float32",
        "bshd-b2-s16-h4-d128-half-r128-base=10000-pos=arange-float32-extra",
        "bshd-b2-s16-h4-d128-half-r130-base=10000-pos=arange-float32",
        "bshd-b2-s16-h4-d128-preset=no-such-model-pos=arange-float32",
        "bshd-b2-s4096-h1-d2-half-r2-base=10000-pos=large-float32",
        "bshd-b" + "9" * 5000 + "-s16-h4-d128-half-r128-base=10000-pos=arange-float32",
        "x" * 10**6,
    ],
)
def test_bad_or_huge_case_names_are_typed_errors(name):
    import tracemalloc

    tracemalloc.start()
    try:
        with pytest.raises(rr.RopeValueError, match="not a case name"):
            case(name)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # validated before anything is allocated: the peak stays far below any array the name
    # asks for (a property of the code, not of this machine's speed)
    assert peak < 8 * 2**20 + 4 * len(name)


def test_case_fields_are_validated():
    from rope_ref.testing import Case

    with pytest.raises(rr.RopeValueError, match="more than the limit"):
        Case(batch=2**20, seq=2**10)
    with pytest.raises(rr.RopeValueError, match="family"):
        Case(family="sbhd")
    with pytest.raises(rr.RopeValueError, match="batch"):
        Case(batch=True)


# ---------------------------------------------------------------- positions near 2**24, 2**31
def test_far_position_forms():
    from rope_ref.testing import Case
    from rope_ref.testing._cases import FAR_POSITION_FORMS

    assert FAR_POSITION_FORMS == ("2p24", "2p31")
    far = cases(far_positions=True)
    extra = [c for c in far if c.positions in FAR_POSITION_FORMS]
    assert [c.name for c in far if c.positions not in FAR_POSITION_FORMS] == [
        c.name for c in ALL
    ]  # the default battery is unchanged, the far cases come in addition
    assert len(extra) == 2 * 2 * 4  # bshd and thd, per form and dtype
    for c in extra:
        assert case(c.name) == c
        top = 2**24 if c.positions == "2p24" else 2**31
        pos = c.token_positions()
        assert pos.dtype == np.int64 and np.all(pos < top) and np.all(pos >= top - 4096)
    with pytest.raises(rr.RopeValueError, match="below 4096"):
        Case(positions="2p31", seq=4096)


def _float32_angles(x, pos, rope):
    """Hugging Face's float32 pipeline: inv_freq, positions and angles in float32."""
    f = np.float32
    r = rope.rotary_dim
    inv = (f(1) / (f(rope.base) ** (np.arange(0, r, 2, dtype=f) / f(r)))).astype(f)
    ang = (pos.astype(f)[..., None] * inv).astype(f)
    c, s = np.cos(ang), np.sin(ang)
    h = r // 2
    x = x.astype(f)
    return np.concatenate(
        [x[..., :h] * c - x[..., h:] * s, x[..., h:] * c + x[..., :h] * s], axis=-1
    )


@pytest.mark.parametrize("form", ["2p24", "2p31"])
def test_error_model_at_far_positions(form):
    from rope_ref.testing import RopeToleranceWarning, compare

    c = case(f"bshd-b2-s16-h4-d128-half-r128-base=10000-pos={form}-float32")
    x, pos, rope = c.data()
    want = c.expected().astype(np.float32)
    # exact tables rounded to float32: the exact class
    exact = compare(rr.apply_rope(x, pos, rope), want, rope=rope, positions=pos, strict=True)
    assert exact.passed and exact.accuracy_class == "exact"
    # float32 angles: within the lower-precision angles allowance, which is blind there (a
    # one-position error passes at every token; in the fast pairs any output would):
    # assert_close warns, strict fails
    got = _float32_angles(x, pos, rope)
    r = compare(got, want, rope=rope, positions=pos)
    assert r.passed and r.accuracy_class == "lower-precision angles" and r.vacuous
    assert any("one-position error passes at 128 of 128 tokens" in b for b in r.blind_spots)
    with pytest.warns(RopeToleranceWarning):
        rr.testing.assert_close(got, want, rope=rope, positions=pos)
    assert not compare(got, want, rope=rope, positions=pos, strict=True).passed
    # what the blind spot means: a kernel one position off passes there, except under strict
    shifted = rr.apply_rope(x, pos + 1, rope)
    assert compare(shifted, want, rope=rope, positions=pos).passed
    assert not compare(shifted, want, rope=rope, positions=pos, strict=True).passed


# ---------------------------------------------------------------- wrong types are type errors
def test_wrong_types_are_type_errors(tmp_path):
    c = ALL[0]
    with pytest.raises(rr.RopeTypeError, match="name must be a string"):
        case(5)
    with pytest.raises(rr.RopeTypeError, match=r"rope must be a rope_ref\.Rope"):
        c.data(rope="llama")
    with pytest.raises(rr.RopeTypeError, match=r"rope must be a rope_ref\.Rope"):
        c.expected(rope={"head_dim": 128})
    for bad in (c, c.name, 5, None, {"a": c}):
        with pytest.raises(rr.RopeTypeError, match="cases must be a list of Case"):
            write_vectors(bad, tmp_path)
    with pytest.raises(rr.RopeTypeError, match=r"cases\[1\] must be a Case"):
        write_vectors([c, c.name], tmp_path)
    with pytest.raises(rr.RopeTypeError, match=r"rope must be a rope_ref\.Rope"):
        write_vectors([c], tmp_path, rope="llama")
    assert not any(tmp_path.iterdir())  # refused before anything was written
    assert write_vectors(iter([c]), tmp_path)["cases"][0]["name"] == c.name  # any iterable
