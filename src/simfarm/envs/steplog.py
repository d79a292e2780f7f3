"""A ring buffer, on the device, with one row of per-env numbers per step.

The rollout writes everything it keeps about a step -- running episode
statistics and, when traces are scheduled, each env's capture state, action
and reward -- as *one* row with a single tensor copy. Rows are feature-major,
``(n_features, n_envs)``: every feature is contiguous over envs, the way envs
store their state, so the copy is a plain memory copy.

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
        capacity: Rows kept (the longest look-back needed, plus one).
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

    def _index(self, first: int, last: int) -> torch.Tensor:
        if first < 0 or last > self.position or self.position - first >= self.capacity:
            raise ValueError(
                f"positions {first}..{last} are not in the step log "
                f"(it holds {max(0, self.position - self.capacity + 1)}..{self.position})"
            )
        return torch.arange(first, last + 1, device=self.rows.device) % self.capacity

    def read(self, first: int, last: int, features: slice = slice(None)) -> torch.Tensor:
        """``(last - first + 1, f, n_envs)``: the rows of positions ``first..last``.

        A view into the ring when the range does not wrap around, else a copy.

        Raises:
            ValueError: When some of those rows are gone (or not written yet).
        """
        index = self._index(first, last)
        start = first % self.capacity
        if start + (last - first) < self.capacity:
            return self.rows[start : start + last - first + 1, features]
        return self.rows[index, features]

    def read_env(self, env_id: int, first: int, last: int) -> torch.Tensor:
        """``(last - first + 1, n_features)``: one env's rows of positions ``first..last``.

        Raises:
            ValueError: As :meth:`read`.
        """
        return self.rows[self._index(first, last), :, env_id]

    def state_dict(self, keep: int, first_feature: int = 0) -> dict[str, torch.Tensor]:
        """The last ``keep`` rows in time order (on the CPU), plus the position.

        Args:
            keep: Rows to keep (at most what the log holds).
            first_feature: Leave out the features before this one (those a
                resumed run does not need).
        """
        keep = max(0, min(int(keep), self.position + 1, self.capacity))
        features = slice(int(first_feature), None)
        rows = self.read(self.position - keep + 1, self.position, features) if keep else self.rows[:0, features]
        return {"rows": rows.cpu(), "position": torch.tensor(self.position), "first_feature": torch.tensor(first_feature)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Put back what :meth:`state_dict` returned.

        Raises:
            ValueError: When the rows do not fit this log's shape.
        """
        rows, first = state["rows"], int(state["first_feature"])
        if rows.shape[1:] != self.rows[0, first:].shape or rows.shape[0] > self.capacity:
            raise ValueError(
                f"step log checkpoint has rows of shape {tuple(rows.shape)}, this log holds {tuple(self.rows.shape)}"
            )
        self.position = int(state["position"])
        keep = rows.shape[0]
        index = torch.arange(self.position - keep + 1, self.position + 1, device=self.rows.device) % self.capacity
        self.rows[index, first:] = rows.to(self.rows.device, self.rows.dtype)
