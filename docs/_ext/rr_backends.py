"""The ``backend-table`` directive: the backend support table, generated from the adapters'
capability declaration (``backends/``), the same declaration ``tests/test_backends.py``
verifies on every available backend.

Usage (MyST)::

    ```{backend-table}
    :columns: name, library, version, dtypes, lazy, jit, mutable, device_kinds, available
    :caption: What each backend supports
    ```

Columns are ``name``, ``version``, ``available`` (with the reason when not), and every field of
``backends.CAPABILITY_FIELDS`` (``library``, ``dtypes``, ``lazy``, ``jit``, ``mutable``,
``device_kinds``, ``float64_note``, ``extra``, ``tox_env``, ``notes``). Versions and
availability are those of the Python that builds the docs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from docutils import nodes
from docutils.parsers.rst import directives
from sphinx.util.docutils import SphinxDirective

ROOT = Path(__file__).resolve().parents[2]

DEFAULT_COLUMNS = (
    "name",
    "library",
    "version",
    "dtypes",
    "lazy",
    "jit",
    "mutable",
    "device_kinds",
    "available",
)

HEADERS = {
    "name": "backend",
    "library": "library",
    "version": "version here",
    "available": "available here",
    "dtypes": "dtypes",
    "lazy": "lazy",
    "jit": "jit",
    "mutable": "mutable",
    "device_kinds": "devices",
    "float64_note": "float64",
    "extra": "install",
    "tox_env": "tox",
    "notes": "notes",
}

# columns whose cells are code (rendered as literals)
LITERAL = {"name", "dtypes", "extra", "tox_env"}


def _backends() -> Any:
    import backends  # the repository root is on sys.path through docs/conf.py

    return backends


def cell_text(row: Any, column: str) -> str:
    """The text of one cell (also used by the docs page to check what the table shows)."""
    value = getattr(row, column)
    if column == "version":
        return "not installed" if value is None else str(value)
    if column == "available":
        return "yes" if value else f"no ({row.reason})"
    if column == "extra":
        return "pip install rope-ref" if value is None else f"pip install rope-ref[{value}]"
    if column == "tox_env":
        return f"tox -e {value}"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, tuple):
        return ", ".join(value)
    return str(value)


def _entry(text: str, literal: bool) -> nodes.entry:
    para = nodes.paragraph()
    para += nodes.literal(text, text) if literal else nodes.Text(text)
    entry = nodes.entry()
    entry += para
    return entry


def _row(cells: list[nodes.entry]) -> nodes.row:
    row = nodes.row()
    for c in cells:
        row += c
    return row


class BackendTable(SphinxDirective):
    has_content = False
    option_spec = {  # noqa: RUF012 (docutils reads a class attribute)
        "columns": directives.unchanged,
        "caption": directives.unchanged,
        "backends": directives.unchanged,
    }

    def run(self) -> list[nodes.Node]:
        bk = _backends()
        for f in sorted((ROOT / "backends").glob("*.py")):  # rebuild when a declaration changes
            self.env.note_dependency(str(f))
        columns = [c.strip() for c in self.options.get("columns", "").split(",") if c.strip()]
        columns = columns or list(DEFAULT_COLUMNS)
        unknown = [c for c in columns if c not in HEADERS]
        if unknown:
            raise self.error(f"backend-table: unknown columns {unknown}; known: {list(HEADERS)}")
        which = None
        if "backends" in self.options:
            try:
                names = [n.strip() for n in self.options["backends"].split(",") if n.strip()]
                which = [bk.by_name(n) for n in names]
            except KeyError as exc:
                raise self.error(f"backend-table: {exc}") from None
        rows = bk.support_table(which)

        table = nodes.table(classes=["backend-table"])
        if "caption" in self.options:
            table += nodes.title(self.options["caption"], self.options["caption"])
        group = nodes.tgroup(cols=len(columns))
        table += group
        for c in columns:
            group += nodes.colspec(colwidth=6 if c == "notes" else 2)
        head = nodes.thead()
        head += _row([_entry(HEADERS[c], False) for c in columns])
        group += head
        body = nodes.tbody()
        for r in rows:
            body += _row([_entry(cell_text(r, c), c in LITERAL) for c in columns])
        group += body
        return [table]


def setup(app: Any) -> dict[str, Any]:
    app.add_directive("backend-table", BackendTable)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
