"""Fast checks of the docs sources, in the default run.

The python blocks of every page *run* once per docs build, while Sphinx reads the page
(``docs/_ext/rr_checks.py``; a failing block fails ``sphinx-build -W``), and
``tests/test_docs_build.py::test_every_page_check_ran`` checks the build's record of them
(``tox -e docs``, the docs step of ``.ci/run``). Here, without building: every block compiles,
every ``{doc}`` reference names a page that exists, every page is in a toctree, and no page
cites a document that is not in the repository.
"""

from __future__ import annotations

import re

import pytest
from _helpers import ROOT

DOCS = ROOT / "docs"
PAGES = sorted(p for p in DOCS.rglob("*.md") if "_build" not in p.parts)
IDS = [str(p.relative_to(DOCS).with_suffix("")) for p in PAGES]
BLOCK = re.compile(r"^```python[ \t]*\n(.*?)^```", flags=re.S | re.M)

# documents that live outside the repository (the project's working notes): a page, the README
# or a contributor file citing them sends readers to something they cannot open
OUTSIDE = re.compile(r"math[ -]sheet|mission[ -]anchors|testing-usage|research/", re.I)


def test_pages_found():
    assert len(PAGES) >= 15
    assert (DOCS / "index.md") in PAGES


@pytest.mark.parametrize("page", PAGES, ids=IDS)
def test_page_blocks_compile(page):
    text = page.read_text()
    for m in BLOCK.finditer(text):
        line = text.count("\n", 0, m.start()) + 2
        compile(m.group(1), f"{page}:{line}", "exec")  # SyntaxError names page and line


def test_the_build_runs_the_same_blocks():
    """rr_checks (the build) and this module find the same blocks on every page."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("rr_checks", DOCS / "_ext" / "rr_checks.py")
    assert spec is not None and spec.loader is not None
    rr_checks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rr_checks)
    for page in PAGES:
        text = page.read_text()
        assert [c for _, c in rr_checks.page_blocks(text)] == BLOCK.findall(text), page


@pytest.mark.parametrize("page", PAGES, ids=IDS)
def test_doc_references_exist(page):
    text = page.read_text()
    for target in re.findall(r"\{doc\}`(?:[^`<]*<)?([^`>]+)>?`", text):
        path = (page.parent / target) if not target.startswith("/") else DOCS / target[1:]
        assert path.with_suffix(".md").exists(), f"{page.name}: {{doc}}`{target}` has no page"


def test_every_page_is_in_a_toctree():
    listed: set[str] = set()
    for page in PAGES:
        for body in re.findall(r"```\{toctree\}\n(.*?)```", page.read_text(), flags=re.S):
            for line in body.splitlines():
                line = line.strip()
                if line and not line.startswith(":"):
                    rel = (page.parent / line).relative_to(DOCS)
                    listed.add(str(rel))
    pages = {i for i in IDS if i != "index"}
    assert pages <= listed, f"pages in no toctree: {sorted(pages - listed)}"


def test_no_citation_of_documents_outside_the_repository():
    files = [*PAGES, ROOT / "README.md", ROOT / "CONTRIBUTING.md", ROOT / "CHANGELOG.md"]
    files += [*sorted((DOCS / "_ext").glob("*.py")), DOCS / "conf.py"]
    bad = []
    for f in files:
        for n, line in enumerate(f.read_text().splitlines(), 1):
            if OUTSIDE.search(line):
                bad.append(f"{f.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not bad, "\n".join(bad)


def test_api_page_lists_every_public_name():
    import rope_ref
    import rope_ref.scaling
    import rope_ref.testing

    api = (DOCS / "api.md").read_text()
    listed = set(re.findall(r"^   (\w+)$", api, flags=re.M))
    listed |= set(re.findall(r"^\.\. py:data:: (\w+)$", api, flags=re.M))
    modules = {"scaling", "testing"}  # sections of the page
    missing = [
        f"{m.__name__}.{n}"
        for m in (rope_ref, rope_ref.scaling, rope_ref.testing)
        for n in m.__all__
        if n not in listed and n not in modules
    ]
    assert not missing, f"public names missing from docs/api.md: {missing}"
