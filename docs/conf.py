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
release = rope_ref.__version__
version = release
extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
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
exclude_patterns = ["_build", "_ext"]
templates_path = ["_templates"]
html_theme = "alabaster"
html_theme_options = {"font_family": "serif", "head_font_family": "serif",
                      "code_font_family": "monospace", "description": "exact RoPE, any array"}
html_static_path = []
nitpicky = False

# API reference: numpydoc docstrings, one page per public name.
autosummary_generate = True
autodoc_typehints = "none"
autodoc_default_options = {"members": True, "member-order": "bysource"}
numpydoc_show_class_members = False
numpydoc_validation_checks: set[str] = set()

# Plots: drawn when the docs are built, never committed.
plot_include_source = True
plot_html_show_source_link = False
plot_html_show_formats = False
plot_formats = [("png", 110)]
plot_rcparams = {"figure.figsize": (7.0, 3.6), "savefig.bbox": "tight"}
plot_pre_code = "import numpy as np\nimport matplotlib.pyplot as plt\nimport rope_ref as rr\n"
