"""Every ```python block in docs/*.md runs (blocks of one page share a namespace, in order);
the pages pair each formula with assertions that evaluate both sides with rope_ref."""

from __future__ import annotations

import re

import pytest
from conftest import ROOT

PAGES = sorted((ROOT / "docs").rglob("*.md"))
PAGES = [p for p in PAGES if "_build" not in p.parts]


IDS = [str(p.relative_to(ROOT / "docs").with_suffix("")) for p in PAGES]


@pytest.mark.parametrize("page", PAGES, ids=IDS)
def test_page_examples_run(page):
    blocks = re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)
    namespace: dict = {}
    for i, code in enumerate(blocks):
        exec(compile(code, f"{page.name}[block {i}]", "exec"), namespace)
