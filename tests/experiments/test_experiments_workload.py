"""The ``experiment`` workload: params validation, Records, checkpoint/restore, registry."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from simfarm.errors import SpecError
from simfarm.experiments.workload import build, steps_for, validate
from simfarm.records import check_metrics
from simfarm.workloads import get

FAST = {"n_draws": 200, "n_bootstrap": 4, "visitors_per_round": 1500}


def test_minimal_params_get_defaults() -> None:
    p = validate({"scenario": "constant"}, "experiments[0]")
    assert p["treatments"] == ["control", "treatment"] and p["rounds"] == 5 and p["visitors_per_round"] == 4000
    assert p["graduation_rule"] == {"max_relative_loss": 0.001, "min_prob_beats_control": 0.99, "min_stability": 0.8, "sustained_rounds": 2}
    assert "cells" not in p and "schedule" not in p
    assert validate(p, "experiments[0]") == p  # idempotent
    assert validate({"scenario": "many_arms"}, "x")["treatments"] == ["control", "a", "b", "c", "d"]
    assert steps_for({"scenario": "null", "rounds": 7}) == 7


@pytest.mark.parametrize(
    "params, message",
    [
        ({}, r"experiments\[1\]\.scenario is required but missing"),
        ({"scenario": "revrsal"}, "did you mean 'reversal'"),
        ({"scenario": "null", "rounds": -3}, r"experiments\[1\]\.rounds must be a positive integer, got -3"),
        ({"scenario": "null", "round": 3}, r"unknown key 'round'; did you mean 'rounds'\?"),
        ({"scenario": "null", "treatments": ["control"]}, "treatments must be a list of at least 2"),
        ({"scenario": "null", "baseline_rate": 1.2}, r"baseline_rate must be a finite number > 0.0 and < 1.0, got 1.2"),
        ({"scenario": "null", "min_control_weight": 0.5, "min_explore_weight": 0.5}, "must be below 1"),
        ({"scenario": "null", "rounds": 3, "schedule": {"kind": "fixed", "per_round": 10, "n_rounds": 2}}, "not both"),
        ({"scenario": "null", "schedule": {"kind": "weekly"}}, r"schedule\.kind must be one of"),
        ({"scenario": "null", "schedule": {"kind": "explicit", "sizes": [10, 0]}}, r"schedule\.sizes must be a positive integer, got 0"),
        ({"scenario": "null", "schedule": {"kind": "geometric", "initial": 10, "growth": 1e3, "n_rounds": 9}}, "lower growth"),
        ({"scenario": "null", "graduation_rule": {"sustained": 2}}, "did you mean 'sustained_rounds'"),
        ({"scenario": "null", "thompson_floor": 0.6}, "thompson_floor must be a finite number >= 0.0 and <= 0.5"),
        ({"scenario": "null", "cells": [{"id": "c", "weight": 0.5, "policy": {"kind": "baseline", "arm": "control"}}]}, "must sum to 1"),
        ({"scenario": "null", "cells": [{"id": "c", "weight": 1.0, "policy": {"kind": "baseline", "arm": "zz"}}]}, r"cells\[0\]\.policy\.arm must be one of"),
    ],
)
def test_validation_errors_name_key_value_and_fix(params: dict, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        validate(params, "experiments[1]")


def test_schedule_table_and_cells_are_used() -> None:
    params = {
        "scenario": "null",
        "schedule": {"kind": "explicit", "sizes": [800, 1200]},
        "cells": [
            {"id": "control", "weight": 0.25, "policy": {"kind": "baseline", "arm": "control"}},
            {"id": "rest", "weight": 0.75, "policy": {"kind": "uniform", "arms": ["control", "treatment"]}},
        ],
        "n_draws": 100,
        "n_bootstrap": 0,
    }
    assert steps_for(params) == 2
    records = list(build(params, seed=3))
    assert [r.metrics["visitors"] for r in records] == [800, 1200]
    assert [c["id"] for c in records[0].snapshot["cells_shipped"]] == ["control", "rest"]


def test_records_are_flat_rows_with_stable_columns() -> None:
    wl = get("experiment").build({"scenario": "constant", "treatments": ["control", "a", "b"], "rounds": 3, **FAST}, 11)
    assert wl.n_steps == 3
    records = list(wl)
    assert [r.step for r in records] == [0, 1, 2]
    keys = set(records[0].metrics)
    for r in records:
        assert set(r.metrics) == keys
        check_metrics(r.metrics, where="test")
        json.dumps(r.snapshot, allow_nan=False)
        assert r.timings["round_wall_s"] > 0
    m = records[-1].metrics
    for key in ("cate_rmse", "policy_accuracy", "oracle_gap_rpv", "assignment_regret_rpv", "coverage_80", "coverage_95",
                "decision_a", "lift_b", "p_positive_a", "arms_active", "n_segments", "graduated", "cumulative_visitors"):
        assert key in m
    assert m["cumulative_visitors"] == 4500 and m["decision_a"] in ("SHIP", "STOP", "CONTINUE")


def test_checkpoint_restore_is_bit_identical() -> None:
    params = {"scenario": "reversal", "treatments": ["control", "a", "b"], "rounds": 5, **FAST}
    straight = list(build(params, seed=21))

    first = build(params, seed=21)
    head = [next(first), next(first)]
    blob = first.checkpoint()
    with np.load(io.BytesIO(blob), allow_pickle=False) as npz:  # no pickled objects inside
        assert "state" in npz.files and "arm" in npz.files
    resumed = build(params, seed=21)
    resumed.restore(blob)
    tail = list(resumed)
    assert len(tail) == 3
    for a, b in zip(straight, head + tail, strict=True):
        assert a.step == b.step
        assert a.metrics == b.metrics
        assert a.snapshot == b.snapshot
    assert [e.round_idx for e in resumed.experiment.history] == [0, 1, 2, 3, 4]


def test_restore_rejects_foreign_checkpoints() -> None:
    params = {"scenario": "null", "rounds": 2, **FAST}
    wl = build(params, seed=1)
    next(wl)
    with pytest.raises(ValueError, match="seed 1"):
        build(params, seed=2).restore(wl.checkpoint())
    with pytest.raises(ValueError, match="not an experiment checkpoint"):
        build(params, seed=1).restore(b"garbage")


def test_stop_on_graduation_ends_the_job_early() -> None:
    params = {"scenario": "constant", "rounds": 8, "effect_scale": 3.0, "stop_on_graduation": True,
              "graduation_rule": {"min_stability": 0.0}, **FAST}
    records = list(build(params, seed=0))
    assert records[-1].metrics["graduated"] and len(records) < 8


def test_experiments_package_never_imports_ray() -> None:
    code = "import sys, simfarm.experiments, simfarm.experiments.workload; sys.exit('ray' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
    package = Path(__file__).resolve().parents[2] / "src" / "simfarm" / "experiments"
    for path in package.glob("*.py"):
        assert "import ray" not in path.read_text() and "from ray" not in path.read_text(), path
