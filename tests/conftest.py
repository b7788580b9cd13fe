"""Fixtures: ``bk`` (a backend adapter, parametrized over every selected backend), dtypes.

Test ids name the backend first, e.g. ``test_routes_agree[torch-half-partial]``. Unavailable
backends are skipped with their reason, visibly (``-ra``).
"""

from __future__ import annotations

import os
from pathlib import Path

import hypothesis
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent

import backends  # noqa: E402  (importable through pytest's pythonpath setting)

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


# ---------------------------------------------------------------------------- slow tests
# The default run (the README's test command) must stay a few minutes on two cores; CI runs
# the tests marked slow as a step of their own (`pytest -m slow`). Two rules, applied at
# collection so that the marker is visible in `pytest --collect-only -m slow`:
#
# 1. Tests over the ``bk`` fixture run on NumPy (plain and read-only), array-api-strict and
#    PyTorch by default; their JAX and Dask instances (a jit compilation or a task graph per
#    call: 5-50x slower) are slow. The modules about those two libraries keep their fast
#    instances: tests/test_lazy_jit.py and tests/test_backends.py.
# 2. Individual tests measured at more than ~10 s (see --durations): listed in SLOW_TESTS,
#    as node-id prefixes.
SLOW_BACKENDS = {"jax", "dask"}
FAST_ON_EVERY_BACKEND = {"test_lazy_jit.py", "test_backends.py"}
SLOW_TESTS = (
    "tests/test_battery.py::test_cli_check_conventions",
    "tests/test_dask_vectors.py::test_local_cluster_two_workers",
    "tests/test_decay.py::test_cli_bounds_the_number_of_points",
    "tests/test_plugin.py::test_xp_runs_over_the_namespaces_and_skips_missing_ones",
)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    slow = pytest.mark.slow
    for item in items:
        callspec = getattr(item, "callspec", None)
        backend = callspec.params.get("bk") if callspec is not None else None
        name = getattr(backend, "name", None)
        by_backend = name in SLOW_BACKENDS and item.path.name not in FAST_ON_EVERY_BACKEND
        if by_backend or item.nodeid.startswith(SLOW_TESTS):
            item.add_marker(slow)


def _backend_params():
    return [pytest.param(b, id=b.name) for b in backends.selected()]


def _unmet(b, marker) -> str | None:
    """Why backend ``b`` lacks what ``@pytest.mark.needs(...)`` asks for, from the adapter's
    declared capabilities (backends/_base.py, CAPABILITY_FIELDS); None when it has it all."""
    for key, want in marker.kwargs.items():
        if key == "dtype":
            for name in (want,) if isinstance(want, str) else want:
                if name not in b.dtypes:
                    return f"{b.library} has no {name} (declares {', '.join(b.dtypes)})"
        elif key in ("eager", "jit", "mutable"):
            have = (not b.lazy) if key == "eager" else getattr(b, key)
            if have is not want:
                return f"{b.library} declares {key}={have}; the test needs {key}={want}"
        else:
            raise pytest.UsageError(f"needs({key}=...): expected dtype, eager, jit or mutable")
    return None


@pytest.fixture(params=_backend_params())
def bk(request):
    """A backend adapter (tests/backends), one parameter per selected backend. Skips where the
    library is missing, or lacks what the test's ``@pytest.mark.needs(...)`` names."""
    b = request.param
    if not b.is_available():
        pytest.skip(f"backend {b.name}: {b.reason()}")
    marker = request.node.get_closest_marker("needs")
    why = _unmet(b, marker) if marker is not None else None
    if why is not None:
        pytest.skip(why)
    b.setup()
    return b


@pytest.fixture
def xp(bk):
    """The Array-API namespace of ``bk`` (the same parametrization and skips)."""
    return bk.xp


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
