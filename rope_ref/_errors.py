"""Exception types raised by rope_ref on bad input.

Every error raised on bad input is a subclass of :class:`RopeError` and of the built-in
``ValueError`` or ``TypeError``, so callers can catch either family. Messages name the
argument, what was given and what was expected.
"""

from __future__ import annotations

__all__ = ["RopeError", "RopeTypeError", "RopeValueError"]


class RopeError(Exception):
    """Base class of every error rope_ref raises on bad input."""


class RopeValueError(RopeError, ValueError):
    """An argument has the right type but an invalid value or shape."""


class RopeTypeError(RopeError, TypeError):
    """An argument has the wrong type (or dtype, namespace or device)."""
