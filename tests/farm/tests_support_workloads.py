"""User-style workloads named by import path in the farm tests ("tests_support_workloads:...")."""

from __future__ import annotations

import json
from typing import Any

from simfarm.records import Record


class Counter:
    """Counts to ``inner.size``; metrics are deterministic in (seed, step)."""

    def __init__(self, params: dict[str, Any], seed: int) -> None:
        self.size = int(params.get("inner", {}).get("size", 3))
        self.seed = seed
        self.step = 0

    def __iter__(self) -> Counter:
        return self

    def __next__(self) -> Record:
        if self.step >= self.size:
            raise StopIteration
        record = Record(step=self.step, metrics={"value": (self.seed % 1000) + self.step})
        self.step += 1
        return record

    def checkpoint(self) -> bytes:
        return json.dumps({"step": self.step}).encode()

    def restore(self, state: bytes) -> None:
        self.step = int(json.loads(state)["step"])


def build_nested(params: dict[str, Any], seed: int) -> Counter:
    """A user workload with a nested params table."""
    return Counter(params, seed)


class BadSnapshots(Counter):
    """Rounds whose snapshots no renderer can draw: the evolution GIF must fail, the run must not."""

    def __next__(self) -> Record:
        record = super().__next__()
        record.snapshot = {"schema": "not-a-round", "cells_shipped": "nonsense"}
        return record


def build_bad_snapshots(params: dict[str, Any], seed: int) -> BadSnapshots:
    """Rounds with undrawable snapshots."""
    return BadSnapshots(params, seed)


build_bad_snapshots.table = "rounds"  # type: ignore[attr-defined]
