"""Fixtures for the experiments tests: small, fast experiments and a generator wrapper."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from simfarm.experiments import FixedSchedule, make_generator, sequential_experiment

#: Loop options that keep unit tests fast (the acceptance studies use defaults).
FAST = {"n_draws": 200, "n_bootstrap": 4}


@pytest.fixture
def small_experiment() -> Callable[..., Any]:
    """Build a small experiment: ``small_experiment(scenario, k=2, per_round=1500, rounds=3, **loop_kw)``
    (``rounds=None``: an open-ended schedule)."""

    def build(
        scenario: str = "constant", k: int = 2, per_round: int = 1500, rounds: int | None = 3, seed: int = 0, **kw: Any
    ):
        treatments = ["control", *[f"t{i}" for i in range(1, k)]]
        generator = kw.pop("generator", None) or make_generator(scenario, treatments=treatments, seed=seed)
        options = {**FAST, **kw}
        return sequential_experiment(
            generator=generator,
            schedule=FixedSchedule(per_round, rounds),
            treatments=treatments,
            seed=seed,
            **options,
        )

    return build
