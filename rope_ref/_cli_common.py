"""What the ``rope-ref`` subcommands share: usage errors, one-line messages, the argument
parser without ``sys.exit``, output-path checks and reading a Hugging Face config."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_FAILURES, EXIT_USAGE, EXIT_INTERNAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
#: The largest config.json ``--hf-config`` reads.
MAX_CONFIG_BYTES = 16 << 20
#: The dtypes of the battery options' ``--dtype``, and the default.
DEFAULT_DTYPES = ("float32",)

# Array-API namespaces per library (compat wrappers where the library needs one), imported
# by name only when the command asks for them
NAMESPACES = {
    "numpy": "array_api_compat.numpy",
    "torch": "array_api_compat.torch",
    "jax": "jax.numpy",
    "cupy": "array_api_compat.cupy",
    "dask": "array_api_compat.dask.array",
    "strict": "array_api_strict",
}


class UsageError(Exception):
    """A usage error: printed as one line on stderr, exit code 2."""

    def __init__(self, message: str, *, formatted: bool = False) -> None:
        super().__init__(message)
        self.formatted = formatted


class ParserExit(Exception):
    """argparse asked to exit (``--help``): the code to return."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class Parser(argparse.ArgumentParser):
    """argparse without ``sys.exit`` and with one-line errors."""

    def error(self, message: str) -> Any:
        raise UsageError(f"{self.prog}: error: {message} (see {self.prog} --help)", formatted=True)

    def exit(self, status: int = 0, message: str | None = None) -> Any:
        if message:
            print(message.rstrip("\n"), file=sys.stderr)
        raise ParserExit(status)


def one_line(exc: BaseException) -> str:
    """``str(exc)`` on one line, at most 300 characters (never raises)."""
    try:
        text = " ".join(str(exc).split())
    except Exception:  # an exception whose __str__ raises
        return f"<{type(exc).__name__} that cannot be printed>"
    return text if len(text) <= 300 else text[:297] + "..."


def dtypes_of(args: argparse.Namespace) -> tuple[str, ...]:
    """The ``--dtype`` values (default float32)."""
    return tuple(args.dtype) if args.dtype else DEFAULT_DTYPES


def writable_file(option: str, path: str | None) -> None:
    """Usage error unless ``path`` (when given) can be written: not a directory, in an
    existing, writable directory."""
    if path is None:
        return
    p = Path(path)
    if p.is_dir():
        raise UsageError(f"{option} {path}: is a directory")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(f"{option} {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise UsageError(f"{option} {path}: not writable")


def load_config(path: str) -> dict[str, Any]:
    """The JSON object in ``path`` (``--hf-config``); usage errors for anything else."""
    p = Path(path)
    if not p.exists():
        raise UsageError(f"--hf-config {path}: no such file")
    if p.is_dir():
        raise UsageError(f"--hf-config {path}: is a directory, not a config.json")
    try:
        with p.open("rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"--hf-config {path}: cannot read it ({exc.strerror})") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise UsageError(f"--hf-config {path}: larger than {MAX_CONFIG_BYTES} bytes")
    try:
        config = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # nested too deep
        raise UsageError(f"--hf-config {path}: not valid JSON ({one_line(exc)})") from None
    if not isinstance(config, dict):
        raise UsageError(
            f"--hf-config {path}: must hold a JSON object, got {type(config).__name__}"
        )
    return config


def config_rope(config: dict[str, Any], where: str, layer_type: str | None) -> Any:
    """``Rope.from_hf_config(config)``; what it rejects is a usage error naming ``where``."""
    from ._errors import RopeError
    from ._rope import Rope

    try:
        return Rope.from_hf_config(config, layer_type=layer_type)
    except (RopeError, ValueError, TypeError) as exc:
        raise UsageError(f"{where}: {one_line(exc)}") from None


def reject_ignored_options(args: argparse.Namespace) -> None:
    """Options that would be ignored are usage errors: ``--layer-type`` picks a layer type of
    a config (needs --preset or --hf-config), ``--dtype`` and ``--no-presets`` shape the
    battery (a case named by --cases carries its dtype; --preset/--hf-config have no preset
    cases to leave out)."""
    model = args.preset or getattr(args, "hf_config", None)
    if args.layer_type is not None and not model:
        raise UsageError(
            f"--layer-type {args.layer_type}: give it with --preset or --hf-config (it picks "
            "a layer type of that config)"
        )
    if args.cases and args.dtype:
        raise UsageError("give --dtype or --cases, not both (a case's name carries its dtype)")
    if args.no_presets and (args.cases or model):
        raise UsageError(
            "--no-presets: only for the battery (not with --cases, --preset or --hf-config)"
        )


def check_preset(name: str) -> None:
    """Usage error (with the closest names) unless ``name`` is a preset."""
    import difflib

    from ._presets import presets

    if name not in presets():
        close = difflib.get_close_matches(name, presets(), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise UsageError(
            f'--preset {name!r} is not a preset{hint}; `python -c "import rope_ref; '
            'print(rope_ref.presets())"` lists them'
        )


def preset_head_dim(name: str) -> int:
    """The head size of preset ``name``'s cases."""
    from .testing._cases import _preset_dim

    return _preset_dim(name)


# ---------------------------------------------------------------------- position forms
def position_forms() -> tuple[str, ...]:
    """Every position form a case can have (``rope_ref.testing._cases``), the far ones
    (near 2**24 and 2**31) included, in the battery's order."""
    from .testing import _cases

    return tuple(_cases.POSITION_FORMS) + tuple(getattr(_cases, "FAR_POSITION_FORMS", ()))


def far_forms() -> tuple[str, ...]:
    """The forms ``cases()`` includes only with ``far_positions=True``."""
    from .testing import _cases

    return tuple(getattr(_cases, "FAR_POSITION_FORMS", ()))


def selected_forms(args: argparse.Namespace, default: tuple[str, ...]) -> tuple[str, ...]:
    """The ``--positions`` forms in the battery's order (``default`` without it); with
    ``--cases`` it is a usage error (a case's name carries its form)."""
    given = getattr(args, "positions", None)
    if not given:
        return default
    if getattr(args, "cases", None):
        raise UsageError(
            "give --positions or --cases, not both (a case's name carries its position form)"
        )
    return tuple(f for f in position_forms() if f in given)


def battery_cases(args: argparse.Namespace, forms: tuple[str, ...]) -> list[Any]:
    """The battery in the ``--dtype`` dtypes (the presets' cases unless ``--no-presets``)
    with positions of ``forms``; a form the battery has no case of gets the base case's two
    (bshd and packed thd) per dtype."""
    from .testing._cases import Case, cases

    dtypes = dtypes_of(args)
    far = any(f in far_forms() for f in forms)
    extra: dict[str, Any] = {"far_positions": True} if far else {}
    battery = cases(dtypes=dtypes, presets=not args.no_presets, **extra)
    kept = [c for c in battery if c.positions in forms]
    for form in forms:
        if not any(c.positions == form for c in kept):
            kept += [
                Case(family=f, positions=form, dtype=dt) for dt in dtypes for f in ("bshd", "thd")
            ]
    return kept
