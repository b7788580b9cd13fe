"""The rope-ref command: check conventions, verdicts, timeouts, exit codes, help.

Most tests call ``rope_ref._cli.main([...])`` in-process (targets in a module written to a
temporary directory); a few run ``python -m rope_ref`` for the real exit codes.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
import uuid

import numpy as np
import pytest
from _helpers import ROOT

import rope_ref as rr
from rope_ref._cli import _parser, main
from rope_ref.testing._cases import FAMILIES, FAR_POSITION_FORMS, POSITION_FORMS, cases
from rope_ref.testing._twins._conventions import CONVENTIONS

#: every position form a case can have: check's default runs them all
FORMS = POSITION_FORMS + FAR_POSITION_FORMS
#: the float32 battery without presets, far positions included (check's --no-presets)
N_BATTERY = len(cases(dtypes=("float32",), presets=False, far_positions=True))
#: a preset's or a config's cases: every shape family in every position form
N_MODEL = len(FAMILIES) * len(FORMS)

# a few cases covering every shape family, both layouts, partial rotary, large positions
CASES = [
    "bshd-b2-s16-h4-d128-half-r128-base=10000-pos=arange-float32",
    "bhsd-b2-s16-h4-d128-half-r128-base=10000-pos=offset-float32",
    "thd-b2-s16-h4-d128-half-r128-base=10000-pos=perseq-float32",
    "bshd-b2-s16-h4-d256-interleaved-r64-base=10000-pos=arange-float32",
    "bshd-b2-s16-h4-d128-half-r64-base=1e+06-pos=large-float32",
]

TARGETS = """
import sys
import threading
import numpy as np
import rope_ref as rr
from rope_ref.testing import (flash_apply_rotary_emb as flash,
                              hf_apply_rotary_pos_emb as hf, mlx_rope as mlx,
                              vllm_rotary as vllm)

from rope_ref.testing._cases import FAR_POSITION_FORMS as FAR_FORMS

RELEASE = threading.Event()

def good(x, positions, rope):
    return rr.apply_rope(x, positions, rope)

def off_by_one(x, positions, rope):
    return rr.apply_rope(x, positions + 1, rope)

def hf_k_bug(q, k, cos, sin, unsqueeze_dim=1):
    # k rotated the wrong way (sin negated): q is right
    q_out, _ = hf(q, k, cos, sin, unsqueeze_dim=unsqueeze_dim)
    _, k_out = hf(q, k, cos, -sin, unsqueeze_dim=unsqueeze_dim)
    return q_out, k_out

def vllm_k_bug(positions, query, key, **kw):
    q_out, k_out = vllm(positions, query, key, **kw)
    return q_out, key  # k left unrotated

def flash_wrong(x, cos, sin, interleaved=False, seqlen_offsets=0, **kw):
    return flash(x, cos, sin, interleaved=not interleaved, seqlen_offsets=seqlen_offsets, **kw)

def mlx_wrong(x, dims, *, traditional, base, scale, offset):
    return mlx(x, dims, traditional=traditional, base=base, scale=scale, offset=offset + 1)

def hangs_on_d72(x, positions, rope):
    if x.shape[-1] == 72:
        RELEASE.wait(60)  # released by the test's teardown
    return rr.apply_rope(x, positions, rope)

def exits(x, positions, rope):
    sys.exit(0)

def interrupts(x, positions, rope):
    raise KeyboardInterrupt

def returns_none(x, positions, rope):
    return None

def upcasts(x, positions, rope):
    # right values, wrong dtype: float64 whatever x's dtype (more accurate, and still wrong)
    return rr.apply_rope(np.asarray(x, dtype=np.float64), positions, rope)

def drops_a_head(x, positions, rope):
    return rr.apply_rope(x, positions, rope)[..., :-1, :]

def returns_a_list(x, positions, rope):
    return rr.apply_rope(x, positions, rope).tolist()

def float32_positions(x, positions, rope):
    # positions through float32: exact below 2**24, multiples of 128 just below 2**31
    p = np.asarray(positions).astype(np.float32).astype(np.int64)
    return rr.apply_rope(x, p, rope)

def only_arange(x, positions, rope):
    return rr.apply_rope(x, positions, rope)
only_arange.rope_ref_supports = {"forms": ("arange",)}

def only_far(x, positions, rope):
    return rr.apply_rope(x, positions, rope)
only_far.rope_ref_supports = {"forms": FAR_FORMS}

def hf_k_upcast(q, k, cos, sin, unsqueeze_dim=1):
    q_out, k_out = hf(q, k, cos, sin, unsqueeze_dim=unsqueeze_dim)
    return q_out, k_out.astype(np.float64)

def only_bfloat16(x, positions, rope):
    return rr.apply_rope(x, positions, rope)
only_bfloat16.rope_ref_supports = {"dtypes": ("bfloat16",)}

def half_only(x, positions, rope):
    return rr.apply_rope(x, positions, rope)
half_only.rope_ref_supports = {"layouts": ("half",), "families": ("bshd", "bhsd"),
                               "max_position": 4096}

def bad_declaration(x, positions, rope):
    return x
bad_declaration.rope_ref_supports = {"dtype": ("float32",)}

