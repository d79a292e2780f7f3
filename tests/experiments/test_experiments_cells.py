"""Cells, policies, weight validation and vectorised assignment (with property tests)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chisquare

from simfarm.experiments import (
    BaselinePolicy,
    Cell,
    LeafNode,
    PolicyTree,
    Segment,
    SplitNode,
    TreePolicy,
    UniformPolicy,
    assign_visitors,
    cell_from_json,
    thompson_weights,
    validate_cell_weights,
)

ARMS = ["control", "a", "b"]


def _cells(weights: list[float]) -> list[Cell]:
    return [Cell(f"c{i}", UniformPolicy(tuple(ARMS)), w) for i, w in enumerate(weights)]


@given(st.lists(st.floats(min_value=0.0, max_value=1.0, allow_nan=False), min_size=1, max_size=6))
def test_weight_validation_accepts_exactly_sums_of_one(weights: list[float]) -> None:
    sums_to_one = abs(math.fsum(weights) - 1.0) <= 1e-9
    if sums_to_one:
        validate_cell_weights(_cells(weights))
    else:
        with pytest.raises(ValueError, match="cell weights must sum to 1"):
            validate_cell_weights(_cells(weights))


@given(st.lists(st.floats(min_value=0.01, max_value=100.0), min_size=1, max_size=6))
def test_normalised_weights_always_validate(raw: list[float]) -> None:
    total = math.fsum(raw)
    validate_cell_weights(_cells([w / total for w in raw]))


@pytest.mark.parametrize(
    "weights, message",
    [([], "at least one cell"), ([0.5, float("nan")], "finite number in"), ([1.5, -0.5], "finite number in")],
)
def test_weight_validation_messages(weights: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_cell_weights(_cells(weights))


def test_duplicate_cell_ids_are_rejected() -> None:
    cells = [Cell("x", BaselinePolicy("control"), 0.5), Cell("x", BaselinePolicy("a"), 0.5)]
    with pytest.raises(ValueError, match="distinct"):
        validate_cell_weights(cells)


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.floats(min_value=0.05, max_value=1.0), min_size=2, max_size=4),
    st.integers(min_value=0, max_value=2**32 - 1),
)
def test_assignment_proportions_match_weights(raw: list[float], seed: int) -> None:
    total = math.fsum(raw)
    weights = [w / total for w in raw]
    cells = [Cell(f"c{i}", UniformPolicy(tuple(ARMS)), w) for i, w in enumerate(weights)]
    n = 20_000
    rng = np.random.default_rng(seed)
    result = assign_visitors(cells, {}, ARMS, rng.random(n), rng.random(n))
    observed = np.bincount(result.cell, minlength=len(cells))
    assert chisquare(observed, np.array(weights) * n).pvalue > 1e-4
    arms = np.bincount(result.arm, minlength=3)
    assert chisquare(arms, np.full(3, n / 3)).pvalue > 1e-4
    np.testing.assert_allclose(result.propensity, 1 / 3)


def test_baseline_and_uniform_policies_assign_only_their_arms() -> None:
    cells = [Cell("control", BaselinePolicy("control"), 0.5), Cell("explore", UniformPolicy(("a", "b")), 0.5)]
    rng = np.random.default_rng(1)
    res = assign_visitors(cells, {}, ARMS, rng.random(4000), rng.random(4000))
    assert set(res.arm[res.cell == 0]) == {0}
    assert set(res.arm[res.cell == 1]) == {1, 2}
    np.testing.assert_allclose(res.propensity[0], [0.5, 0.25, 0.25])


def _tree() -> PolicyTree:
    leaves = tuple(
        Segment(i, rule, 0.5, {}, "control", {}, {}, 1.0) for i, rule in enumerate(["device in {mobile}", "other"])
    )
    root = SplitNode("device", ("mobile",), None, LeafNode(0), LeafNode(1))
    return PolicyTree(max_depth=1, root=root, leaves=leaves)


def test_tree_policy_assigns_per_leaf() -> None:
    tree = _tree()
    policy = TreePolicy({0: {"control": 0.1, "a": 0.9}, 1: {"control": 0.8, "b": 0.2}}, tree)
    n = 30_000
    device = np.where(np.arange(n) % 3 == 0, "mobile", "desktop")
    rng = np.random.default_rng(2)
    res = assign_visitors([Cell("optimized", policy, 1.0)], {"device": device}, ARMS, rng.random(n), rng.random(n))
    mobile = device == "mobile"
    share_a = np.mean(res.arm[mobile] == 1)
    share_b = np.mean(res.arm[~mobile] == 2)
    assert abs(share_a - 0.9) < 0.02 and abs(share_b - 0.2) < 0.02
    assert not np.any(res.arm[mobile] == 2) and not np.any(res.arm[~mobile] == 1)
    np.testing.assert_allclose(res.propensity[mobile][0], [0.1, 0.9, 0.0])


def test_tree_policy_validation() -> None:
    with pytest.raises(ValueError, match="must sum to 1"):
        TreePolicy({0: {"control": 0.5}}, None)
    with pytest.raises(ValueError, match="no probabilities for tree leaves"):
        TreePolicy({0: {"control": 1.0}}, _tree())
    with pytest.raises(ValueError, match="cannot assign"):
        TreePolicy({0: {"control": 1.0}}).arm_probabilities({}, ARMS, 3)


def test_unknown_arm_is_an_error() -> None:
    with pytest.raises(ValueError, match="not among the arms"):
        assign_visitors([Cell("x", BaselinePolicy("zzz"), 1.0)], {}, ARMS, np.zeros(2), np.zeros(2))


def test_cells_round_trip_json() -> None:
    tree = _tree()
    cells = [
        Cell("control", BaselinePolicy("control"), 0.05),
        Cell("explore", UniformPolicy(("control", "a")), 0.05),
        Cell("optimized", TreePolicy({0: {"control": 0.2, "a": 0.8}, 1: {"control": 1.0}}, tree), 0.9),
    ]
    back = [cell_from_json(c.to_json(), tree) for c in cells]
    assert [c.to_json() for c in back] == [c.to_json() for c in cells]
    assert back[2].policy.tree is tree
    assert cells[2].to_json()["policy"] == {"kind": "tree", "leaf_probs": {"0": {"control": 0.2, "a": 0.8}, "1": {"control": 1.0}}}


@given(st.dictionaries(st.sampled_from(ARMS), st.floats(min_value=0.0, max_value=1.0), min_size=1), st.floats(0.0, 0.3))
def test_thompson_weights_floor_and_sum(p_best: dict[str, float], floor: float) -> None:
    floor = min(floor, 1.0 / len(p_best))
    weights = thompson_weights(p_best, floor)
    assert abs(sum(weights.values()) - 1.0) < 1e-9
    assert all(w >= floor - 1e-12 for w in weights.values())
