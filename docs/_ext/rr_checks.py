"""Run every ```python block of a page while Sphinx reads it, so a page whose numbers
disagree with rope_ref does not build.

Blocks of one page share a namespace and run in order (the same rule as tests/test_docs.py).
A failing block is reported as a warning at its line; ``sphinx-build -W`` turns that into a
failed build, and ``--keep-going`` reports every failing page before stopping. After the build,
``_build/html/_checks.json`` records per page how many blocks ran and how many ``assert``
statements they contain.
"""

from __future__ import annotations

import ast
import json
import os
import re
import traceback
from pathlib import Path
from typing import Any

from sphinx.util import logging

logger = logging.getLogger(__name__)

BLOCK = re.compile(r"^```python[ \t]*\n(.*?)^```", flags=re.S | re.M)


def page_blocks(text: str) -> list[tuple[int, str]]:
    """The python blocks of a page with the line each starts on (1-based)."""
    return [(text.count("\n", 0, m.start()) + 2, m.group(1)) for m in BLOCK.finditer(text)]


def count_asserts(code: str) -> int:
    return sum(isinstance(node, ast.Assert) for node in ast.walk(ast.parse(code)))


def _run_page(app: Any, docname: str, source: list[str]) -> None:
    path = app.env.doc2path(docname)
    if not str(path).endswith(".md"):
        return
    blocks = page_blocks(source[0])
    if not blocks:
        return
    namespace: dict[str, Any] = {"__name__": f"docs.{docname}"}
    record = {"blocks": len(blocks), "asserts": 0, "failed": 0}
    skip = os.environ.get("RR_CHECKS_SKIP", "") not in ("", "0")
    for line, code in blocks:
        record["asserts"] += count_asserts(code)
        if skip:
            continue
        try:
            exec(compile(code, f"{path}:{line}", "exec"), namespace)
        except Exception:
            record["failed"] += 1
            logger.warning(
                "python block failed:\n%s",
                traceback.format_exc(limit=-3),
                location=(docname, line),
                type="rr_checks",
            )
    app.env.rr_checks = getattr(app.env, "rr_checks", {})
    app.env.rr_checks[docname] = record


def _merge(app: Any, env: Any, docnames: Any, other: Any) -> None:
    env.rr_checks = {**getattr(env, "rr_checks", {}), **getattr(other, "rr_checks", {})}


def _write(app: Any, exc: Exception | None) -> None:
    if exc is not None or app.builder.format != "html":
        return
    checks = dict(sorted(getattr(app.env, "rr_checks", {}).items()))
    total = {k: sum(r[k] for r in checks.values()) for k in ("blocks", "asserts", "failed")}
    skipped = os.environ.get("RR_CHECKS_SKIP", "") not in ("", "0")
    out = Path(app.outdir) / "_checks.json"
    record = {"pages": checks, "total": total, "skipped": skipped}
    out.write_text(json.dumps(record, indent=1) + "\n")
    logger.info(
        "rr_checks: %(blocks)d python blocks, %(asserts)d asserts, %(failed)d failed", total
    )


def setup(app: Any) -> dict[str, Any]:
    app.connect("source-read", _run_page)
    app.connect("env-merge-info", _merge)
    app.connect("build-finished", _write)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
