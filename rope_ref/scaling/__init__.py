"""Frequency schedules (context extension) and multi-axis schemes: one module per method.

Each class is a frozen dataclass accepted by ``Rope(scaling=...)``. The schedules work on
exact real numbers, so scaled rotations are exact to the last bit like unscaled ones. Where
implementations disagree, the default follows Hugging Face transformers and the other
behaviour is a named option (documented on each class).
"""

from ._base import Scaling
from ._dynamic import DynamicNTK
from ._linear import Linear
from ._llama3 import Llama3
from ._longrope import LongRoPE
from ._multiaxis import Axial, MRope
from ._ntk import NTK
from ._proportional import Proportional
from ._xpos import XPos
from ._yarn import YaRN

__all__ = [
    "NTK",
    "Axial",
    "DynamicNTK",
    "Linear",
    "Llama3",
    "LongRoPE",
    "MRope",
    "Proportional",
    "Scaling",
    "XPos",
    "YaRN",
]
