"""rope_ref.testing: what other projects import in their tests.

``assert_close`` compares any Array-API arrays with tolerances from an error model of the
dtype under test and explains failures (worst element, position and rotary pair, ulps,
errors by position range, and which common RoPE mistake explains the data).
"""

from ._assert import assert_close, default_tolerance, to_numpy, unit_roundoff

__all__ = ["assert_close", "default_tolerance", "to_numpy", "unit_roundoff"]
