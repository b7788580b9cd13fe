"""Write the small Sphinx inventories the docs link through (intersphinx), for a build with no
network: exactly the objects the pages and docstrings reference, with the addresses they have
on the real sites. Run after adding a reference to a new outside object::

    python docs/_intersphinx/make_inventories.py

Each entry: (name, domain:role, path on the site with "$" for the name, display name or "-").
The format is Sphinx's inventory version 2 (a four-line header, then zlib-compressed lines).
"""

from __future__ import annotations

import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent

PY_FUNCS = "library/functions.html"
PY_TYPES = "library/stdtypes.html"
PY_EXC = "library/exceptions.html"

INVENTORIES: dict[str, tuple[str, str, list[tuple[str, str, str, str]]]] = {
    "python": (
        "Python",
        "3",
        [
            ("int", "py:class", f"{PY_FUNCS}#int", "-"),
            ("float", "py:class", f"{PY_FUNCS}#float", "-"),
            ("bool", "py:class", f"{PY_FUNCS}#bool", "-"),
            ("complex", "py:class", f"{PY_FUNCS}#complex", "-"),
            ("str", "py:class", f"{PY_TYPES}#str", "-"),
            ("bytes", "py:class", f"{PY_TYPES}#bytes", "-"),
            ("tuple", "py:class", f"{PY_TYPES}#tuple", "-"),
            ("list", "py:class", f"{PY_TYPES}#list", "-"),
            ("dict", "py:class", f"{PY_TYPES}#dict", "-"),
            ("None", "py:data", "library/constants.html#None", "-"),
            ("True", "py:data", "library/constants.html#True", "-"),
            ("False", "py:data", "library/constants.html#False", "-"),
            ("Exception", "py:exception", f"{PY_EXC}#Exception", "-"),
            ("ValueError", "py:exception", f"{PY_EXC}#ValueError", "-"),
            ("TypeError", "py:exception", f"{PY_EXC}#TypeError", "-"),
            ("KeyError", "py:exception", f"{PY_EXC}#KeyError", "-"),
            ("AssertionError", "py:exception", f"{PY_EXC}#AssertionError", "-"),
            ("OverflowError", "py:exception", f"{PY_EXC}#OverflowError", "-"),
            ("decimal.Decimal", "py:class", "library/decimal.html#decimal.Decimal", "-"),
            ("fractions.Fraction", "py:class", "library/fractions.html#fractions.Fraction", "-"),
            ("typing.Any", "py:data", "library/typing.html#typing.Any", "-"),
            ("os.PathLike", "py:class", "library/os.html#os.PathLike", "-"),
            ("pathlib.Path", "py:class", "library/pathlib.html#pathlib.Path", "-"),
            (
                "collections.abc.Callable",
                "py:class",
                "library/collections.abc.html#collections.abc.Callable",
                "-",
            ),
            (
                "collections.abc.Sequence",
                "py:class",
                "library/collections.abc.html#collections.abc.Sequence",
                "-",
            ),
            (
                "collections.abc.Iterable",
                "py:class",
                "library/collections.abc.html#collections.abc.Iterable",
                "-",
            ),
            (
                "collections.abc.Mapping",
                "py:class",
                "library/collections.abc.html#collections.abc.Mapping",
                "-",
            ),
            ("dataclasses.dataclass", "py:function", "library/dataclasses.html#$", "-"),
            ("math.cos", "py:function", "library/math.html#$", "-"),
            ("math.sin", "py:function", "library/math.html#$", "-"),
            ("json", "py:module", "library/json.html#module-json", "-"),
        ],
    ),
    "numpy": (
        "NumPy",
        "2",
        [
            (
                "arrays.scalars",
                "std:label",
                "reference/arrays.scalars.html#arrays-scalars",
                "Scalars",
            ),
            ("numpy.ndarray", "py:class", "reference/generated/$.html#$", "-"),
            ("numpy.dtype", "py:class", "reference/generated/$.html#$", "-"),
            ("numpy.float16", "py:class", "reference/arrays.scalars.html#$", "-"),
            ("numpy.float32", "py:class", "reference/arrays.scalars.html#$", "-"),
            ("numpy.float64", "py:class", "reference/arrays.scalars.html#$", "-"),
            ("numpy.random.Generator", "py:class", "reference/random/generator.html#$", "-"),
            ("numpy.testing.assert_allclose", "py:function", "reference/generated/$.html#$", "-"),
            ("numpy.cos", "py:data", "reference/generated/$.html#$", "-"),
            ("numpy.sin", "py:data", "reference/generated/$.html#$", "-"),
            ("numpy.load", "py:function", "reference/generated/$.html#$", "-"),
            ("numpy.savez", "py:function", "reference/generated/$.html#$", "-"),
        ],
    ),
    "array-api": (
        "Python array API standard",
        "2024.12",
        [
            (
                "array_api.array",
                "py:class",
                "API_specification/generated/$.html#$",
                "-",
            ),
            ("array_api.cos", "py:function", "API_specification/generated/$.html#$", "-"),
            ("array_api.sin", "py:function", "API_specification/generated/$.html#$", "-"),
            ("array_api.asarray", "py:function", "API_specification/generated/$.html#$", "-"),
            ("array_api.astype", "py:function", "API_specification/generated/$.html#$", "-"),
            (
                "array-api-specification",
                "std:doc",
                "API_specification/index.html",
                "API specification",
            ),
            ("purpose_and_scope", "std:doc", "purpose_and_scope.html", "Purpose and scope"),
        ],
    ),
}


def write(name: str) -> Path:
    project, version, entries = INVENTORIES[name]
    header = (
        "# Sphinx inventory version 2\n"
        f"# Project: {project}\n"
        f"# Version: {version}\n"
        "# The remainder of this file is compressed using zlib.\n"
    )
    # "$" in a path stands for the name (written out here: Sphinx expands only a final "$")
    body = "".join(
        f"{n} {role} 1 {uri.replace('$', n)} {disp}\n" for n, role, uri, disp in sorted(entries)
    )
    path = HERE / f"{name}.inv"
    path.write_bytes(header.encode() + zlib.compress(body.encode(), 9))
    return path


if __name__ == "__main__":
    for key in INVENTORIES:
        print(write(key))
