"""Strict JSON bytes for artifacts: numpy values converted, NaN/inf as null.

Artifact JSON is read by browsers and other tools, whose parsers reject the
``NaN`` that :func:`json.dumps` writes by default.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from simfarm.records import json_safe

__all__ = ["json_bytes", "plain"]


def plain(value: Any) -> Any:
    """*value* with numpy scalars/arrays turned into Python numbers/lists,
    recursively; non-finite floats become None."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return plain(value.tolist())
    if isinstance(value, np.generic):
        return plain(value.item())
    return json_safe(value)


def json_bytes(value: Any) -> bytes:
    """Indented, key-sorted strict JSON of *value* plus a newline, UTF-8.

    Raises:
        TypeError: When *value* holds something JSON cannot represent.
    """
    return (json.dumps(plain(value), indent=2, sort_keys=True, allow_nan=False) + "\n").encode()
