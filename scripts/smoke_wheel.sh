#!/usr/bin/env bash
# Build the sdist and the wheel, check them with twine, then install the wheel *alone* in a
# fresh virtualenv (no source tree on the path) and run what a new user runs first: the two
# commands of the README's set-up, and an import of every module of the package.
#
#   PYTHON=.venv/bin/python bash scripts/smoke_wheel.sh     (PYTHON: where build and twine are
#                                                           installed or may be; default python3)
#   WHEELVENV=/tmp/wheelvenv                                (the fresh virtualenv; recreated)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
WHEELVENV=${WHEELVENV:-/tmp/wheelvenv}

"$PYTHON" -m pip install --quiet build twine
rm -rf dist
"$PYTHON" -m build --outdir dist .
ls -l dist
"$PYTHON" -m twine check --strict dist/*

rm -rf "$WHEELVENV"
python3 -m venv "$WHEELVENV"
"$WHEELVENV/bin/pip" install --quiet dist/*.whl
cd /tmp  # away from the checkout: only the installed wheel can be imported
"$WHEELVENV/bin/rope-ref" demo
"$WHEELVENV/bin/rope-ref" info

# every module of the package; the two that exist for test suites need pytest / hypothesis,
# which a plain install does not bring: they are imported after installing those two
cat >/tmp/rope_ref_smoke.py <<'EOF'
import importlib
import pkgutil
import sys

import rope_ref

assert "site-packages" in rope_ref.__file__, rope_ref.__file__
need_test_tools = {"rope_ref.testing.pytest_plugin": "pytest", "rope_ref.testing.strategies":
                   "hypothesis"}
later = sys.argv[1:] == ["--with-test-tools"]
done, waiting = [], []
for mod in pkgutil.walk_packages(rope_ref.__path__, "rope_ref."):
    if mod.name == "rope_ref.__main__":  # runs the command line (smoke-tested above)
        continue
    if mod.name in need_test_tools and not later:
        waiting.append(mod.name)
        continue
    importlib.import_module(mod.name)
    done.append(mod.name)
frameworks = [m for m in ("torch", "jax", "cupy", "dask", "tensorflow") if m in sys.modules]
assert not frameworks, f"importing rope_ref imported {frameworks}"
print(f"imported {len(done)} modules of rope_ref {rope_ref.__version__}"
      + (f"; left for later (need test tools): {waiting}" if waiting else ""))
EOF
"$WHEELVENV/bin/python" /tmp/rope_ref_smoke.py
"$WHEELVENV/bin/pip" install --quiet pytest hypothesis
"$WHEELVENV/bin/python" /tmp/rope_ref_smoke.py --with-test-tools
echo "wheel smoke test passed"
