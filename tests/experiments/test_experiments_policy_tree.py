"""Policy tree: optimality of the search, constraints, routing, segments, JSON."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simfarm.experiments import PolicyTree, cold_start_plan, fit_hurdle_posterior, fit_policy_tree, make_generator, stratify
from simfarm.experiments.policy_tree import _candidate_splits, _stratum_leaves, search_policy_tree


def _grid_strata(levels: tuple[int, int], repeat: int = 1):
    a, b = np.meshgrid(np.arange(levels[0]), np.arange(levels[1]), indexing="ij")
    codes_a = np.repeat(a.ravel(), repeat)
    codes_b = np.repeat(b.ravel(), repeat)
    cats_a = tuple(f"a{i}" for i in range(levels[0]))
    cats_b = tuple(f"b{i}" for i in range(levels[1]))
    return stratify({"fa": (codes_a, cats_a), "fb": (codes_b, cats_b)}, {}, n_bins=2)


def _tree_value(structure: tuple, member: np.ndarray, value: np.ndarray, weight: np.ndarray) -> float:
    leaf_of, arms = _stratum_leaves(structure, member, len(weight))
    return float(sum((weight * value[:, arm])[leaf_of == i].sum() for i, arm in enumerate(arms)))


def _brute_force(value: np.ndarray, weight: np.ndarray, member: np.ndarray, min_w: float) -> float:
    """Best value over all trees of depth <= 2 built from the candidate splits."""

    def leaf(mask: np.ndarray) -> float:
        return float((weight[mask, None] * value[mask]).sum(0).max())

    def depth1(mask: np.ndarray) -> float:
        best = leaf(mask)
        for m in member > 0:
            left, right = mask & m, mask & ~m
            if weight[left].sum() >= min_w and weight[right].sum() >= min_w:
                best = max(best, leaf(left) + leaf(right))
        return best

    everyone = np.ones(len(weight), bool)
    best = leaf(everyone)
    for m in member > 0:
        if weight[m].sum() >= min_w and weight[~m].sum() >= min_w:
            best = max(best, depth1(m) + depth1(~m))
    return best


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31 - 1), st.sampled_from([0.0, 0.1, 0.2]))
def test_search_finds_the_exhaustive_optimum(seed: int, share: float) -> None:
    strata = _grid_strata((3, 4))
    rng = np.random.default_rng(seed)
    value = rng.normal(size=(strata.n_strata, 3))
    weight = rng.integers(1, 20, strata.n_strata).astype(float)
    structure, _, member = search_policy_tree(value, weight, strata, max_depth=2, min_segment_share=share)
    found = _tree_value(structure, member, value, weight)
    optimum = _brute_force(value, weight, member, max(share * weight.sum(), 1e-12))
    assert found == pytest.approx(optimum, rel=1e-9)


def test_xor_needs_depth_two() -> None:
    strata = _grid_strata((2, 2), repeat=1)
    fa, fb = strata.levels[:, 0], strata.levels[:, 1]
    value = np.stack([np.zeros(4), np.where(fa ^ fb, 1.0, -1.0)], axis=1)
    weight = np.ones(4)
    shallow, _, m1 = search_policy_tree(value, weight, strata, max_depth=1, min_segment_share=0.0)
    deep, _, m2 = search_policy_tree(value, weight, strata, max_depth=2, min_segment_share=0.0)
    assert shallow[0] == "leaf"  # no single split helps: both halves tie
    assert _tree_value(deep, m2, value, weight) == pytest.approx(2.0)


def test_min_share_is_respected_and_dominant_arm_gives_one_leaf() -> None:
    strata = _grid_strata((4, 4), repeat=3)
    rng = np.random.default_rng(1)
    value = rng.normal(size=(strata.n_strata, 2))
    weight = strata.counts.astype(float)
    structure, _, member = search_policy_tree(value, weight, strata, max_depth=3, min_segment_share=0.2)
    leaf_of, _ = _stratum_leaves(structure, member, strata.n_strata)
    assert (np.bincount(leaf_of, weights=weight) >= 0.2 * weight.sum() - 1e-9).all()
    dominant = np.stack([np.zeros(strata.n_strata), np.ones(strata.n_strata)], axis=1)
    single, _, _ = search_policy_tree(dominant, weight, strata, max_depth=3, min_segment_share=0.1)
    assert single == ("leaf", 1)


def test_categorical_candidates_cover_subsets_up_to_complement() -> None:
    splits, member = _candidate_splits(_grid_strata((4, 2)))
    fa = [s.left_levels for s in splits if s.covariate == 0]
    assert len(fa) == 7  # 4 singletons + 3 pairs holding level 0
    assert member.shape == (len(splits), 8)


@pytest.fixture(scope="module")
def reversal_fit():
    treatments = ["control", "treatment"]
    gen = make_generator("reversal", treatments=treatments, seed=4)
    data, _ = gen(0, cold_start_plan(treatments, n_visitors=30_000))
    frame = data.visitors()
    cats = {}
    for name in ("device_type", "channel", "is_returning"):
        values, codes = np.unique(frame[name].astype(str).to_numpy(), return_inverse=True)
        cats[name] = (codes, tuple(values))
    strata = stratify(cats, {n: frame[n].to_numpy() for n in ("session_recency", "browse_depth")}, n_bins=4)
    arm = (frame["variant"].astype(str) == "treatment").to_numpy().astype(int)
    post = fit_hurdle_posterior(
        strata, arm, frame["converted"].to_numpy(), frame["revenue"].to_numpy(), treatments=treatments,
        metric="revenue_per_visitor", n_draws=300, rng=np.random.default_rng(0),
    )
    fit = fit_policy_tree(post, active=treatments, max_depth=2, min_segment_share=0.1, n_bootstrap=8, rng=np.random.default_rng(1))
    return frame, post, fit


def test_fit_finds_the_device_split_and_describes_segments(reversal_fit) -> None:
    frame, post, fit = reversal_fit
    tree = fit.tree
    assert tree.root.feature == "device_type"
    desktop = [s for s in tree.leaves if "desktop" in s.rule and "in {desktop}" in s.rule]
    assert desktop and all(s.best_arm == "treatment" for s in desktop)
    for s in tree.leaves:
        assert sum(s.p_best.values()) == pytest.approx(1.0)
        lo, hi = s.effect_interval80["treatment"]
        assert lo <= s.effect_mean["treatment"] <= hi
        assert 0.0 <= s.stability <= 1.0
    assert sum(s.share for s in tree.leaves) == pytest.approx(1.0)


def test_routing_raw_covariates_matches_strata(reversal_fit) -> None:
    frame, post, fit = reversal_fit
    routed = fit.tree.leaf_index(frame.astype({"device_type": str, "channel": str}))
    np.testing.assert_array_equal(routed, fit.stratum_leaf[post.strata.of_visitor])


def test_tree_json_round_trip(reversal_fit) -> None:
    _, _, fit = reversal_fit
    data = fit.tree.to_json()
    back = PolicyTree.from_json(data)
    assert back.to_json() == data
    assert back.allocation_map == fit.tree.allocation_map


def test_rules_merge_ranges() -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 10, 4000)
    strata = stratify({}, {"x": x}, n_bins=4)
    value = np.stack([np.zeros(strata.n_strata), np.where(strata.levels[:, 0] == 1, 1.0, -1.0)], axis=1)
    structure, splits, member = search_policy_tree(value, strata.counts.astype(float), strata, max_depth=2, min_segment_share=0.0)
    from simfarm.experiments.policy_tree import _to_nodes

    _, rules = _to_nodes(structure, splits, strata)
    assert any(" < x <= " in r for r in rules)
    assert len(list(itertools.chain(rules))) == 3