def flash_one_nan(x, cos, sin, **kw):  # one NaN in an otherwise right output
    y = np.array(flash(x, cos, sin, **kw))
    y[(0,) * y.ndim] = np.nan
    return y

def nan_and_off_by_one(x, positions, rope):
    y = np.array(rr.apply_rope(x, positions + 1, rope))
    y[(0,) * y.ndim] = np.nan
    return y

def one_inf(x, positions, rope):
    y = np.array(rr.apply_rope(x, positions, rope))
    y[0, 1, 2, 3] = np.inf
    return y

def hf_swapped(q, k, cos, sin, unsqueeze_dim=1):  # returns (k, q)
    q_out, k_out = hf(q, k, cos, sin, unsqueeze_dim=unsqueeze_dim)
    return k_out, q_out

def hf_both_wrong(q, k, cos, sin, unsqueeze_dim=1):  # both fail, not a swap
    return hf(q, k, cos, -sin, unsqueeze_dim=unsqueeze_dim)

def vllm_in_place(positions, query, key, **kw):  # as vLLM's ops.rotary_embedding
    q_out, k_out = vllm(positions, query, key, **kw)
    query[...], key[...] = q_out, k_out

def vllm_returns_one(positions, query, key, **kw):
    return vllm(positions, query, key, **kw)[0]

def flash_returns_none(x, cos, sin, **kw):
    return None
