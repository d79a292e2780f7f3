"""Scenarios: shapes, truth alignment, determinism, calibration of the base rate, effect patterns."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from simfarm.experiments import SCENARIOS, cold_start_plan, make_generator
from simfarm.experiments.contracts import propensity_columns
from simfarm.experiments.recommend import NextRoundPlan

COVARIATES = ["device_type", "channel", "is_returning", "session_recency", "browse_depth"]


def _arms(k: int) -> list[str]:
    return ["control", *[f"t{i}" for i in range(1, k)]]


def _run(scenario: str, k: int, n: int = 3000, seed: int = 3, round_idx: int = 0, **kw):
    treatments = _arms(k)
    gen = make_generator(scenario, treatments=treatments, seed=seed, **kw)
    plan = cold_start_plan(treatments, n_visitors=n)
    return gen(round_idx, plan)


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("k", [2, 3, 5])
def test_every_scenario_shapes_and_truth(scenario: str, k: int) -> None:
    data, truth = _run(scenario, k)
    assert data.treatments == _arms(k) and data.n_visitors == 3000
    frame = data.visitors()
    expected = {"visitor_id", "experiment_id", "variant", "converted", "revenue", "cell", *COVARIATES, *propensity_columns(k)}
    assert set(frame.columns) == expected
    assert set(frame["cell"].astype(str)) == {"control", "explore"}
    assert (frame["revenue"][~frame["converted"]] == 0).all() and (frame["revenue"][frame["converted"]] > 0).all()
    assert truth.n_visitors == 3000 and truth.arms == tuple(_arms(k))
    p, m = np.stack(truth.p_per_visitor, 1), np.stack(truth.m_per_visitor, 1)
    contrast = np.stack(truth.contrast_cate_per_visitor, 1)
    np.testing.assert_allclose(contrast, p[:, 1:] * m[:, 1:] - (p[:, :1] * m[:, :1]))
    assert truth.effect == pytest.approx(contrast[:, 0].mean())
    # Rows of each variant frame are that variant's visitors, in truth order.
    assert (frame["variant"].astype(str).to_numpy() == np.repeat(data.treatments, [v.n_visitors for v in data.variants])).all()


def test_rounds_are_deterministic_and_distinct() -> None:
    a, ta = _run("reversal", 2, round_idx=4)
    b, tb = _run("reversal", 2, round_idx=4)
    c, _ = _run("reversal", 2, round_idx=5)
    pd.testing.assert_frame_equal(a.visitors(), b.visitors())
    np.testing.assert_array_equal(ta.p_per_visitor[1], tb.p_per_visitor[1])
    assert not np.array_equal(a.visitors()["browse_depth"].to_numpy(), c.visitors()["browse_depth"].to_numpy())


def test_common_random_numbers_across_plans() -> None:
    """Two plans on the same seed see the same visitors (covariates do not depend on the plan)."""
    treatments = _arms(2)
    gen = make_generator("constant", treatments=treatments, seed=9)
    cold = gen(0, cold_start_plan(treatments, n_visitors=2000))[0].visitors().sort_values("visitor_id")
    from simfarm.experiments import BaselinePolicy, Cell

    all_control = NextRoundPlan(cells=(Cell("c", BaselinePolicy("control"), 1.0),), treatments=tuple(treatments), n_visitors=2000)
    other = gen(0, all_control)[0].visitors().sort_values("visitor_id")
    for column in COVARIATES:
        np.testing.assert_array_equal(cold[column].to_numpy(), other[column].to_numpy())


def test_baseline_rate_is_calibrated() -> None:
    for rate in (0.02, 0.05, 0.2):
        _, truth = _run("null", 2, n=60_000, baseline_rate=rate)
        assert truth.p_per_visitor[0].mean() == pytest.approx(rate, rel=0.03)


def test_propensities_follow_the_plan() -> None:
    data, _ = _run("constant", 3)
    frame = data.visitors()
    # Cold start: control cell 50% + uniform explore 50% over 3 arms.
    np.testing.assert_allclose(frame["propensity_1"], 0.5 / 3)
    np.testing.assert_allclose(frame["propensity_2"], 0.5 / 3)


def test_effect_patterns() -> None:
    _, null = _run("null", 3)
    assert all(np.all(c == 0) for c in null.contrast_cate_per_visitor)

    data, rev = _run("reversal", 2, n=5000)
    desktop = data.visitors()["device_type"].astype(str).to_numpy() == "desktop"
    assert (rev.contrast_cate_per_visitor[0][desktop] > 0).all() and (rev.contrast_cate_per_visitor[0][~desktop] < 0).all()

    data, sparse = _run("sparse_benefit", 2, n=20_000)
    benefit = sparse.contrast_cate_per_visitor[0] > 0
    assert 0.12 < benefit.mean() < 0.18
    assert (data.visitors()["channel"].astype(str).to_numpy()[benefit] == "email").all()

    data, clustered = _run("clustered", 2, n=20_000)
    frame = data.visitors()
    # Effects of opposite sign inside the same observed cell: the clusters are latent.
    cell = frame["device_type"].astype(str) + frame["channel"].astype(str)
    signs = pd.Series(np.sign(clustered.contrast_cate_per_visitor[0])).groupby(cell.to_numpy()).nunique()
    assert (signs >= 2).any()

    _, many = _run("many_arms", 5, n=5000)
    assert (many.contrast_cate_per_visitor[2] < 0).all()  # arm c is a clear loser
    assert (many.contrast_cate_per_visitor[0] > 0).all()  # arm a a small constant winner


def test_effect_scale_scales_the_logit_shift() -> None:
    logit = lambda p: np.log(p / (1 - p))  # noqa: E731
    _, one = _run("constant", 2, effect_scale=1.0)
    _, two = _run("constant", 2, effect_scale=2.0)
    _, zero = _run("constant", 2, effect_scale=0.0)
    shift1 = logit(one.p_per_visitor[1]) - logit(one.p_per_visitor[0])
    shift2 = logit(two.p_per_visitor[1]) - logit(two.p_per_visitor[0])
    np.testing.assert_allclose(shift2, 2 * shift1)
    assert np.all(zero.contrast_cate_per_visitor[0] == 0)


def test_conversion_rate_metric() -> None:
    data, truth = _run("constant", 2, metric="conversion_rate")
    assert data.metric == "conversion_rate"
    np.testing.assert_allclose(truth.contrast_cate_per_visitor[0], truth.p_per_visitor[1] - truth.p_per_visitor[0])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"scenario": "nope"}, "scenario must be one of"),
        ({"treatments": ["control"]}, "at least 2 distinct"),
        ({"baseline_rate": 1.5}, r"baseline_rate must be in \(0, 1\)"),
        ({"effect_scale": -1}, "effect_scale must be"),
        ({"colour": "red"}, "unknown keyword"),
    ],
)
def test_make_generator_errors(kwargs: dict, message: str) -> None:
    args = {"scenario": "null", "treatments": ["control", "a"], "seed": 0, **kwargs}
    scenario = args.pop("scenario")
    with pytest.raises(ValueError, match=message):
        make_generator(scenario, **args)


def test_plan_without_size_is_rejected() -> None:
    gen = make_generator("null", treatments=["control", "a"], seed=0)
    with pytest.raises(ValueError, match="n_visitors must be a positive integer"):
        gen(0, cold_start_plan(["control", "a"]))
