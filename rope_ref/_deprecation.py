"""Old spellings kept working, with a :class:`DeprecationWarning`."""

from __future__ import annotations

import functools
import inspect
import warnings
from collections.abc import Callable
from typing import Any, TypeVar, cast

from ._errors import RopeTypeError

__all__ = ["positional_keywords", "renamed_keywords"]

F = TypeVar("F", bound=Callable[..., Any])

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def positional_keywords(*names: str) -> Callable[[F], F]:
    """Let the keyword-only parameters ``names`` still be passed positionally, in that order
    after the function's positional parameters, as they were before they became keyword-only;
    each such call warns (:class:`DeprecationWarning`) and runs as if passed by keyword.

    The decorated function keeps its own (keyword-only) signature for ``inspect`` and the docs.
    """

    def decorate(fn: F) -> F:
        params = inspect.signature(fn).parameters
        for name in names:
            if name not in params or params[name].kind is not inspect.Parameter.KEYWORD_ONLY:
                raise TypeError(f"{fn.__qualname__} has no keyword-only parameter {name!r}")
        n_pos = sum(1 for p in params.values() if p.kind in _POSITIONAL)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if len(args) > n_pos:
                extra = args[n_pos:]
                if len(extra) > len(names):
                    raise RopeTypeError(
                        f"{fn.__name__}() takes at most {n_pos} positional arguments, got "
                        f"{len(args)}"
                    )
                moved = names[: len(extra)]
                for name, value in zip(moved, extra, strict=True):
                    if name in kwargs:
                        raise RopeTypeError(
                            f"{fn.__name__}() got multiple values for argument {name!r}"
                        )
                    kwargs[name] = value
                spelled = ", ".join(f"{name}=..." for name in moved)
                warnings.warn(
                    f"passing {', '.join(moved)} to {fn.__name__}() positionally is deprecated; "
                    f"pass it by keyword ({spelled})",
                    DeprecationWarning,
                    stacklevel=2,
                )
                args = args[:n_pos]
            return fn(*args, **kwargs)

        return cast(F, wrapper)

    return decorate


def renamed_keywords(**old_to_new: str) -> Callable[[F], F]:
    """Let the old keyword spellings ``old_to_new`` (old name -> new name) still be passed;
    each such call warns (:class:`DeprecationWarning`) and runs as if the new name were used.

    Passing both spellings is a TypeError, as passing one argument twice is. The decorated
    function keeps its own signature (the new names) for ``inspect`` and the docs.
    """

    def decorate(fn: F) -> F:
        params = inspect.signature(fn).parameters
        for old, new in old_to_new.items():
            if new not in params or old in params:
                raise TypeError(f"{fn.__qualname__}: cannot rename {old!r} to {new!r}")

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            for old, new in old_to_new.items():
                if old not in kwargs:
                    continue
                bound = inspect.signature(fn).bind_partial(*args)
                if new in kwargs or new in bound.arguments:
                    raise RopeTypeError(
                        f"{fn.__name__}() got {old}= (the old spelling) and {new}= both"
                    )
                kwargs[new] = kwargs.pop(old)
                warnings.warn(
                    f"{fn.__name__}({old}=...) is deprecated; pass {new}=... instead",
                    DeprecationWarning,
                    stacklevel=2,
                )
            return fn(*args, **kwargs)

        return cast(F, wrapper)

    return decorate
