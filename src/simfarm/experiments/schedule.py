"""How many visitors each round gets, and how many rounds there are.

A schedule answers ``next_round_size(rounds_done)`` -- the size of round
``rounds_done`` (0-based), or ``None`` once the schedule is exhausted -- and
exposes ``n_rounds`` (``None`` for an open-ended schedule).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "ExplicitSchedule",
    "FixedSchedule",
    "GeometricSchedule",
    "Schedule",
    "schedule_from_json",
]


@runtime_checkable
class Schedule(Protocol):
    """The round-sizing protocol the loop uses."""

    @property
    def n_rounds(self) -> int | None: ...

    def next_round_size(self, rounds_done: int) -> int | None: ...


def _positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


def _optional_rounds(value: Any) -> int | None:
    return None if value is None else _positive_int(value, "n_rounds")


def _check_rounds_done(rounds_done: int) -> None:
    if isinstance(rounds_done, bool) or not isinstance(rounds_done, int) or rounds_done < 0:
        raise ValueError(f"rounds_done must be a non-negative integer, got {rounds_done!r}")


@dataclass(frozen=True)
class FixedSchedule:
    """The same number of visitors every round.

    Args:
        per_round: Visitors per round (positive).
        n_rounds: Number of rounds, or ``None`` for open-ended.

    Raises:
        ValueError: When a size or count is not a positive integer.
    """

    per_round: int
    n_rounds: int | None = None

    def __post_init__(self) -> None:
        _positive_int(self.per_round, "per_round")
        _optional_rounds(self.n_rounds)

    def next_round_size(self, rounds_done: int) -> int | None:
        """``per_round`` until ``n_rounds`` rounds are done, then ``None``."""
        _check_rounds_done(rounds_done)
        if self.n_rounds is not None and rounds_done >= self.n_rounds:
            return None
        return self.per_round

    def to_json(self) -> dict[str, Any]:
        """``{"kind": "fixed", "per_round": ..., "n_rounds": ...}``."""
        return {"kind": "fixed", "per_round": self.per_round, "n_rounds": self.n_rounds}


@dataclass(frozen=True)
class GeometricSchedule:
    """Round sizes growing by a constant factor: ``round(initial * growth**r)``.

    Args:
        initial: Size of round 0 (positive).
        growth: Factor between consecutive rounds (finite, > 0; below 1
            shrinks, never under one visitor).
        n_rounds: Number of rounds, or ``None`` for open-ended.

    Raises:
        ValueError: On a non-positive size, growth or count.
    """

    initial: int
    growth: float
    n_rounds: int | None = None

    def __post_init__(self) -> None:
        _positive_int(self.initial, "initial")
        if isinstance(self.growth, bool) or not isinstance(self.growth, int | float):
            raise ValueError(f"growth must be a number > 0, got {self.growth!r}")
        if not math.isfinite(self.growth) or self.growth <= 0:
            raise ValueError(f"growth must be a finite number > 0, got {self.growth!r}")
        _optional_rounds(self.n_rounds)

    def next_round_size(self, rounds_done: int) -> int | None:
        """``max(1, round(initial * growth**rounds_done))``, or ``None`` when done.

        Raises:
            ValueError: When the size overflows (growth too large for the round).
        """
        _check_rounds_done(rounds_done)
        if self.n_rounds is not None and rounds_done >= self.n_rounds:
            return None
        try:
            size = self.initial * float(self.growth) ** rounds_done
        except OverflowError:
            size = math.inf
        if not math.isfinite(size) or size > 1e12:
            raise ValueError(
                f"GeometricSchedule(initial={self.initial}, growth={self.growth}) asks for "
                f"{size:.3g} visitors in round {rounds_done}; lower growth or n_rounds"
            )
        return max(1, round(size))

    def to_json(self) -> dict[str, Any]:
        """``{"kind": "geometric", "initial": ..., "growth": ..., "n_rounds": ...}``."""
        return {"kind": "geometric", "initial": self.initial, "growth": float(self.growth), "n_rounds": self.n_rounds}


@dataclass(frozen=True)
class ExplicitSchedule:
    """One given size per round; as many rounds as sizes.

    Args:
        sizes: Visitors of each round (positive integers, at least one).

    Raises:
        ValueError: When *sizes* is empty or holds a non-positive entry.
    """

    sizes: tuple[int, ...]

    def __post_init__(self) -> None:
        if isinstance(self.sizes, str | bytes) or not isinstance(self.sizes, Sequence) or not self.sizes:
            raise ValueError(f"sizes must be a non-empty list of positive integers, got {self.sizes!r}")
        for i, size in enumerate(self.sizes):
            _positive_int(size, f"sizes[{i}]")
        object.__setattr__(self, "sizes", tuple(int(s) for s in self.sizes))

    @property
    def n_rounds(self) -> int:
        """``len(sizes)``."""
        return len(self.sizes)

    def next_round_size(self, rounds_done: int) -> int | None:
        """``sizes[rounds_done]``, or ``None`` past the end."""
        _check_rounds_done(rounds_done)
        return self.sizes[rounds_done] if rounds_done < len(self.sizes) else None

    def to_json(self) -> dict[str, Any]:
        """``{"kind": "explicit", "sizes": [...]}``."""
        return {"kind": "explicit", "sizes": list(self.sizes)}


def schedule_from_json(data: Mapping[str, Any]) -> FixedSchedule | GeometricSchedule | ExplicitSchedule:
    """Rebuild a schedule from its ``to_json()`` form.

    Raises:
        ValueError: On an unknown ``kind`` or invalid fields.
    """
    kind = data.get("kind")
    fields = {k: v for k, v in data.items() if k != "kind"}
    if kind == "fixed":
        return FixedSchedule(**fields)
    if kind == "geometric":
        return GeometricSchedule(**fields)
    if kind == "explicit":
        return ExplicitSchedule(tuple(fields.get("sizes", ())))
    raise ValueError(f"schedule kind must be one of 'fixed', 'geometric', 'explicit', got {kind!r}")