"""


@pytest.fixture
def targets(tmp_path, monkeypatch):
    """A module of targets, importable by ``main`` (a fresh name per test)."""
    name = f"rr_targets_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(TARGETS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    mod = sys.modules.pop(name, None)
    if mod is not None:
        mod.RELEASE.set()


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def summary(out):
    return out.strip().splitlines()[-1]


# ---------------------------------------------------------------------------- basics
def test_info_lists_backends(capsys):
    # each library's line says what importlib.metadata says: its version, or "not installed"
    import importlib.metadata

    code, out, _ = run(capsys, "info")
    assert code == 0
    dists = {"numpy": "numpy", "array_api_compat": "array-api-compat", "torch": "torch"}
    dists |= {"jax": "jax", "dask": "dask", "cupy": "cupy-cuda12x"}
    lines = {ln.split()[0]: ln.split()[1:] for ln in out.splitlines() if ln.startswith("  ")}
    for name, dist in dists.items():
        try:
            version = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            version = None
        shown = lines[name]
        if version is None and name != "cupy":  # cupy ships under several dist names
            assert shown[:2] == ["not", "installed"], (name, shown)
        elif version is not None:
            assert shown[0] == version, (name, shown, version)


def test_demo_reports_naive_error(capsys):
    code, out, _ = run(capsys, "demo", "--position", str(2**31 - 1))
    assert code == 0 and "norm preserved" in out
    off = float(out.split("plain float64 is off by ")[1].split(" ulp")[0])
    assert off > 1e6


def test_no_command_prints_help(capsys):
    code, out, _ = run(capsys)
    assert code == 2 and "usage" in out


def test_every_option_has_help_with_its_default():
    parser = _parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    assert set(sub.choices) == {"info", "demo", "vectors", "check", "decay"}
    for name, p in sub.choices.items():
        for action in p._actions:
            if action.option_strings and action.dest != "help":
                text = action.help or ""
                assert "default" in text or (action.required and "required" in text), (
                    name,
                    action.option_strings,
                )


def test_check_help_shows_each_conventions_signature(capsys):
    code, out, _ = run(capsys, "check", "--help")
    assert code == 0
    flat = " ".join(out.split())
    for conv in CONVENTIONS.values():
        assert conv.name in out and " ".join(conv.signature.split()) in flat
    assert "rope_ref_supports" in out and "exit codes" in out


def test_check_help_aligns_every_convention_and_lists_every_position_form(capsys):
    code, out, _ = run(capsys, "check", "--help")
    assert code == 0
    # every signature starts in one column, after the longest name and a space
    width = max(len(n) for n in CONVENTIONS)
    lines = out.splitlines()
    for name, conv in CONVENTIONS.items():
        (line,) = [ln for ln in lines if ln.startswith(f"  {name} ")]
        assert line[2 + width] == " " and line[3 + width :].startswith(conv.signature.split()[0])
    # the continuation lines of the list start in that column too
    block = out.split("conventions (--convention) and what each calls:\n")[1].split("\n\n")[0]
    for line in block.splitlines():
        assert len(line) - len(line.lstrip()) in (2, width + 3), line
    # every position form, far ones included, in the cases paragraph, each far one with the
    # power of two it lies below
    cases_par = out.split("\ncases: ")[1].split("\n\n")[0]
    assert ", ".join(FORMS) in cases_par
    for form in FAR_POSITION_FORMS:
        assert f"2**{form[2:]}" in cases_par


# ---------------------------------------------------------------------------- verdicts
def test_rope_ref_convention_pass_and_fail(targets, capsys):
    code, out, _ = run(capsys, "check", f"{targets}:good", "--cases", *CASES)
    assert code == 0 and summary(out) == f"{len(CASES)} passed, 0 failed"
    assert "exact" in out
    code, out, _ = run(capsys, "check", f"{targets}:off_by_one", "--cases", *CASES[:2])
    assert code == 1 and summary(out) == "0 passed, 2 failed" and "FAIL" in out


def test_hf_convention_runs_every_shape_and_judges_k(targets, capsys, tmp_path):
    # the HF twin passes bshd (unsqueeze_dim=2), bhsd, packed, interleaved, partial, large;
    # a bug in k alone fails, and the JSON shows q passing and k failing
    code, out, _ = run(capsys, "check", f"{targets}:hf", "--convention", "hf", "--cases", *CASES)
    assert code == 0 and summary(out) == f"{len(CASES)} passed, 0 failed"
    report = tmp_path / "r.json"
    code, out, _ = run(
        capsys,
        "check",
        f"{targets}:hf_k_bug",
        "--convention",
        "hf",
        "--cases",
        *CASES,
        "--json",
        str(report),
    )
    assert code == 1 and summary(out) == f"0 passed, {len(CASES)} failed"
    assert out.count("FAIL k") == len(CASES)
    data = json.loads(report.read_text())
    for row in data["cases"]:
        assert row["outputs"]["q"]["passed"] and not row["outputs"]["k"]["passed"]


def test_hf_convention_runs_the_whole_battery(targets, capsys):
    # not one float32 case is skipped (it used to skip all but bhsd half-layout ones)
    code, out, _ = run(capsys, "check", f"{targets}:hf", "--convention", "hf", "--no-presets")
    assert code == 0 and summary(out) == f"{N_BATTERY} passed, 0 failed"
    code, out, _ = run(
        capsys, "check", f"{targets}:hf", "--convention", "hf", "--preset", "qwen2-vl-7b"
    )  # M-RoPE, every shape and position form
    assert code == 0 and summary(out) == f"{N_MODEL} passed, 0 failed"


@pytest.mark.parametrize("convention", ["flash", "vllm", "mlx"])
def test_twin_conventions_pass_and_injected_bugs_fail(convention, targets, capsys):
    code, out, _ = run(
        capsys, "check", f"{targets}:{convention}", "--convention", convention, "--cases", *CASES
    )
    assert code == 0 and ", 0 failed" in summary(out)
    assert int(summary(out).split()[0]) >= 4  # random positions are the only skips
    wrong = {"flash": "flash_wrong", "vllm": "vllm_k_bug", "mlx": "mlx_wrong"}[convention]
    code, out, _ = run(
        capsys, "check", f"{targets}:{wrong}", "--convention", convention, "--cases", *CASES[:2]
    )
    assert code == 1 and "FAIL" in out
    if convention == "vllm":
        assert out.count("FAIL k") == 2


def test_strict_passes_only_the_exact_class(capsys):
    # float32 angles at positions near 2**20 in a float32 case: lower-precision angles
    name = ["bshd-b2-s16-h4-d128-half-r64-base=1e+06-pos=large-float32"]
    code, out, _ = run(capsys, "check", "rope_ref.examples:float32_angles", "--cases", *name)
    assert code == 0 and "lower-precision angles" in out
    code, out, _ = run(
        capsys, "check", "rope_ref.examples:float32_angles", "--cases", *name, "--strict"
    )
    assert code == 1 and "FAIL" in out
    code, out, _ = run(capsys, "check", "rope_ref.examples:exact", "--cases", *name, "--strict")
    assert code == 0


# ---------------------------------------------------------------------------- robustness
def test_hanging_target_times_out_and_the_run_continues(targets, capsys):
    t0 = time.monotonic()
    code, out, err = run(
        capsys, "check", f"{targets}:hangs_on_d72", "--no-presets", "--timeout", "1"
    )
    assert time.monotonic() - t0 < 30
    assert code == 1
    lines = [ln for ln in out.splitlines() if "-d72-" in ln]
    assert len(lines) == 1 and "TIMEOUT" in lines[0]
    assert summary(out) == f"{N_BATTERY - 1} passed, 1 failed (of which 1 timed out)"
    assert "abandoned" in err


@pytest.mark.parametrize(
    ("target", "text"), [("exits", "SystemExit(0)"), ("interrupts", "KeyboardInterrupt")]
)
def test_exit_and_interrupt_inside_the_target_are_case_errors(target, text, targets, capsys):
    code, out, _ = run(capsys, "check", f"{targets}:{target}", "--cases", *CASES[:3])
    assert code == 1
    assert out.count(f"ERROR {text}") == 3
    assert summary(out) == "0 passed, 3 failed (of which 3 errors)"
    assert threading.main_thread().is_alive()


def test_a_timeout_beyond_the_platform_clock_is_a_long_wait(targets, capsys):
    # threading's join cannot take 1e10 s (OverflowError: an internal error, exit 3)
    for timeout in ("1e10", "1e300"):
        code, out, err = run(
            capsys, "check", f"{targets}:good", "--cases", CASES[0], "--timeout", timeout
        )
        assert code == 0 and summary(out) == "1 passed, 0 failed", err


def test_a_wrong_return_value_is_an_error_not_a_crash(targets, capsys):
    code, out, _ = run(capsys, "check", f"{targets}:returns_none", "--cases", *CASES[:2])
    assert code == 1 and summary(out).startswith("0 passed, 2 failed")


def test_a_result_in_another_dtype_fails_naming_both_dtypes(targets, capsys, tmp_path):
    # apply_rope's contract: the result has x's shape and dtype; a float64 result for float32
    # input is closer to the exact values than float32 can be, and still a wrong kernel
    code, out, _ = run(capsys, "check", f"{targets}:upcasts", "--cases", *CASES[:2])
    assert code == 1 and summary(out) == "0 passed, 2 failed"
    assert out.count("FAIL x: output x has dtype float64, expected float32 (x's dtype)") == 2
    # a float64 case: the same kernel is right
    f64 = CASES[0].replace("float32", "float64")
    code, out, _ = run(capsys, "check", f"{targets}:upcasts", "--cases", f64)
    assert code == 0 and summary(out) == "1 passed, 0 failed"
    # two outputs: only the one in the wrong dtype fails, and the JSON says why
    report = tmp_path / "r.json"
    argv = ["check", f"{targets}:hf_k_upcast", "--convention", "hf", "--cases", CASES[0]]
    code, out, _ = run(capsys, *argv, "--json", str(report))
    assert code == 1 and "FAIL k: output k has dtype float64, expected float32" in out
    row = json.loads(report.read_text())["cases"][0]
    assert row["outputs"]["q"]["passed"] and "k" not in row["outputs"]
    assert row["problems"] == {"k": "output k has dtype float64, expected float32 (x's dtype)"}


def test_a_nan_in_the_output_is_named_and_not_diagnosed(targets, capsys, tmp_path):
    # flash-attn's tables in float32 leave rounding noise in the right elements; a mistake
    # fitted to that noise "explains" a part of it, which is no diagnosis of a NaN
    report = tmp_path / "nan.json"
    argv = ["check", f"{targets}:flash_one_nan", "--convention", "flash", "--cases", CASES[0]]
    code, out, _ = run(capsys, *argv, "--json", str(report))
    assert code == 1 and summary(out) == "0 passed, 1 failed"
    (row,) = [ln for ln in out.splitlines() if ln.startswith(CASES[0])]
    assert row.endswith("FAIL x: 1 NaN element at (0, 0, 0, 0)"), row
    assert row.split()[2:4] == ["nan", "nan"]  # max abs err and max ulp
    assert "partly" not in out and "usual mistake" not in out
    x = json.loads(report.read_text())["cases"][0]["outputs"]["x"]
    assert x["diagnosis"] == [] and x["non_finite"] == "1 NaN element at (0, 0, 0, 0)"
    # where the other elements fail too, their diagnosis follows the NaN
    argv = ["check", f"{targets}:nan_and_off_by_one", "--cases", CASES[0]]
    code, out, _ = run(capsys, *argv)
    assert code == 1
    assert (
        "FAIL x: 1 NaN element at (0, 0, 0, 0); the other elements: positions shifted by +1" in out
    )
    # an infinite element: named as such (the columns show inf)
    code, out, _ = run(capsys, "check", f"{targets}:one_inf", "--cases", CASES[0])
    assert code == 1 and "FAIL x: 1 inf element at (0, 1, 2, 3)" in out


def test_q_and_k_swapped_is_diagnosed(targets, capsys):
    argv = ["check", f"{targets}:hf_swapped", "--convention", "hf", "--cases", *CASES[:3]]
    code, out, _ = run(capsys, *argv)
    assert code == 1 and summary(out) == "0 passed, 3 failed"
    assert out.count("FAIL q,k: q and k outputs swapped") == 3
    # both wrong in another way: not called a swap
    argv = ["check", f"{targets}:hf_both_wrong", "--convention", "hf", "--cases", CASES[0]]
    code, out, _ = run(capsys, *argv)
    assert code == 1 and "FAIL q,k" in out and "swapped" not in out


def test_an_in_place_vllm_kernel_returning_none_is_read_back(targets, capsys):
    argv = ["check", f"{targets}:vllm_in_place", "--convention", "vllm", "--cases", *CASES]
    code, out, _ = run(capsys, *argv)
    assert code == 0 and summary(out) == f"{len(CASES)} passed, 0 failed", out


def test_a_wrong_return_type_says_what_is_expected(targets, capsys):
    argv = ["check", f"{targets}:vllm_returns_one", "--convention", "vllm", "--cases", CASES[0]]
    code, out, _ = run(capsys, *argv)
    assert (
        code == 1
        and (
            "the target must return a tuple of 2 arrays (query, key), or None for an in-place "
            "kernel such as vLLM's ops.rotary_embedding (query and key are read back), got ndarray"
        )
        in out
    )
    argv = ["check", f"{targets}:flash_returns_none", "--convention", "flash", "--cases", CASES[0]]
    code, out, _ = run(capsys, *argv)
    assert (
        code == 1
        and (
            "the target must return x rotated (an array: flash-attn's apply_rotary_emb returns it, "
            "with inplace=True too), got NoneType"
        )
        in out
    )


def test_a_result_of_another_shape_or_not_an_array_fails(targets, capsys):
    code, out, _ = run(capsys, "check", f"{targets}:drops_a_head", "--cases", CASES[0])
    assert code == 1
    assert "FAIL x: output x has shape (2, 16, 3, 128), expected (2, 16, 4, 128)" in out
    code, out, _ = run(capsys, "check", f"{targets}:returns_a_list", "--cases", CASES[0])
    assert code == 1 and "FAIL x: output x is not an array (a list)" in out


def test_torch_result_in_another_dtype_fails(tmp_path, monkeypatch, capsys):
    torch = pytest.importorskip("torch")
    name = f"rr_torch_up_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(
        textwrap.dedent("""
        import torch
        import rope_ref as rr

        def rope(x, positions, rope):
            return rr.apply_rope(x.to(torch.float32), positions, rope)  # bfloat16 not restored
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert torch.zeros(1).dtype == torch.float32
    bf16 = "bshd-b2-s16-h4-d128-half-r128-base=10000-pos=arange-bfloat16"
    try:
        code, out, _ = run(capsys, "check", f"{name}:rope", "--cases", bf16, CASES[0])
        assert code == 1 and "backend torch" in out and summary(out) == "1 passed, 1 failed"
        assert "FAIL x: output x has dtype float32, expected bfloat16 (x's dtype)" in out
    finally:
        sys.modules.pop(name, None)


