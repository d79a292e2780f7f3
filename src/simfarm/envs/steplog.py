"""A ring buffer, on the device, with one row of per-env numbers per step.

The rollout writes its running episode statistics for every env as *one*
row per step with a single tensor copy, and reads an iteration's rows back
once, at the iteration's end. Rows are feature-major, ``(n_features,
n_envs)``: every feature is contiguous over envs, the way envs store their
state, so the copy is a plain memory copy.

Rows are addressed by *position*: position 0 is the batch right after
``reset()``; the step that brings the batch to position ``p`` writes row
``p % capacity``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["StepLog"]


class StepLog:
    """Ring of ``capacity`` rows of shape ``(n_features, n_envs)``.

    Args:
        n_envs: Batch size.
        n_features: Numbers per env per step.
        capacity: Rows kept (the longest look-back needed).
        device: Where the rows live.
        dtype: Float dtype of the rows (integers and flags are stored exactly).
    """

    def __init__(self, n_envs: int, n_features: int, capacity: int, device: torch.device, dtype: torch.dtype) -> None:
        self.n_envs, self.n_features, self.capacity = int(n_envs), int(n_features), int(capacity)
        self.rows = torch.zeros(self.capacity, self.n_features, self.n_envs, dtype=dtype, device=device)
        self.position = -1

    def write(self, columns: Sequence[torch.Tensor], position: int | None = None) -> None:
        """Write the next row (or the one at ``position``) from ``(k, n_envs)`` blocks.

        The blocks' heights must add up to ``n_features``; they are cast to
        the log's dtype. No host synchronisation.
        """
        self.position = self.position + 1 if position is None else int(position)
        torch.cat(tuple(columns), 0, out=self.rows[self.position % self.capacity])

    def read(self, first: int, last: int, features: slice = slice(None)) -> torch.Tensor:
        """``(last - first + 1, f, n_envs)``: the rows of positions ``first..last``.

        A view into the ring when the range does not wrap around, else a copy.

        Raises:
            ValueError: When some of those rows are gone (or not written yet).
        """
        if first < 0 or last > self.position or self.position - first >= self.capacity:
            raise ValueError(
                f"positions {first}..{last} are not in the step log "
                f"(it holds {max(0, self.position - self.capacity + 1)}..{self.position})"
            )
        start = first % self.capacity
        if start + (last - first) < self.capacity:
            return self.rows[start : start + last - first + 1, features]
        index = torch.arange(first, last + 1, device=self.rows.device) % self.capacity
        return self.rows[index, features]
