"""Sphinx configuration for the rope_ref documentation.

Everything needed to read the built pages is inside the build: MathJax is bundled
(sphinx-mathjax-offline), plots are drawn at build time by rope_ref with matplotlib, and every
python block of a page runs during the build (docs/_ext/rr_checks.py).
"""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE / "_ext"))

import matplotlib  # noqa: E402

matplotlib.use("Agg")

import rope_ref  # noqa: E402

project = "rope-ref"
author = "rope-ref developers"
copyright = "2026, rope-ref developers"
# one source for the version: rope_ref/__init__.py (hatch reads the same line for the package)
release = rope_ref.__version__
version = release
extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.intersphinx",
    "numpydoc",
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",
    "matplotlib.sphinxext.plot_directive",
    "rr_checks",
    "rr_backends",
]
myst_enable_extensions = ["dollarmath", "colon_fence"]
myst_heading_anchors = 3
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build", "_ext", "_intersphinx"]
templates_path = ["_templates"]

# The look of NumPy's and SciPy's docs; every asset is served from the build (no CDN).
html_theme = "pydata_sphinx_theme"
html_title = f"rope-ref {release}"
html_theme_options = {
    "navbar_align": "left",
    "navbar_end": ["theme-switcher"],
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version", "theme-version"],
    "header_links_before_dropdown": 6,
    "navigation_with_keys": False,
}
html_sidebars = {"index": [], "changelog": [], "getting-started": []}
html_static_path: list[str] = []
html_show_sourcelink = False

# Every cross-reference must resolve (warnings are errors with -W).
nitpicky = True
nitpick_ignore: list[tuple[str, str]] = []

# Links to Python, NumPy and the Array API standard. The build has no network: the
# inventories are small local files listing exactly the objects these pages reference
# (docs/_intersphinx/make_inventories.py writes them), and the links point at the real sites.
intersphinx_mapping = {
    "python": ("https://docs.python.org/3", str(HERE / "_intersphinx" / "python.inv")),
    "numpy": ("https://numpy.org/doc/stable", str(HERE / "_intersphinx" / "numpy.inv")),
    "array-api": (
        "https://data-apis.org/array-api/latest",
        str(HERE / "_intersphinx" / "array-api.inv"),
    ),
}
intersphinx_timeout = 1

# API reference: numpydoc docstrings, one page per public name.
autosummary_generate = True
autodoc_typehints = "none"
autodoc_default_options = {"members": True, "member-order": "bysource"}
numpydoc_show_class_members = False
# Docstrings are validated by scripts/check_docstrings.py (a step of .ci/run), not the build.
numpydoc_validation_checks: set[str] = set()
# Parameter types link where a word names an object (as in NumPy's and SciPy's docs); the other
# words of a type (shapes, "optional", "of") stay text.
numpydoc_xref_param_type = True
numpydoc_xref_ignore = "all"
numpydoc_xref_aliases = {
    "array": "array_api.array",
    "int": "int",
    "float": "float",
    "bool": "bool",
    "str": "str",
    "bytes": "bytes",
    "tuple": "tuple",
    "list": "list",
    "dict": "dict",
    "None": "None",
    "callable": "collections.abc.Callable",
    "sequence": "collections.abc.Sequence",
    "iterable": "collections.abc.Iterable",
    "mapping": "collections.abc.Mapping",
    "Path": "pathlib.Path",
    "Decimal": "decimal.Decimal",
    "ndarray": "numpy.ndarray",
    "Rope": "rope_ref.Rope",
    "Scaling": "rope_ref.scaling.Scaling",
    "Case": "rope_ref.testing.Case",
}

# Plots: drawn when the docs are built, never committed.
plot_include_source = True
plot_html_show_source_link = False
plot_html_show_formats = False
plot_formats = [("png", 110)]
plot_rcparams = {"figure.figsize": (7.0, 3.6), "savefig.bbox": "tight"}
plot_pre_code = "import numpy as np\nimport matplotlib.pyplot as plt\nimport rope_ref as rr\n"
