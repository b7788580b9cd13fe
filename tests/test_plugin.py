"""The pytest plugin (rope_ref.testing.pytest_plugin), run in inner pytest sessions (pytester).

Expected case lists are built here from ``rope_ref.testing.cases()`` with plain comprehensions
(not through the plugin's own selection function), and every collected id is turned back into
a case with ``rope_ref.testing.case``.
"""

from __future__ import annotations

import fnmatch
import re
import subprocess
import sys
from pathlib import Path

import pytest

from rope_ref.testing import case, cases

pytest_plugins = ["pytester"]

PLUGIN = "rope_ref.testing.pytest_plugin"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def run(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch):
    """Run an inner pytest in-process with the plugin enabled explicitly (entry points off,
    so the result does not depend on whether rope-ref is installed with its entry point)."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")

    def _run(*args: str) -> pytest.RunResult:
        return pytester.runpytest("-p", PLUGIN, "-p", "no:cacheprovider", "--strict-markers", *args)

    return _run


def collected_ids(result: pytest.RunResult, func: str = "test_it") -> list[str]:
    ids = []
    for line in result.outlines:
        m = re.match(rf"^\S*::{func}\[([^\s\]]*)\](\s|$)", line.strip())
        if m:
            ids.append(m.group(1))
    return ids


def names(pred, *, far: bool = False) -> list[str]:
    return [c.name for c in cases(far_positions=far) if pred(c)]


def test_every_battery_case_once_with_its_name_as_id(pytester, run):
    pytester.makepyfile("def test_it(rope_case):\n    assert rope_case.name\n")
    result = run("--co", "-q")
    ids = collected_ids(result)
    assert ids == [c.name for c in cases()]
    assert all(case(i).name == i for i in ids)  # ids rebuild their case


def test_cases_run_and_receive_the_case(pytester, run):
    pytester.makepyfile(
        """
        import pytest
        import rope_ref as rr
        from rope_ref.testing import Case, assert_close

        @pytest.mark.rope_ref(dtype="float64", positions="offset")
        def test_it(rope_case, request):
            assert isinstance(rope_case, Case)
            assert request.node.callspec.id == rope_case.name
            x, pos, rope = rope_case.data()
            assert_close(rr.apply_rope(x, pos, rope), rope_case.expected().astype(x.dtype))
        """
    )
    result = run("-q")
    n = len(names(lambda c: c.dtype == "float64" and c.positions == "offset"))
    assert n >= 2
    result.assert_outcomes(passed=n)


@pytest.mark.parametrize(
    ("marker", "pred"),
    [
        ('dtype="float16"', lambda c: c.dtype == "float16"),
        ('dtype=("float16", "bfloat16")', lambda c: c.dtype in ("float16", "bfloat16")),
        ('positions="large"', lambda c: c.positions == "large"),
        # the far forms are in the battery only when named
        ('positions=("2p24", "2p31")', lambda c: c.positions in ("2p24", "2p31")),
        ('positions=("2p31", "arange")', lambda c: c.positions in ("2p31", "arange")),
        ('family="thd"', lambda c: c.family == "thd"),
        ('layout="interleaved"', lambda c: c.rope().layout == "interleaved"),
        ("preset=True", lambda c: c.preset is not None),
        ("preset=False", lambda c: c.preset is None),
        ('preset="llama-3.1-8b"', lambda c: c.preset == "llama-3.1-8b"),
        (
            'preset=["gpt-j-6b", "qwen2-vl-7b"], positions="large"',
            lambda c: c.preset in ("gpt-j-6b", "qwen2-vl-7b") and c.positions == "large",
        ),
        (
            'dtype="float32", layout="half", family="bhsd"',
            lambda c: c.dtype == "float32" and c.rope().layout == "half" and c.family == "bhsd",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_marker_filters(pytester, run, marker, pred):
    pytester.makepyfile(
        f"import pytest\n@pytest.mark.rope_ref({marker})\ndef test_it(rope_case):\n    pass\n"
    )
    expected = names(pred, far="2p" in marker)
    assert expected  # every filter here selects something
    assert collected_ids(run("--co", "-q")) == expected


def test_interleaved_presets_are_selected_by_their_rope_layout(pytester, run):
    # a preset case's own `layout` field is the default; the filter looks at the rotation
    pytester.makepyfile(
        "import pytest\n@pytest.mark.rope_ref(layout='interleaved', preset=True)\n"
        "def test_it(rope_case):\n    pass\n"
    )
    ids = collected_ids(run("--co", "-q"))
    assert any("preset=gpt-j-6b" in i for i in ids)
    assert not any("preset=llama-3.1-8b" in i for i in ids)


def test_class_and_module_markers_closest_wins(pytester, run):
    pytester.makepyfile(
        """
        import pytest
        pytestmark = pytest.mark.rope_ref(positions="random")

        @pytest.mark.rope_ref(dtype="float32")
        class TestA:
            def test_it(self, rope_case):
                pass

            @pytest.mark.rope_ref(dtype="float64")
            def test_other(self, rope_case):
                pass
        """
    )
    result = run("--co", "-q")
    a = collected_ids(result, "test_it")
    b = collected_ids(result, "test_other")
    assert a == names(lambda c: c.dtype == "float32" and c.positions == "random")
    assert b == names(lambda c: c.dtype == "float64" and c.positions == "random")


def test_command_line_patterns(pytester, run):
    pytester.makepyfile("def test_it(rope_case):\n    pass\n")
    glob = collected_ids(run("--co", "-q", "--rope-ref-cases", "thd-*-pos=large-*"))
    assert glob == names(lambda c: c.family == "thd" and c.positions == "large")
    sub = collected_ids(run("--co", "-q", "--rope-ref-cases", "d72"))
    assert sub == names(lambda c: "d72" in c.name)
    both = collected_ids(
        run("--co", "-q", "--rope-ref-cases", "d72", "--rope-ref-cases", "preset=phi-2")
    )
    assert both == names(lambda c: "d72" in c.name or "preset=phi-2" in c.name)
    assert sub and glob and len(both) > len(sub)


def test_pattern_and_marker_combine(pytester, run):
    pytester.makepyfile(
        "import pytest\n@pytest.mark.rope_ref(dtype='float64')\ndef test_it(rope_case):\n    pass\n"
    )
    ids = collected_ids(run("--co", "-q", "--rope-ref-cases", "*interleaved*"))
    assert ids == names(lambda c: c.dtype == "float64" and "interleaved" in c.name)


def test_no_matching_case_is_a_visible_skip(pytester, run):
    pytester.makepyfile(
        "import pytest\n@pytest.mark.rope_ref(dtype='float16', preset=True)\n"
        "def test_it(rope_case):\n    pass\n"
    )
    result = run("-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*no battery case matches dtype='float16', preset=True*"])


@pytest.mark.parametrize(
    ("marker", "message"),
    [
        ("dtyp='float32'", "*unknown keyword 'dtyp'*expected one of dtype, layout*"),
        ("dtype='float8'", "*dtype=...) got 'float8'; expected one of float32, float16*"),
        ("layout='rotate_half'", "*layout=...) got 'rotate_half'*half, interleaved*"),
        ("preset='llama-9'", "*preset=...) got 'llama-9'*llama-3.1-8b*"),
        ("dtype=()", "*dtype=...) got an empty sequence*"),
        ("'float32'", "*takes keywords only*"),
    ],
)
def test_bad_marker_is_a_usage_error(pytester, run, marker, message):
    pytester.makepyfile(
        f"import pytest\n@pytest.mark.rope_ref({marker})\ndef test_it(rope_case):\n    pass\n"
    )
    result = run("-q")
    assert result.ret != 0
    assert fnmatch.fnmatchcase(result.stdout.str() + result.stderr.str(), message)


def test_marker_is_registered(pytester, run):
    result = run("--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.rope_ref(dtype=*"])


# ----------------------------------------------------------------------------- xp
def test_xp_runs_over_the_namespaces_and_skips_missing_ones(pytester, monkeypatch):
    # array-api-strict made unimportable in a separate inner process
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    pytester.makeconftest(
        """
        import sys

        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "array_api_strict":
                    raise ImportError("blocked by this test")

        sys.meta_path.insert(0, Block())
        """
    )
    pytester.makepyfile(
        """
        def test_it(xp):
            a = xp.asarray([1.0, 2.0], dtype=xp.float64)
            assert float(xp.sum(a * a)) == 5.0
        """
    )
    result = pytester.runpytest_subprocess("-p", PLUGIN, "-p", "no:cacheprovider", "-rs", "-v")
    ids = collected_ids(result)
    assert ids == ["numpy", "array_api_strict", "torch", "jax", "dask", "cupy"]
    result.stdout.fnmatch_lines(["*SKIPPED*array_api_strict is not installed*"])
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) == 0 and outcomes.get("errors", 0) == 0
    assert outcomes["passed"] >= 1  # NumPy at least


def test_xp_option_selects_namespaces(pytester, run):
    pytester.makepyfile("def test_it(xp):\n    assert xp.__name__\n")
    result = run("--rope-ref-xp", "numpy,array_api_strict", "-v")
    assert collected_ids(result) == ["numpy", "array_api_strict"]
    result.assert_outcomes(passed=2)
    bad = run("--rope-ref-xp", "numpy,tensorflow")
    assert bad.ret != 0
    assert "unknown namespace(s) tensorflow" in bad.stderr.str() + bad.stdout.str()


def test_xp_with_rope_case_skips_dtypes_the_namespace_lacks(pytester, run):
    pytester.makepyfile(
        """
        import pytest
        import rope_ref as rr
        from rope_ref.testing import assert_close

        @pytest.mark.rope_ref(positions="offset", family="bshd")
        def test_it(xp, rope_case):
            x, pos, rope = rope_case.data(xp)
            assert_close(rr.apply_rope(x, pos, rope), rr.apply_rope(x, pos, rope))
        """
    )
    result = run("--rope-ref-xp", "numpy", "-rs")
    n = len(names(lambda c: c.positions == "offset" and c.family == "bshd"))
    n_bf16 = len(
        names(lambda c: c.positions == "offset" and c.family == "bshd" and c.dtype == "bfloat16")
    )
    assert n_bf16 >= 1
    result.assert_outcomes(passed=n - n_bf16, skipped=n_bf16)
    result.stdout.fnmatch_lines(["*numpy has no bfloat16*"])


def test_a_projects_own_fixtures_are_left_alone(pytester, run):
    pytester.makeconftest(
        """
        import pytest

        @pytest.fixture(params=["a", "b"])
        def xp(request):
            return request.param

        @pytest.fixture
        def rope_case():
            return "mine"
        """
    )
    pytester.makepyfile(
        """
        def test_it(xp, rope_case):
            assert xp in ("a", "b") and rope_case == "mine"
        """
    )
    result = run("-v")
    assert collected_ids(result) == ["a", "b"]
    result.assert_outcomes(passed=2)


def test_loading_the_plugin_imports_no_framework_and_changes_nothing(pytester, monkeypatch):
    """A project that does not use the fixtures: same outcome, and neither torch, JAX,
    array-api-strict, Dask nor hypothesis is imported (checked inside the inner session)."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    pytester.makepyfile(
        """
        import sys

        def test_plain():
            heavy = ("torch", "jax", "array_api_strict", "dask", "hypothesis", "cupy")
            assert [m for m in heavy if m in sys.modules] == []

        def test_param():
            assert 1 + 1 == 2
        """
    )
    with_plugin = pytester.runpytest_subprocess("-p", PLUGIN, "-p", "no:cacheprovider")
    without = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    with_plugin.assert_outcomes(passed=2)
    without.assert_outcomes(passed=2)


def test_plugin_module_imports_nothing_heavy():
    code = (
        "import sys, rope_ref.testing.pytest_plugin as p\n"
        "heavy = ('torch', 'jax', 'array_api_strict', 'dask', 'hypothesis', 'cupy')\n"
        "print([m for m in heavy if m in sys.modules])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]"


def test_entry_point_declared():
    tomllib = pytest.importorskip("tomllib")
    with (ROOT / "pyproject.toml").open("rb") as f:
        project = tomllib.load(f)["project"]
    eps = project.get("entry-points", {}).get("pytest11")
    if eps is None:
        pytest.skip("pyproject.toml declares no pytest11 entry point yet")
    assert PLUGIN in eps.values()