def test_a_result_in_another_array_library_or_device_fails_naming_both(
    tmp_path, monkeypatch, capsys
):
    torch = pytest.importorskip("torch")
    name = f"rr_torch_ns_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(
        textwrap.dedent("""
        import numpy as np
        import torch
        import rope_ref as rr
        from rope_ref.testing import te_apply_rotary_pos_emb as te

        def numpy_out(x, positions, rope):  # torch in, NumPy out
            return rr.apply_rope(x, positions, rope).numpy()

        def meta_out(x, positions, rope):  # another device
            return torch.empty_like(x, device="meta")

        def te_torch_out(t, freqs, **kw):  # NumPy in, torch out
            return torch.from_numpy(np.asarray(te(t, freqs, **kw)))

        def good(x, positions, rope):
            return rr.apply_rope(x, positions, rope)
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        code, out, _ = run(capsys, "check", f"{name}:numpy_out", "--cases", *CASES[:2])
        assert code == 1 and "backend torch" in out and summary(out) == "0 passed, 2 failed"
        assert out.count("FAIL x: the target returned a numpy array for torch inputs") == 2
        code, out, _ = run(capsys, "check", f"{name}:meta_out", "--cases", CASES[0])
        assert code == 1 and "an array on device meta for inputs on cpu" in out
        # te-cp concatenates the ranks' results: np.concatenate would convert torch tensors
        argv = ["--convention", "te-cp", "--backend", "numpy", "--cases", CASES[0]]
        code, out, _ = run(capsys, "check", f"{name}:te_torch_out", *argv)
        assert code == 1 and "FAIL x: the target returned a torch array for numpy inputs" in out
        code, out, _ = run(capsys, "check", f"{name}:good", "--cases", *CASES[:2])
        assert code == 0 and summary(out) == "2 passed, 0 failed"
    finally:
        sys.modules.pop(name, None)
    # an unpacked output judged on its own (the verdict step): both libraries named
    from rope_ref._cli_check import _as_judged

    got, why = _as_judged(np.zeros((2, 3), np.float32), "k", "float32", (2, 3), torch.zeros(1))
    assert got is None and why == (
        "output k is a numpy array for torch inputs: the result must be in x's array library "
        "(torch)"
    )


def test_a_convention_built_from_a_config_is_marked_not_named(monkeypatch, capsys):
    import dataclasses

    from rope_ref._cli_check import _convention_options

    conv = dataclasses.replace(CONVENTIONS["hf-module"], name="my-module")
    assert conv.needs_config and not CONVENTIONS["hf"].needs_config
    args = _parser().parse_args(["check", "m:f", "--convention", "hf"])
    with pytest.raises(Exception, match="--convention my-module needs --hf-config"):
        _convention_options(args, conv, object, None)
    assert _convention_options(args, CONVENTIONS["hf"], object, None) == {}


# ---------------------------------------------------------------------------- position forms
def test_the_default_run_reaches_positions_near_2_31(targets, capsys):
    # positions rounded through float32 are exact below 2**24, so the "large" form (near
    # 2**20) cannot catch it; the default run includes the far forms, and only 2p31 fails.
    # float64 cases: in float32 the allowance at 2**31 is a full turn (float32 angles are
    # the "lower-precision angles" class there), so only --strict would tell
    assert "2p31" in FAR_POSITION_FORMS
    argv = ["check", f"{targets}:float32_positions", "--dtype", "float64"]
    code, out, _ = run(capsys, *argv, "--no-presets")
    assert code == 1 and summary(out) == f"{N_BATTERY - 2} passed, 2 failed"
    failing = [line.split()[0] for line in out.splitlines() if "FAIL" in line]
    assert len(failing) == 2 and all("-pos=2p31-" in name for name in failing)
    assert {name.split("-")[0] for name in failing} == {"bshd", "thd"}
    # a preset's cases too: every family in every form
    code, out, _ = run(capsys, *argv, "--preset", "llama-3.1-8b")
    assert code == 1 and summary(out) == f"{N_MODEL - 3} passed, 3 failed"
    assert out.count("-pos=2p31-float64") == 3 and out.count("FAIL") == 3
    code, out, _ = run(capsys, *argv[:2], "--no-presets", "--strict", "--positions", "2p31")
    assert code == 1 and summary(out) == "0 passed, 2 failed"


@pytest.mark.parametrize("form", FORMS)
def test_positions_selects_every_form(form, targets, capsys, tmp_path):
    report = tmp_path / "r.json"
    argv = ["check", f"{targets}:good", "--no-presets", "--positions", form, "--json", str(report)]
    code, out, _ = run(capsys, *argv)
    assert code == 0, out
    names = [r["case"] for r in json.loads(report.read_text())["cases"]]
    assert names and all(f"-pos={form}-" in n for n in names)
    assert summary(out) == f"{len(names)} passed, 0 failed"
    # a preset: every shape family in that form; vectors writes that form's positions
    code, out, _ = run(
        capsys, "check", f"{targets}:good", "--preset", "llama-2-7b", "--positions", form
    )
    assert code == 0 and summary(out) == f"{len(FAMILIES)} passed, 0 failed"
    vec = tmp_path / "v"
    argv = ["vectors", "--preset", "llama-2-7b", "--positions", form, "--out", str(vec)]
    assert main(argv) == 0
    capsys.readouterr()
    manifest = json.loads((vec / "manifest.json").read_text())
    assert [e["name"].split("-pos=")[1] for e in manifest["cases"]] == [f"{form}-float32"]
    with np.load(vec / manifest["cases"][0]["files"]["npz"]) as data:
        positions = data["positions"]
    near = {"large": 2**20, "2p24": 2**24, "2p31": 2**31}.get(form)
    if near is not None:  # the last token of every sequence just below 2**k
        assert positions.min() >= near - 4096 and positions.max() < near
    else:
        assert positions.max() < 8192 + 4096


def test_positions_in_a_declaration_and_with_cases(targets, capsys):
    code, out, _ = run(capsys, "check", f"{targets}:only_far", "--no-presets")
    assert code == 0 and summary(out).startswith(f"{2 * len(FAR_POSITION_FORMS)} passed, 0 failed")
    code, out, _ = run(capsys, "check", f"{targets}:only_arange", "--no-presets")
    assert code == 0 and "the target declares position forms arange" in out
    assert not any("-pos=2p" in line and line.endswith(" ok") for line in out.splitlines())
    code, _, err = run(
        capsys, "check", f"{targets}:good", "--cases", CASES[0], "--positions", "large"
    )
    assert code == 2 and "give --positions or --cases, not both" in err


def test_everything_skipped_exits_2_with_grouped_reasons(targets, capsys):
    code, out, err = run(capsys, "check", f"{targets}:only_bfloat16", "--no-presets")
    assert code == 2
    assert f"{N_BATTERY:>4}  the target declares dtypes bfloat16 (rope_ref_supports)" in out
    assert "no case ran" in err


def test_declared_support_skips_with_the_reason(targets, capsys):
    code, out, _ = run(capsys, "check", f"{targets}:half_only", "--no-presets")
    assert code == 0
    assert "the target declares layouts half (rope_ref_supports)" in out
    assert "the target declares shape families bshd, bhsd (rope_ref_supports)" in out
    assert "the target declares positions up to 4096 (rope_ref_supports)" in out
    passed = int(summary(out).split()[0])
    skipped = int(summary(out).split(", ")[-1].split()[0])
    assert passed + skipped == N_BATTERY and passed >= 10


def test_torch_target_runs_on_torch_by_default(tmp_path, monkeypatch, capsys):
    pytest.importorskip("torch")
    name = f"rr_torch_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(
        textwrap.dedent("""
        import torch
        import rope_ref as rr

        def rope(x, positions, rope):
            assert isinstance(x, torch.Tensor) and isinstance(positions, torch.Tensor)
            return rr.apply_rope(x, positions, rope)
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        code, out, _ = run(
            capsys,
            "check",
            f"{name}:rope",
            "--cases",
            *CASES[:2],
            "bshd-b2-s16-h4-d128-half-r128-base=10000-pos=arange-bfloat16",
        )
        assert code == 0 and "backend torch" in out and summary(out) == "3 passed, 0 failed"
        code, out, _ = run(
            capsys, "check", f"{name}:rope", "--cases", *CASES[:1], "--backend", "numpy"
        )
        assert code == 1 and "ERROR AssertionError" in out
    finally:
        sys.modules.pop(name, None)


# ---------------------------------------------------------------------------- module conventions
def test_hf_module_judges_the_class_and_its_table_builder(tmp_path, monkeypatch, capsys):
    pytest.importorskip("transformers")
    name = f"rr_hf_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(
        textwrap.dedent("""
        import torch
        from transformers.models.llama.modeling_llama import (
            LlamaConfig, LlamaRotaryEmbedding, apply_rotary_pos_emb)

        class WrongBase(LlamaRotaryEmbedding):
            def __init__(self, config):
                super().__init__(config)
                d = self.inv_freq.numel() * 2
                self.inv_freq = 1.0 / (10_000.0 ** (torch.arange(0, d, 2).float() / d))
    """)
    )
    (tmp_path / "config.json").write_text(
        json.dumps(
            {
                "model_type": "llama",
                "hidden_size": 512,
                "num_attention_heads": 8,
                "rope_theta": 500000.0,
                "max_position_embeddings": 8192,
            }
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        code, out, _ = run(
            capsys,
            "check",
            f"{name}:LlamaRotaryEmbedding",
            "--convention",
            "hf-module",
            "--hf-config",
            str(tmp_path / "config.json"),
        )
        assert code == 0 and summary(out) == f"{N_MODEL} passed, 0 failed"
        assert "backend torch" in out
        code, out, _ = run(
            capsys,
            "check",
            f"{name}:WrongBase",
            "--convention",
            "hf-module",
            "--preset",
            "llama-2-7b",
        )  # theta 10000 there: the class is right
        assert code == 0
        code, out, _ = run(
            capsys,
            "check",
            f"{name}:WrongBase",
            "--convention",
            "hf-module",
            "--hf-config",
            str(tmp_path / "config.json"),
        )
        assert code == 1 and "FAIL q,k" in out
        code, _, err = run(
            capsys, "check", f"{name}:LlamaRotaryEmbedding", "--convention", "hf-module"
        )
        assert code == 2 and "needs --hf-config" in err
    finally:
        sys.modules.pop(name, None)


def test_hf_module_class_whose_module_has_no_config_class(tmp_path, monkeypatch, capsys):
    # the config object comes from AutoConfig by model_type (it used to pass model_type
    # twice: a TypeError reported as a usage error)
    pytest.importorskip("transformers")
    name = f"rr_hf_nocfg_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(
        textwrap.dedent("""
        from transformers.models.llama import modeling_llama

        class Mine(modeling_llama.LlamaRotaryEmbedding):
            pass
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        argv = ["check", f"{name}:Mine", "--convention", "hf-module", "--preset", "llama-2-7b"]
        code, out, err = run(capsys, *argv, "--positions", "arange", "2p31")
        assert code == 0 and summary(out) == f"{2 * len(FAMILIES)} passed, 0 failed", err
    finally:
        sys.modules.pop(name, None)


def test_lucidrains_module(capsys):
    pytest.importorskip("rotary_embedding_torch", reason="rotary-embedding-torch not installed")
    argv = ["check", "rotary_embedding_torch:RotaryEmbedding", "--convention", "lucidrains"]
    code, out, _ = run(capsys, *argv, "--cases", *CASES)
    assert code == 0 and summary(out) == f"{len(CASES)} passed, 0 failed"
    # at bfloat16 it forms positions in bfloat16 (1000 + t rounds): caught and named
    code, out, _ = run(
        capsys, *argv, "--cases", "bshd-b2-s16-h4-d128-half-r128-base=10000-pos=offset-bfloat16"
    )
    assert code == 1 and "bfloat16" in out.split("FAIL")[1]


def test_torchtune_module(capsys):
    pytest.importorskip("torchtune", reason="torchtune not installed", exc_type=ImportError)
    argv = ["check", "torchtune.modules:RotaryPositionalEmbeddings", "--convention", "torchtune"]
    code, out, _ = run(capsys, *argv, "--cases", *CASES, "--table-rows", "65536")
    assert code == 0
    assert summary(out) == f"{len(CASES) - 1} passed, 0 failed, 1 skipped"
    assert "positions beyond --table-rows" in out


# ---------------------------------------------------------------------------- usage errors
def _bad_module(tmp_path, body):
    name = f"rr_bad_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(body)
    return f"{name}:f"


@pytest.mark.parametrize(
    "argv",
    [
        ["check", "rope_ref.examples:exact", "--preset", "llama-9"],
        ["check", "rope_ref.examples:exact", "--cases", "bshd-b2-nonsense"],
        [
            "check",
            "rope_ref.examples:exact",
            "--cases",
            "bshd-b999999-s999999-h9-d128-half-r128-base=10000-pos=arange-float32",
        ],
        ["check", "rope_ref.examples:exact", "--hf-config", "{tmp}/missing.json"],
        ["check", "rope_ref.examples:exact", "--hf-config", "{tmp}/malformed.json"],
        ["check", "rope_ref.examples:exact", "--hf-config", "{tmp}/list.json"],
        ["check", "rope_ref.examples:exact", "--hf-config", "{tmp}/deep.json"],  # RecursionError
        ["check", "rope_ref.examples:exact", "--hf-config", "{tmp}"],
        ["check", "rope_ref.examples:exact", "--layer-type", "sliding_attention"],
        ["check", "rope_ref.examples:exact", "--cases", CASES[0], "--dtype", "float64"],
        ["check", "rope_ref.examples:exact", "--preset", "llama-2-7b", "--no-presets"],
        ["vectors", "--out", "{tmp}/v", "--cases", CASES[0], "--dtype", "float64"],
        ["vectors", "--out", "{tmp}/v", "--cases", CASES[0], "--no-presets"],
        ["check", "rope_ref.examples:exact", "--positions", "large", "--cases", CASES[0]],
        ["check", "rope_ref.examples:exact", "--positions", "nope"],
        ["check", "rope_ref.examples:exact", "--table-rows", "-5"],
        ["check", "rope_ref.examples:exact", "--timeout", "-1"],
        ["check", "rope_ref.examples:NOT_CALLABLE"],
        ["vectors", "--out", "{tmp}/v", "--hf-config", "{tmp}/deep.json"],
        ["vectors", "--out", "{tmp}/v", "--layer-type", "sliding_attention"],
        ["vectors", "--out", "{tmp}/v", "--positions", "large", "--cases", CASES[0]],
        [
            "vectors",
            "--out",
            "{tmp}/v",
            "--backend",
            "dask",
            "--tokens",
            "8",
            "--positions",
            "2p31",
        ],
        ["check", "rope_ref.examples:exact", "--json", "{tmp}/no/such/dir/r.json"],
        ["check", "rope_ref.examples:exact", "--json", "{tmp}"],
        ["check", "rope_ref.examples:exact", "--timeout", "0"],
        ["check", "rope_ref.examples:exact", "--convention", "nope"],
        ["check", "rope_ref.examples"],
        ["check", "rope_ref.examples:nothing"],
        ["check", "{exits_on_import}"],
        ["check", "{raises_on_import}"],
        ["check", "{bad_declaration}"],
        ["vectors", "--out", "{tmp}/afile"],
        ["vectors", "--out", "{tmp}/v", "--preset", "nope"],
        ["decay", "--step", "0"],
        ["decay", "--step", "nan"],
        ["decay", "--max", "1e9"],
        ["decay", "--max", "-1"],
        ["decay", "--head-dim", "3"],
        ["decay", "--csv", "{tmp}/no/such/dir/d.csv"],
        ["demo", "--head-dim", "0"],
    ],
)
def test_usage_errors_are_one_line_and_exit_2(argv, tmp_path, monkeypatch, capsys):
    (tmp_path / "malformed.json").write_text("{not json")
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    (tmp_path / "afile").write_text("x")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    subs = {
        "tmp": str(tmp_path),
        "exits_on_import": _bad_module(tmp_path, "import sys\nsys.exit(0)\n"),
        "raises_on_import": _bad_module(tmp_path, "raise RuntimeError('boom\\nline two')\n"),
        "bad_declaration": _bad_module(
            tmp_path, "def f(x, p, r):\n    return x\nf.rope_ref_supports = {'dtype': 1}\n"
        ),
    }
    argv = [a.format(**subs) for a in argv]
    code, out, err = run(capsys, *argv)
    assert code == 2, (argv, out, err)
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err + out
    assert "error" in err


# ---------------------------------------------------------------------------- real processes
def _rope_ref(*argv, cwd):
    return subprocess.run(
        [sys.executable, "-m", "rope_ref", *argv],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )


def test_exit_codes_of_the_real_command(tmp_path):
    (tmp_path / "impl.py").write_text(TARGETS)
    ok = _rope_ref("check", "impl:good", "--cases", CASES[0], cwd=tmp_path)
    assert ok.returncode == 0 and ok.stdout.strip().endswith("1 passed, 0 failed")
    bad = _rope_ref("check", "impl:exits", "--cases", CASES[0], cwd=tmp_path)
    assert bad.returncode == 1 and "SystemExit(0)" in bad.stdout
    skipped = _rope_ref("check", "impl:only_bfloat16", "--cases", CASES[0], cwd=tmp_path)
    assert skipped.returncode == 2
    usage = _rope_ref("check", "impl:good", "--preset", "nope", cwd=tmp_path)
    assert usage.returncode == 2 and len(usage.stderr.strip().splitlines()) == 1
    info = _rope_ref("info", cwd=ROOT)
    assert info.returncode == 0 and info.stdout.startswith("rope_ref ")


def test_hf_config_with_a_schedule_on_multi_axis_positions(targets, tmp_path, capsys):
    # Qwen-VL's M-RoPE with linear scaling (Rope(scaling=Linear, axes=MRope)): the HF
    # convention runs it in every shape and form, flash (one position per token) skips it
    import rope_ref as rr

    cfg = rr.preset_info("qwen2-vl-7b")["config"]
    cfg["rope_scaling"] = {"rope_type": "linear", "factor": 2.0, "mrope_section": [16, 24, 24]}
    path = tmp_path / "vl.json"
    path.write_text(json.dumps(cfg))
    code, out, _ = run(
        capsys, "check", f"{targets}:hf", "--convention", "hf", "--hf-config", str(path)
    )
    assert code == 0 and summary(out) == f"{N_MODEL} passed, 0 failed"
    code, out, err = run(
        capsys, "check", f"{targets}:flash", "--convention", "flash", "--hf-config", str(path)
    )
    assert code == 2 and "one position per token" in out and "no case ran" in err


def test_vectors_dask_backend(tmp_path, capsys):
    pytest.importorskip("dask.array")
    from rope_ref.testing import read_vectors_dask

    rc = main(["vectors", "--backend", "dask", "--out", str(tmp_path), "--tokens", "300",
               "--heads", "2", "--head-dim", "16", "--chunk-tokens", "128"])  # fmt: skip
    assert rc == 0
    cap = capsys.readouterr()
    assert "3/3 blocks written (100%)" in cap.err and cap.out.startswith("wrote 300 tokens")
    _, x, y = read_vectors_dask(tmp_path)  # sha256 of every chunk checked
    want = rr.apply_rope(np.asarray(x), np.arange(300)[:, None], rr.Rope(16))
    np.testing.assert_array_equal(np.asarray(y), want)


def test_vectors_dask_options_need_the_backend(tmp_path, capsys):
    assert main(["vectors", "--out", str(tmp_path), "--tokens", "5"]) == 2
    assert "--tokens: only with --backend dask" in capsys.readouterr().err
