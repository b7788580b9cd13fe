"""The conformance suite runs only when asked for (``pytest tests/clients``, as ``tox -e
clients`` and ``.ci/run`` do, or with ROPE_REF_CLIENTS=1): a plain ``pytest`` of the
repository leaves it out, so the main suite does not depend on (or wait for) the third-party
implementations. It installs nothing: each implementation is imported when its test runs and
skipped with the reason when missing."""

from __future__ import annotations

import os
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _targeted(config) -> bool:
    if os.environ.get("ROPE_REF_CLIENTS") == "1":
        return True
    for arg in config.args:
        p = Path(str(arg).split("::")[0]).resolve()
        if p == HERE or HERE in p.parents:
            return True
    return False


def pytest_ignore_collect(collection_path, config):
    if collection_path.suffix == ".py" and collection_path.name not in (
        "conftest.py",
        "__init__.py",
    ):
        return None if _targeted(config) else True
    return None
