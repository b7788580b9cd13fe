"""Validate the docstring of every public callable of rope_ref with numpydoc.

Public: the names in ``__all__`` of ``rope_ref``, ``rope_ref.scaling`` and ``rope_ref.testing``
that are functions or classes, and the public methods and properties those classes define
(inherited ones are checked once, where they are defined; an override without a docstring of
its own is left to the base class's docstring, which Sphinx shows for it). Checks:

* GL08  the object has a docstring;
* PR01  every parameter is documented; PR02  no documented parameter is unknown;
* RT01  functions and methods that return something have a Returns section (properties and
  functions that return only None are exempt);
* RS01  (this script) a Raises section where the function's own body raises;
* EX01  an Examples section, on the main entry points (``MAIN`` below).

Usage::

    python scripts/check_docstrings.py            # every failure, then the count; exit 1 if any
    python scripts/check_docstrings.py --summary  # counts per check and per module only

Run by ``tox -e docs`` and by the docstrings step of ``.ci/run``.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import inspect
import sys
import textwrap
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

MODULES = ("rope_ref", "rope_ref.scaling", "rope_ref.testing")
NUMPYDOC_CHECKS = {"GL08", "PR01", "PR02", "RT01", "EX01"}
# the entry points a reader meets first: they carry an Examples section
MAIN = {
    "rope_ref.apply_rope",
    "rope_ref.Rope",
    "rope_ref.Rope.cos_sin",
    "rope_ref.Rope.from_hf_config",
    "rope_ref.attention",
    "rope_ref.testing.assert_close",
}


def public_objects() -> Iterator[tuple[str, Any]]:
    """(import path, object) for every public callable, each object once."""
    seen: set[int] = set()
    for modname in MODULES:
        mod = importlib.import_module(modname)
        for name in getattr(mod, "__all__", []):
            obj = getattr(mod, name)
            if inspect.ismodule(obj) or not callable(obj) or id(obj) in seen:
                continue
            seen.add(id(obj))
            path = f"{modname}.{name}"
            yield path, obj
            if inspect.isclass(obj):
                yield from _members(path, obj, seen)


def _members(path: str, cls: type, seen: set[int]) -> Iterator[tuple[str, Any]]:
    for attr, value in vars(cls).items():
        if attr.startswith("_"):
            continue
        if isinstance(value, (staticmethod, classmethod)):
            value = value.__func__
        if isinstance(value, property):
            target = value.fget
        elif inspect.isfunction(value):
            target = value
        else:
            continue
        if target is None or id(target) in seen:
            continue
        if not target.__doc__ and _documented_in_base(cls, attr):
            continue  # an override: the base class documents the interface (and autodoc
            # shows that docstring on the subclass)
        seen.add(id(target))
        yield f"{path}.{attr}", value


def _documented_in_base(cls: type, attr: str) -> bool:
    for base in cls.__mro__[1:]:
        value = base.__dict__.get(attr)
        if value is not None:
            value = value.fget if isinstance(value, property) else value
            value = getattr(value, "__func__", value)
            return bool(getattr(value, "__doc__", None))
    return False


def _function(obj: Any) -> Callable[..., Any] | None:
    if isinstance(obj, property):
        return obj.fget
    if inspect.isclass(obj):
        init = obj.__dict__.get("__init__")
        return init if inspect.isfunction(init) else None
    return obj if inspect.isfunction(obj) else None


def _own_body(fn: Callable[..., Any]) -> list[ast.AST]:
    """The nodes of fn's body, not descending into nested functions or classes."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    except (OSError, TypeError, SyntaxError):
        return []
    top = tree.body[0]
    nodes: list[ast.AST] = []
    stack: list[ast.AST] = list(getattr(top, "body", []))
    while stack:
        node = stack.pop()
        nodes.append(node)
        for child in ast.iter_child_nodes(node):
            if not isinstance(
                child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)
            ):
                stack.append(child)
    return nodes


def _raises(fn: Callable[..., Any]) -> bool:
    """Whether fn's own body raises an exception (a bare re-raise does not count)."""
    return any(isinstance(n, ast.Raise) and n.exc is not None for n in _own_body(fn))


def _returns_value(fn: Callable[..., Any]) -> bool:
    for n in _own_body(fn):
        returns = isinstance(n, ast.Return) and n.value is not None
        if returns and not (isinstance(n.value, ast.Constant) and n.value.value is None):
            return True
        if isinstance(n, (ast.Yield, ast.YieldFrom)):
            return True
    return False


def validate(path: str, obj: Any) -> list[tuple[str, str]]:
    from numpydoc.docscrape import get_doc_object
    from numpydoc.validate import validate as numpydoc_validate

    # by object, not by name: "rope_ref.presets" also names the data folder rope_ref/presets
    target = obj.fget if isinstance(obj, property) else obj
    result = numpydoc_validate(get_doc_object(target))
    fn = _function(obj)
    errors = []
    for code, message in result["errors"]:
        if code not in NUMPYDOC_CHECKS:
            continue
        if code == "EX01" and path not in MAIN:
            continue
        if code == "RT01" and (isinstance(obj, property) or fn is None or not _returns_value(fn)):
            continue
        errors.append((code, message))
    raises = result["docstring"] and fn is not None and _raises(fn)
    if raises and not get_doc_object(target)["Raises"]:
        errors.append(("RS01", "The body raises but the docstring has no Raises section"))
    return errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--summary", action="store_true", help="counts only")
    args = parser.parse_args(argv)
    failures: list[tuple[str, str, str]] = []
    checked = 0
    for path, obj in public_objects():
        checked += 1
        for code, message in validate(path, obj):
            failures.append((path, code, message))
    if not args.summary:
        for path, code, message in failures:
            print(f"{path}: {code} {message}")
    by_code = Counter(code for _, code, _ in failures)
    by_module = Counter(
        max((m for m in MODULES if path.startswith(m + ".")), key=len) for path, _, _ in failures
    )
    names = len({path for path, _, _ in failures})
    print(f"\nchecked {checked} public callables: {len(failures)} failures in {names} of them")
    if failures:
        print("by check:  " + ", ".join(f"{c} {n}" for c, n in sorted(by_code.items())))
        print("by module: " + ", ".join(f"{m} {n}" for m, n in by_module.most_common()))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
