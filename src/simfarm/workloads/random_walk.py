"""``random-walk``: the farm's own test workload (pure numpy, deterministic).

Each step draws a Gaussian increment from ``step_rng(seed, step)`` and moves
a point in ``dims`` dimensions. ``step_seconds`` adds that much CPU work per
step (repeated small matrix products), so benchmarks and tests can give jobs
a realistic weight without changing their results.

Fault injection, for testing the farm:

- ``crash_at_step = k``: on the job's first attempt, the process running it
  kills itself with SIGKILL when it reaches step ``k`` (before the step's
  record exists). Restarted attempts pass through.
- ``raise_at_step = k``: step ``k`` raises ``RuntimeError`` every time.
"""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

import numpy as np

from simfarm.params import ParamReader
from simfarm.records import Record
from simfarm.seeding import step_rng
from simfarm.workloads import current_job

__all__ = ["RandomWalk", "build", "steps_for", "validate"]


def validate(params: dict[str, Any], where: str) -> dict[str, Any]:
    """Check random-walk params; return them with defaults filled in.

    Raises:
        SpecError: naming the key, its value and what is allowed.
    """
    r = ParamReader(params, where)
    out = {
        "steps": r.integer("steps", 10, minimum=1),
        "dims": r.integer("dims", 1, minimum=1, maximum=1024),
        "step_seconds": r.number("step_seconds", 0.0, minimum=0.0, maximum=3600.0),
        "crash_at_step": r.integer("crash_at_step", None, minimum=0, allow_none=True),
        "raise_at_step": r.integer("raise_at_step", None, minimum=0, allow_none=True),
    }
    r.finish()
    return out


def steps_for(params: dict[str, Any]) -> int:
    """Number of steps a job with *params* runs."""
    return int(params.get("steps", 10))


def busy_work(seconds: float) -> None:
    """Spend about *seconds* of CPU in numpy (matrix products), then return.

    The amount of work adapts to the clock, the result is discarded: it gives
    a step weight without touching the walk's random stream.
    """
    if seconds <= 0:
        return
    deadline = time.perf_counter() + seconds
    a = np.full((96, 96), 1.0 / 96)
    b = np.eye(96)
    while time.perf_counter() < deadline:
        b = a @ b


class RandomWalk:
    """Iterator of :class:`Record`; see the module docstring."""

    def __init__(self, params: dict[str, Any], seed: int) -> None:
        p = validate(dict(params), "random-walk")
        self.seed = int(seed)
        self.n_steps: int = p["steps"]
        self.dims: int = p["dims"]
        self.step_seconds: float = p["step_seconds"]
        self.crash_at_step: int | None = p["crash_at_step"]
        self.raise_at_step: int | None = p["raise_at_step"]
        self.step = 0
        self.position = np.zeros(self.dims)
        self.max_distance = 0.0

    def __iter__(self) -> RandomWalk:
        return self

    def __next__(self) -> Record:
        if self.step >= self.n_steps:
            raise StopIteration
        k = self.step
        if self.crash_at_step == k and current_job().attempt == 0:
            os.kill(os.getpid(), signal.SIGKILL)
        if self.raise_at_step == k:
            raise RuntimeError(f"random-walk: injected failure at step {k} (raise_at_step)")
        started = time.perf_counter()
        busy_work(self.step_seconds)
        increment = step_rng(self.seed, k).standard_normal(self.dims)
        position = self.position + increment
        distance = float(np.linalg.norm(position))
        max_distance = max(self.max_distance, distance)
        record = Record(
            step=k,
            metrics={
                "position": float(position[0]),
                "increment": float(increment[0]),
                "distance": distance,
                "max_distance": max_distance,
            },
            timings={"step_wall_s": time.perf_counter() - started},
        )
        # Commit the step's state only once everything above succeeded.
        self.position, self.max_distance, self.step = position, max_distance, k + 1
        return record

    def checkpoint(self) -> bytes:
        """JSON bytes: step, position, max distance (floats round-trip exactly)."""
        state = {
            "step": self.step,
            "position": [float(x) for x in self.position],
            "max_distance": self.max_distance,
        }
        return json.dumps(state).encode()

    def restore(self, state: bytes) -> None:
        """Continue after the step recorded in *state*.

        Raises:
            ValueError: When *state* does not match this walk's dimensions.
        """
        data = json.loads(state.decode())
        position = np.asarray(data["position"], dtype=float)
        if position.shape != (self.dims,):
            raise ValueError(
                f"random-walk checkpoint has {position.size} dims, this job has {self.dims}"
            )
        self.step = int(data["step"])
        self.position = position
        self.max_distance = float(data["max_distance"])


def build(params: dict[str, Any], seed: int) -> RandomWalk:
    """Build a random walk from its params (``steps``, ``dims``, ``step_seconds``, faults)."""
    return RandomWalk(params, seed)
