"""Where render outputs go inside a run directory, and which paths are allowed.

Outputs are ``report.html`` or ``artifacts/<folder>/<file>``: the folder is
a job id (reduced to safe characters) or ``sweep``. Paths are built only
from job ids, integers and fixed words, never from user strings as given,
and every output is checked before it reaches the writer.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

__all__ = ["REPORT", "SWEEP", "artifact_path", "check_output_path", "safe_component"]

#: The report's path.
REPORT = "report.html"
#: The artifacts folder of run-level outputs.
SWEEP = "sweep"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_SAFE_PART = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]*$")


def safe_component(text: str) -> str:
    """*text* reduced to ``[A-Za-z0-9._-]`` (others become ``_``), never
    starting with a dot, never empty: safe as one path component."""
    cleaned = _UNSAFE.sub("_", str(text)).lstrip(".")
    return cleaned or "_"


def artifact_path(job_id: str | None, file_name: str) -> str:
    """``artifacts/<safe job id>/<file_name>``, or ``artifacts/sweep/...`` for None."""
    folder = SWEEP if job_id is None else safe_component(job_id)
    return f"artifacts/{folder}/{file_name}"


def check_output_path(path: str) -> str:
    """Return *path* when it is ``report.html`` or a safe relative path
    under ``artifacts/``; raise otherwise.

    Raises:
        ValueError: For absolute paths, ``..``, empty or unsafe components.
    """
    if path == REPORT:
        return path
    parts = PurePosixPath(path).parts
    if (
        len(parts) < 3
        or parts[0] != "artifacts"
        or path.startswith("/")
        or "\\" in path
        or not all(_SAFE_PART.match(p) for p in parts)
    ):
        raise ValueError(
            f"render output path {path!r} is not allowed: outputs go to {REPORT!r} or "
            "'artifacts/<folder>/<file>' with letters, digits, '.', '_' and '-' only"
        )
    return path
