"""The README's examples run as written."""

from __future__ import annotations

import re

import pytest
from _helpers import ROOT

BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_example_runs(code):
    for module in re.findall(r"^import ([\w, .]+)", code, flags=re.M):
        for name in module.split(","):
            pytest.importorskip(name.strip().split(" ")[0])
    exec(compile(code, "README.md", "exec"), {})


def test_readme_has_two_setup_commands():
    setup = (ROOT / "README.md").read_text().split("## Set-up")[1].split("\n## ")[0]
    commands = re.findall(r"```sh\n(.*?)```", setup, flags=re.S)
    assert len(commands) == 2
    assert "pytest" in commands[1]
    ci = (ROOT / ".ci" / "run").read_text()
    assert commands[1].strip() in ci  # CI runs exactly the README's test command


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")
    with (ROOT / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)


def test_extras_state_lower_bounds_only():
    """rope-ref installs beside the user's own torch: no extra pins or caps a version (this
    machine's pins live in .ci/constraints.txt, which tox and .ci/run pass)."""
    project = _pyproject()["project"]
    reqs = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        reqs += extra
    for req in reqs:
        assert not re.search(r"==|<|~=|!=", req), req
    assert any(r.startswith("torch>=") for r in project["optional-dependencies"]["torch"])
    pins = (ROOT / ".ci" / "constraints.txt").read_text()
    assert re.search(r"^torch==\d", pins, flags=re.M)
    assert "PIP_CONSTRAINT" in (ROOT / "tox.ini").read_text()
    assert "PIP_CONSTRAINT" in (ROOT / ".ci" / "run").read_text()


def test_version_has_one_source():
    import rope_ref

    config = _pyproject()
    assert "version" in config["project"]["dynamic"]
    assert config["tool"]["hatch"]["version"]["path"] == "rope_ref/__init__.py"
    assert re.fullmatch(r"\d+\.\d+\.\d+(?:[a-z]+\d+)?", rope_ref.__version__)
    conf = (ROOT / "docs" / "conf.py").read_text()
    assert "release = rope_ref.__version__" in conf
    assert rope_ref.__version__ not in conf


def test_license_and_contributor_files():
    license_text = (ROOT / "LICENSE").read_text()
    assert license_text.startswith("MIT License") and "rope-ref developers" in license_text
    assert _pyproject()["project"]["license"] == "MIT"
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert "## Unreleased" in changelog
    import rope_ref

    assert f"## {rope_ref.__version__}" in changelog
    contributing = (ROOT / "CONTRIBUTING.md").read_text()
    for topic in ("schedule", "backend", "battery case", "signature twin", "tox -e"):
        assert topic in contributing, topic
