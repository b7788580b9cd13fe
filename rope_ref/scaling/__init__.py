"""Frequency schedules (context extension): one module per method.

Each class is a frozen dataclass accepted by ``Rope(scaling=...)``. The schedules work on
exact real numbers, so scaled rotations are exact to the last bit like unscaled ones.
"""

from ._base import Scaling
from ._linear import Linear

__all__ = ["Linear", "Scaling"]
