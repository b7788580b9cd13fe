"""Adversarial tests (issue #13); a package so that module names do not clash with tests/."""
