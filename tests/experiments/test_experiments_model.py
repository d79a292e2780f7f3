"""Strata and the conjugate hurdle posterior."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simfarm.experiments import fit_hurdle_posterior, stratify
from simfarm.experiments.model import arm_stats, bootstrap_stats
from simfarm.experiments.strata import bin_values, quantile_edges


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=200), st.integers(1, 8))
def test_bins_agree_with_thresholds(values: list[float], n_bins: int) -> None:
    x = np.array(values)
    edges = quantile_edges(x, n_bins)
    assert list(edges) == sorted(set(edges)) and len(edges) <= n_bins - 1
    levels = bin_values(x, edges)
    for j, edge in enumerate(edges):
        np.testing.assert_array_equal(levels <= j, x <= edge)  # the tree's "x <= threshold"
    assert levels.max() <= len(edges)


def test_missing_values_fall_in_the_top_bin() -> None:
    x = np.array([1.0, 2.0, np.nan, 3.0, 4.0])
    edges = quantile_edges(x, 2)
    assert bin_values(x, edges)[2] == len(edges)


def test_stratify_counts_and_levels() -> None:
    rng = np.random.default_rng(0)
    n = 5000
    codes = rng.integers(0, 3, n)
    depth = rng.gamma(2.0, 2.0, n)
    strata = stratify({"device": (codes, ("a", "b", "c"))}, {"depth": depth}, n_bins=4)
    assert strata.counts.sum() == n and strata.n_strata == 12
    # Each visitor's stratum carries the visitor's own levels.
    np.testing.assert_array_equal(strata.levels[strata.of_visitor, 0], codes)
    np.testing.assert_array_equal(strata.levels[strata.of_visitor, 1], bin_values(depth, strata.covariates[1].edges))
    single = stratify({}, {}, n_bins=4)
    assert single.n_strata == 0


def _data(n: int, p: tuple[float, float], seed: int = 0, groups: int = 4):
    """Two arms, one categorical covariate; arm 1's rate is p[1] everywhere, arm 0's p[0]."""
    rng = np.random.default_rng(seed)
    group = rng.integers(0, groups, n)
    arm = rng.integers(0, 2, n)
    converted = rng.random(n) < np.where(arm == 1, p[1], p[0])
    revenue = np.where(converted, rng.lognormal(np.log(40) - 0.32, 0.8, n), 0.0)
    strata = stratify({"g": (group, tuple("wxyz"[:groups]))}, {}, n_bins=4)
    return strata, arm, converted, revenue


def test_posterior_concentrates_on_the_truth() -> None:
    strata, arm, converted, revenue = _data(200_000, (0.05, 0.08))
    post = fit_hurdle_posterior(
        strata, arm, converted, revenue, treatments=["control", "a"], metric="conversion_rate", n_draws=400,
        rng=np.random.default_rng(1),
    )
    overall = post.group_value_draws(np.zeros(strata.n_strata, dtype=np.int64), 1)[0]
    assert overall[0].mean() == pytest.approx(0.05, abs=0.002) and overall[1].mean() == pytest.approx(0.08, abs=0.002)
    assert overall[1].std() < 0.002
    np.testing.assert_array_equal(post.value_draws, post.p_draws)  # conversion metric: value is p


def test_intervals_narrow_with_data() -> None:
    widths = []
    for n in (2_000, 50_000):
        strata, arm, converted, revenue = _data(n, (0.05, 0.05), seed=n)
        post = fit_hurdle_posterior(
            strata, arm, converted, revenue, treatments=["control", "a"], metric="revenue_per_visitor", n_draws=400,
            rng=np.random.default_rng(2),
        )
        effect = post.group_value_draws(np.zeros(strata.n_strata, dtype=np.int64), 1)[0]
        widths.append(np.subtract(*np.quantile(effect[1] - effect[0], [0.9, 0.1])))
    assert widths[1] < widths[0] / 3


def test_small_strata_shrink_toward_the_pool() -> None:
    strata, arm, converted, revenue = _data(40_000, (0.05, 0.05), groups=3)
    # Append a tiny fourth stratum whose 3 control visitors all converted.
    group = np.concatenate([strata.levels[strata.of_visitor, 0], [3, 3, 3]])
    strata = stratify({"g": (group, tuple("wxyz"))}, {}, n_bins=4)
    arm = np.concatenate([arm, [0, 0, 0]])
    converted = np.concatenate([converted, [True, True, True]])
    revenue = np.concatenate([revenue, [40.0, 40.0, 40.0]])
    post = fit_hurdle_posterior(
        strata, arm, converted, revenue, treatments=["control", "a"], metric="conversion_rate", n_draws=200,
        rng=np.random.default_rng(3),
    )
    tiny = int(np.flatnonzero(strata.levels[:, 0] == 3)[0])
    assert post.conjugate.mean_p()[tiny, 0] < 0.5  # raw rate 3/3 = 1.0
    big = int(np.flatnonzero(strata.levels[:, 0] == 0)[0])
    raw = post.stats.conversions[big, 0] / post.stats.n[big, 0]
    assert post.conjugate.mean_p()[big, 0] == pytest.approx(raw, abs=0.01)


def test_contrast_draws_index_the_strata() -> None:
    strata, arm, converted, revenue = _data(3_000, (0.05, 0.07))
    post = fit_hurdle_posterior(
        strata, arm, converted, revenue, treatments=["control", "a"], metric="revenue_per_visitor", n_draws=50,
        rng=np.random.default_rng(4),
    )
    draws = post.contrast_draws()
    assert draws.shape == (3_000, 50, 1)
    s = strata.of_visitor[17]
    np.testing.assert_array_equal(draws[17, :, 0], post.value_draws[s, 1] - post.value_draws[s, 0])
    np.testing.assert_array_equal(post.contrast_draws(np.array([17]))[0], draws[17])
    # Group averages are visitor-weighted strata averages.
    group = np.arange(strata.n_strata) % 2
    g = post.group_value_draws(group, 2)
    w = strata.counts * (group == 1)
    np.testing.assert_allclose(g[1], np.tensordot(w, post.value_draws, axes=1) / w.sum())


def test_draws_are_reproducible_from_the_rng() -> None:
    strata, arm, converted, revenue = _data(3_000, (0.05, 0.07))
    fit = lambda seed: fit_hurdle_posterior(  # noqa: E731
        strata, arm, converted, revenue, treatments=["control", "a"], metric="revenue_per_visitor", n_draws=50,
        rng=np.random.default_rng(seed),
    )
    np.testing.assert_array_equal(fit(5).value_draws, fit(5).value_draws)
    assert not np.array_equal(fit(5).value_draws, fit(6).value_draws)


def test_converters_need_revenue() -> None:
    with pytest.raises(ValueError, match="revenue > 0"):
        arm_stats(np.zeros(2, int), np.zeros(2, int), np.array([True, False]), np.zeros(2), n_strata=1, n_arms=1)


def test_bootstrap_replicates() -> None:
    strata, arm, converted, revenue = _data(20_000, (0.05, 0.07))
    stats = arm_stats(strata.of_visitor, arm, converted, revenue, n_strata=strata.n_strata, n_arms=2)
    boot = bootstrap_stats(stats, np.random.default_rng(0), 200)
    assert boot.n.shape == (200, *stats.n.shape)
    np.testing.assert_allclose(boot.n.mean(0), stats.n, rtol=0.02)
    np.testing.assert_allclose(boot.conversions.mean(0), stats.conversions, rtol=0.05)
    with pytest.raises(ValueError, match="n_bootstrap"):
        bootstrap_stats(stats, np.random.default_rng(0), 0)
