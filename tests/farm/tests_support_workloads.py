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
