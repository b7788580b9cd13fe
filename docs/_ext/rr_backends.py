"""Placeholder: the backend support table directive (filled in by the backends page work)."""

from typing import Any


def setup(app: Any) -> dict[str, Any]:
    return {"version": "0", "parallel_read_safe": True, "parallel_write_safe": True}
