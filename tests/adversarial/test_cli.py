"""Hostile input to the rope-ref command (issue 13): targets that misbehave in every way a
caller's code can, and fuzzed argument lists. The command must answer with exit code 0, 1
or 2 (130 for an interrupt raised while importing the target), one line on stderr for usage
errors, and never a traceback or an internal error (exit 3).
"""

from __future__ import annotations

import sys
import uuid

import hypothesis
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rope_ref._cli import main

CASE = "bshd-b2-s16-h4-d128-half-r128-base=10000-pos=arange-float32"
CASE2 = "thd-b2-s16-h4-d128-half-r128-base=10000-pos=perseq-float32"

TARGETS = """
import numpy as np
import rope_ref as rr

class Unprintable(Exception):
    def __str__(self):
        raise RuntimeError("no")

class NoArray:
    def __array__(self, *a, **k):
        raise RuntimeError("no array here")

def raises_unprintable(x, positions, rope):
    raise Unprintable()

def raises_base_exception(x, positions, rope):
    raise GeneratorExit

def returns_int(x, positions, rope):
    return 3

def returns_no_array(x, positions, rope):
    return NoArray()

def returns_nan(x, positions, rope):
    return np.full(x.shape, np.nan)

def returns_inf(x, positions, rope):
    return np.full(x.shape, np.inf)

def wrong_shape(x, positions, rope):
    return rr.apply_rope(x, positions, rope)[..., :2]

def wrong_dtype(x, positions, rope):
    return rr.apply_rope(x, positions, rope).astype(np.float16)

def mutates_input(x, positions, rope):
    y = rr.apply_rope(x, positions, rope)
    x[...] = 0
    return y

def hf_one_output(q, k, cos, sin, unsqueeze_dim=1):
    return q

def hf_three_outputs(q, k, cos, sin, unsqueeze_dim=1):
    from rope_ref.testing import hf_apply_rotary_pos_emb
    return (*hf_apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=unsqueeze_dim), "extra")

def prints_a_lot(x, positions, rope):
    print("x" * 10000)
    return rr.apply_rope(x, positions, rope)

class CallableObject:
    def __call__(self, x, positions, rope):
        return rr.apply_rope(x, positions, rope)

instance = CallableObject()

class Declared:
    @property
    def rope_ref_supports(self):
        raise RuntimeError("no declaration")
    def __call__(self, x, positions, rope):
        return x

declared = Declared()

def weird_supports(x, positions, rope):
    return x
weird_supports.rope_ref_supports = {"max_position": True}

NOT_CALLABLE = 3
"""


@pytest.fixture
def targets(tmp_path, monkeypatch):
    name = f"rr_adv_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(TARGETS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


@pytest.mark.parametrize(
    ("target", "convention", "code", "text"),
    [
        ("raises_unprintable", "rope_ref", 1, "ERROR Unprintable: <Unprintable that cannot"),
        ("raises_base_exception", "rope_ref", 1, "ERROR GeneratorExit"),
        ("returns_int", "rope_ref", 1, "FAIL"),
        ("returns_no_array", "rope_ref", 1, "FAIL"),
        ("returns_nan", "rope_ref", 1, "FAIL"),
        ("returns_inf", "rope_ref", 1, "FAIL"),
        ("wrong_shape", "rope_ref", 1, "has shape"),
        ("wrong_dtype", "rope_ref", 1, "FAIL"),
        ("mutates_input", "rope_ref", 0, "passed"),  # the expected values are not its input's
        ("hf_one_output", "hf", 1, "ERROR TypeError"),
        ("hf_three_outputs", "hf", 0, "passed"),  # extra outputs are ignored, q and k judged
        ("prints_a_lot", "rope_ref", 0, "passed"),
        ("instance", "rope_ref", 0, "passed"),
    ],
)
def test_misbehaving_targets_are_case_verdicts(targets, capsys, target, convention, code, text):
    got, out, err = _run(
        capsys, "check", f"{targets}:{target}", "--convention", convention, "--cases", CASE, CASE2
    )
    assert got == code, out + err
    assert text in out


@pytest.mark.parametrize(
    "target", ["declared", "weird_supports", "NOT_CALLABLE", "missing", "instance.nope"]
)
def test_bad_targets_are_usage_errors(targets, capsys, target):
    code, _, err = _run(capsys, "check", f"{targets}:{target}", "--cases", CASE)
    assert code == 2 and len(err.strip().splitlines()) == 1


def test_interrupt_while_importing_the_target(tmp_path, monkeypatch, capsys):
    name = f"rr_int_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text("raise KeyboardInterrupt\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    code, _, err = _run(capsys, "check", f"{name}:f", "--cases", CASE)
    assert code == 130 and err.strip() == "rope-ref: interrupted"
    sys.modules.pop(name, None)


# ---------------------------------------------------------------- fuzzed argument lists
_WORDS = [
    "--preset",
    "llama-3.1-8b",
    "nope",
    "--cases",
    CASE,
    "not-a-case",
    "--dtype",
    "float32",
    "bfloat16",
    "float128",
    "--no-presets",
    "--layer-type",
    "sliding_attention",
    "--json",
    "/no/such/dir/r.json",
    "--timeout",
    "0",
    "-1",
    "nan",
    "inf",
    "1e9",
    "2",
    "0.5",
    "abc",
    "--convention",
    "hf",
    "flash",
    "hf-module",
    "--backend",
    "torch",
    "nope",
    "--strict",
    "--hf-config",
    "/no/such.json",
    "--table-rows",
    "--step",
    "--max",
    "--head-dim",
    "--base",
    "--csv",
    "--png",
    "--out",
    "--position",
    "--help",
    "-h",
    "",
    "=",
    "--",
]


@hypothesis.settings(max_examples=hypothesis.settings().max_examples * 3)
@given(
    command=st.sampled_from(["check", "decay", "vectors", "demo", "info", "nonsense", None]),
    words=st.lists(st.sampled_from(_WORDS), max_size=8),
)
def test_fuzzed_arguments_give_an_exit_code_and_one_line(command, words, tmp_path_factory):
    # check always names a target that does not exist and vectors always an --out that is a
    # file, so no argument list runs the battery; decay's point limit keeps it short
    tmp = tmp_path_factory.getbasetemp()
    afile = tmp / "afile"
    afile.write_text("x")
    argv = [] if command is None else [command]
    if command == "check":
        argv.append("no_such_module_rr_fuzz:f")
    argv += words
    if command == "vectors":
        argv += ["--out", str(afile)]
    if command == "decay":
        argv += ["--csv", str(tmp / "d.csv")]
        if "--max" in words or "--step" in words:
            argv += ["--max", "64"]  # the last --max wins: at most 64 / step points
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    assert code in (0, 2), (argv, code, err.getvalue())
    assert "Traceback" not in out.getvalue() + err.getvalue()
    if code == 2 and err.getvalue():
        assert len(err.getvalue().strip().splitlines()) == 1, (argv, err.getvalue())
