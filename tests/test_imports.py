"""import rope_ref never imports an array framework (array-api-compat's no-dependency test)."""

from __future__ import annotations

import subprocess
import sys

from _helpers import ROOT

SCRIPT = r"""
import sys
import rope_ref as rr
import array_api_strict as xp
x = xp.asarray([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]])
y = rr.apply_rope(x, xp.asarray([3, 4]), rr.Rope(4, layout="interleaved"))
assert type(y).__module__.startswith("array_api_strict"), type(y)
assert y.shape == (2, 4)
loaded = sorted(m for m in ("torch", "jax", "jaxlib", "cupy", "dask", "tensorflow", "mlx")
                if m in sys.modules)
print("LOADED", loaded)
"""


def test_no_framework_imported():
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert "LOADED []" in out.stdout, out.stdout + out.stderr


# The pytest plugin's ``xp`` fixture exists to import the array library a test asks for; it
# does so inside the fixture, when that parameter is set up, never on import (tests/test_plugin.py
# checks that importing the plugin loads no framework).
LAZY_IMPORTERS = {"rope_ref/testing/pytest_plugin.py"}


def test_core_sources_do_not_import_frameworks():
    import re

    names = r"(torch|jax|jaxlib|cupy|dask|tensorflow|mlx)\b"
    anywhere = re.compile(rf"^\s*(import|from)\s+{names}", re.M)
    top_level = re.compile(rf"^(import|from)\s+{names}", re.M)
    for path in (ROOT / "rope_ref").rglob("*.py"):
        rel = path.relative_to(ROOT).as_posix()
        bad = top_level if rel in LAZY_IMPORTERS else anywhere
        assert not bad.search(path.read_text()), path
