"""Conformance suite on public implementations (see conftest.py)."""
