"""Old spellings kept working, with a :class:`DeprecationWarning`."""

from __future__ import annotations

import functools
import inspect
import warnings
from collections.abc import Callable
from typing import Any, TypeVar, cast

__all__ = ["positional_keywords"]

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
                    raise TypeError(
                        f"{fn.__name__}() takes at most {n_pos} positional arguments, got "
                        f"{len(args)}"
                    )
                moved = names[: len(extra)]
                for name, value in zip(moved, extra, strict=True):
                    if name in kwargs:
                        raise TypeError(
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
