"""Floats in snapshot JSON: non-finite values travel as null and come back as NaN."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["from_json_number", "to_json_number"]


def to_json_number(x: float) -> float | None:
    """*x* as a float, or None when it is NaN or infinite (strict JSON has neither)."""
    x = float(x)
    return x if math.isfinite(x) else None


def from_json_number(x: Any) -> float:
    """Inverse of :func:`to_json_number`: None becomes NaN."""
    return math.nan if x is None else float(x)
