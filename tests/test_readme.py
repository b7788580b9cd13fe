"""The README's examples run as written."""

from __future__ import annotations

import re

import pytest
from conftest import ROOT

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
