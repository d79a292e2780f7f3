"""Data contracts: VariantData, ObservedExperimentData, CalibrationTruth, schedules."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from simfarm.experiments import (
    CalibrationTruth,
    ExplicitSchedule,
    FixedSchedule,
    GeometricSchedule,
    ObservedExperimentData,
    VariantData,
    propensity_columns,
    schedule_from_json,
)
from simfarm.experiments.contracts import is_reserved_column


def _frame(n: int, converted_every: int = 3) -> pd.DataFrame:
    converted = np.arange(n) % converted_every == 0
    return pd.DataFrame({"converted": converted, "revenue": np.where(converted, 10.0, 0.0), "cell": "control"})


def test_variant_from_visitors_derives_counts() -> None:
    v = VariantData.from_visitors("control", _frame(9))
    assert (v.n_visitors, v.n_conversions, v.total_revenue) == (9, 3, 30.0)


def test_variant_rejects_mismatched_count() -> None:
    with pytest.raises(ValueError, match="n_visitors is 5 but the visitors frame has 9 rows"):
        VariantData("a", _frame(9), 5, 3, 30.0)


def test_observed_data_checks_metric_and_names() -> None:
    v = VariantData.from_visitors("control", _frame(3))
    with pytest.raises(ValueError, match="metric must be one of"):
        ObservedExperimentData("e", "clicks", [v])
    with pytest.raises(ValueError, match="unique"):
        ObservedExperimentData("e", "conversion_rate", [v, v])
    data = ObservedExperimentData("e", "conversion_rate", [v, VariantData.from_visitors("a", _frame(4))])
    assert data.treatments == ["control", "a"] and data.n_visitors == 7 and len(data.visitors()) == 7


def test_propensity_columns_follow_arm_count() -> None:
    assert propensity_columns(2) == ["propensity"]
    assert propensity_columns(4) == ["propensity_1", "propensity_2", "propensity_3"]
    assert is_reserved_column("propensity_3") and is_reserved_column("cell") and not is_reserved_column("device")


def test_truth_shapes_and_value() -> None:
    p = [np.array([0.1, 0.2]), np.array([0.2, 0.2])]
    m = [np.array([10.0, 10.0]), np.array([20.0, 10.0])]
    truth = CalibrationTruth(effect=1.5, p_per_visitor=p, m_per_visitor=m, contrast_cate_per_visitor=[np.array([3.0, 0.0])])
    np.testing.assert_allclose(truth.value_per_visitor(), [[1.0, 4.0], [2.0, 2.0]])
    assert truth.n_visitors == 2
    with pytest.raises(ValueError, match="one contrast array per non-control arm"):
        CalibrationTruth(effect=0, p_per_visitor=p, m_per_visitor=m, contrast_cate_per_visitor=[])
    with pytest.raises(ValueError, match="differ in length"):
        CalibrationTruth(effect=0, p_per_visitor=[np.zeros(2), np.zeros(3)], m_per_visitor=m, contrast_cate_per_visitor=[np.zeros(2)])


def test_schedules() -> None:
    fixed = FixedSchedule(100, 3)
    assert [fixed.next_round_size(r) for r in range(4)] == [100, 100, 100, None]
    assert FixedSchedule(5).next_round_size(10_000) == 5 and FixedSchedule(5).n_rounds is None
    geo = GeometricSchedule(1000, 1.5, 3)
    assert [geo.next_round_size(r) for r in range(4)] == [1000, 1500, 2250, None]
    explicit = ExplicitSchedule((10, 20))
    assert explicit.n_rounds == 2 and [explicit.next_round_size(r) for r in range(3)] == [10, 20, None]
    for schedule in (fixed, geo, explicit):
        assert schedule_from_json(schedule.to_json()) == schedule


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: FixedSchedule(0, 3), "per_round must be a positive integer, got 0"),
        (lambda: FixedSchedule(10, -1), "n_rounds must be a positive integer, got -1"),
        (lambda: GeometricSchedule(10, 0.0, 2), "growth must be a finite number > 0"),
        (lambda: ExplicitSchedule(()), "sizes must be a non-empty list"),
        (lambda: ExplicitSchedule((5, 0)), r"sizes\[1\] must be a positive integer, got 0"),
        (lambda: schedule_from_json({"kind": "weekly"}), "schedule kind must be one of"),
    ],
)
def test_schedule_errors(make, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()


def test_geometric_overflow_is_reported() -> None:
    with pytest.raises(ValueError, match="lower growth or n_rounds"):
        GeometricSchedule(10, 100.0).next_round_size(20)
