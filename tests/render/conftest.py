"""Fixtures of the render tests: synthetic inputs built here, never a simulation."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest

from simfarm.render.samples import sample_history, sample_iterations, sample_rounds, sample_trace


def as_objects(value: Any) -> Any:
    """A JSON snapshot turned into attribute objects (like ``snapshot_from_json``)."""
    if isinstance(value, dict):
        return SimpleNamespace(**{k: as_objects(v) for k, v in value.items()})
    if isinstance(value, list):
        return [as_objects(v) for v in value]
    return value


@pytest.fixture
def history() -> list[dict[str, Any]]:
    """Six rounds: round 0 without a tree, then trees of 2..5 leaves."""
    return sample_history(6, seed=3, max_leaves=5)


@pytest.fixture
def history_reloaded(history) -> list[dict[str, Any]]:
    """The same history after a JSON round trip (as read from snapshots/)."""
    return json.loads(json.dumps(history))


@pytest.fixture
def trace():
    return sample_trace(7, n_frames=20, height=48, width=64, fps=25.0)


@pytest.fixture
def iterations():
    return sample_iterations(n_jobs=3, n_iterations=25, n_configs=1)


@pytest.fixture
def rounds():
    return sample_rounds(n_jobs=6, n_rounds=5, n_configs=2)


@pytest.fixture
def to_objects():
    """:func:`as_objects`, for tests that need attribute-style snapshots."""
    return as_objects
