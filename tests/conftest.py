"""Fixtures: ``bk`` (a backend adapter, parametrized over every selected backend), dtypes.

Test ids name the backend first, e.g. ``test_routes_agree[torch-half-partial]``. Unavailable
backends are skipped with their reason, visibly (``-ra``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import hypothesis
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
for _p in (ROOT, ROOT / "scripts"):  # backends/ and the reference-data scripts
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import backends  # noqa: E402

hypothesis.settings.register_profile(
    "default",
    max_examples=30,
    deadline=None,
    derandomize=True,
    print_blob=True,
    suppress_health_check=[
        hypothesis.HealthCheck.too_slow,
        hypothesis.HealthCheck.function_scoped_fixture,
    ],
)
hypothesis.settings.register_profile(
    "thorough",
    max_examples=300,
    deadline=None,
    print_blob=True,
    suppress_health_check=[
        hypothesis.HealthCheck.too_slow,
        hypothesis.HealthCheck.function_scoped_fixture,
    ],
)
# many more examples, for `tox -e fuzz` (HYPOTHESIS_PROFILE=fuzz pytest tests/adversarial)
hypothesis.settings.register_profile(
    "fuzz",
    max_examples=5000,
    deadline=None,
    print_blob=True,
    suppress_health_check=[
        hypothesis.HealthCheck.too_slow,
        hypothesis.HealthCheck.function_scoped_fixture,
        hypothesis.HealthCheck.filter_too_much,
        hypothesis.HealthCheck.data_too_large,
    ],
)
hypothesis.settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

DATA = ROOT / "tests" / "data"


def _backend_params():
    return [pytest.param(b, id=b.name) for b in backends.selected()]


@pytest.fixture(params=_backend_params())
def bk(request):
    b = request.param
    if not b.is_available():
        pytest.skip(f"backend {b.name}: {b.reason()}")
    b.setup()
    return b


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


def float_dtypes(bk) -> list[str]:
    return list(bk.dtypes)
