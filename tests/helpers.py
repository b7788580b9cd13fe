"""Deprecated location: the shared test helpers live in tests/_helpers.py (this re-export
stays until test_apply.py and test_scaling.py import from there)."""

from _helpers import rope_numpy_formula, ulps

__all__ = ["rope_numpy_formula", "ulps"]
