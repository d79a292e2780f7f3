"""Errors that reach users; the CLI turns :class:`SpecError` into one line and exit 2."""

from __future__ import annotations

__all__ = ["SpecError", "RunDirError"]


class SpecError(ValueError):
    """A run spec (or a workload's params) is invalid.

    The message names the key path, the bad value and what is allowed, e.g.
    ``experiments[1].rounds must be a positive integer, got -3``.
    """


class RunDirError(ValueError):
    """A path is not a readable simfarm run directory (or cannot be resumed)."""
