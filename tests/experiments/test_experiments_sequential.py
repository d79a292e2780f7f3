"""The round loop: validation with atomic commit, overrides, plans, drops, graduation, summary."""

from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from simfarm.experiments import (
    BaselinePolicy,
    Cell,
    FixedSchedule,
    ObservedExperimentData,
    UniformPolicy,
    VariantData,
    make_generator,
)
from simfarm.experiments.recommend import (
    DROP_AFTER_ROUNDS,
    still_active,
    update_drop_streaks,
    update_graduation,
)


class BreakOnce:
    """Wraps a generator; on round *at* it returns mutated output once, then behaves."""

    def __init__(self, base, at: int, mutate) -> None:
        self.base, self.at, self.mutate, self.armed = base, at, mutate, True

    def __call__(self, round_idx: int, plan: Any):
        data, truth = self.base(round_idx, plan)
        if round_idx == self.at and self.armed:
            self.armed = False
            return self.mutate(data, truth)
        return data, truth


def _replace_variant(data: ObservedExperimentData, index: int, **changes: Any) -> ObservedExperimentData:
    variants = list(data.variants)
    v = variants[index]
    frame = changes.pop("frame", v.visitors)
    variants[index] = VariantData.from_visitors(changes.pop("name", v.name), frame)
    return ObservedExperimentData(changes.pop("experiment_id", data.experiment_id), changes.pop("metric", data.metric), variants)


def _no_cell(data, truth):
    return _replace_variant(data, 1, frame=data.variants[1].visitors.drop(columns=["cell"])), truth


def _bogus_cell(data, truth):
    frame = data.variants[0].visitors.copy()
    frame["cell"] = "bogus"
    return _replace_variant(data, 0, frame=frame), truth


MUTATIONS = {
    "missing cell column": (_no_cell, "lacks the reserved 'cell' column"),
    "cell id outside plan": (_bogus_cell, r"holds id\(s\) \['bogus'\] that are not cells of the round's plan"),
    "unknown variant": (lambda d, t: (_replace_variant(d, 1, name="zzz"), t), r"variant name\(s\) \['zzz'\] outside the treatments"),
    "experiment id changed": (lambda d, t: (_replace_variant(d, 0, experiment_id="other"), t), "experiment_id 'other' but earlier rounds had"),
    "metric changed": (lambda d, t: (_replace_variant(d, 0, metric="conversion_rate"), t), "metric 'conversion_rate' but earlier rounds had"),
    "sim to real flip": (lambda d, t: (d, None), r"returned None \(real-data mode\) but earlier rounds returned a CalibrationTruth"),
    "truth of wrong length": (
        lambda d, t: (d, dataclasses.replace(t, p_per_visitor=[a[:-1] for a in t.p_per_visitor], m_per_visitor=[a[:-1] for a in t.m_per_visitor], contrast_cate_per_visitor=[a[:-1] for a in t.contrast_cate_per_visitor])),
        "truth covers",
    ),
}


@pytest.mark.parametrize("name", list(MUTATIONS))
def test_bad_round_raises_and_leaves_history_unchanged(name: str, small_experiment) -> None:
    mutate, message = MUTATIONS[name]
    base = make_generator("constant", treatments=["control", "t1"], seed=0)
    exp = small_experiment(generator=BreakOnce(base, 1, mutate))
    reference = small_experiment()
    first = next(exp)
    next(reference)
    before = (len(exp.history), exp.cumulative.n, exp.next_recommendation, exp.history[0])
    with pytest.raises(ValueError, match=message):
        next(exp)
    assert (len(exp.history), exp.cumulative.n, exp.next_recommendation, exp.history[0]) == before
    assert exp.current_round_idx == 1 and exp.latest is first
    # The failed round left no trace: the retry equals an undisturbed run.
    assert next(exp).to_json() == next(reference).to_json()


def test_generator_must_return_the_contract(small_experiment) -> None:
    exp = small_experiment(generator=lambda r, plan: ({"not": "data"}, None))
    with pytest.raises(ValueError, match="must return"):
        next(exp)
    assert exp.history == []


def test_cold_start_then_engine_plans(small_experiment) -> None:
    exp = small_experiment(k=3)
    first = next(exp)
    assert [(c.id, c.weight) for c in first.cells_shipped] == [("control", 0.5), ("explore", 0.5)]
    plan = first.next_recommendation
    assert [c.id for c in plan.cells] == ["control", "explore", "optimized"]
    assert [c.weight for c in plan.cells] == pytest.approx([0.05, 0.05, 0.9])
    assert isinstance(plan.cells[0].policy, BaselinePolicy) and plan.cells[1].policy.arms == plan.treatments
    leaf_probs = plan.cells[2].policy.leaf_probs
    assert leaf_probs == {str(s.id): s.arm_probs for s in plan.tree.leaves}
    second = next(exp)
    assert second.cells_shipped == plan.cells
    obs = {o.cell_id: o for o in second.cell_observations}
    assert sum(o.n_visitors for o in obs.values()) == second.n_visitors_round == 1500
    assert set(obs["control"].arm_counts) == {"control"}


def test_cell_overrides(small_experiment) -> None:
    custom = [Cell("a-only", BaselinePolicy("t1"), 0.3), Cell("rest", UniformPolicy(("control", "t1")), 0.7)]
    exp = small_experiment(cells=custom)
    assert [c.id for c in next(exp).cells_shipped] == ["a-only", "rest"]
    once = [Cell("all-control", BaselinePolicy("control"), 1.0)]
    second = exp.advance(cells=once)
    assert [c.id for c in second.cells_shipped] == ["all-control"]
    assert set(second.cell_observations[0].arm_counts) == {"control"}
    assert [c.id for c in next(exp).cells_shipped] == ["control", "explore", "optimized"]


def test_bad_overrides_are_rejected(small_experiment) -> None:
    with pytest.raises(ValueError, match="cells: cell weights must sum to 1"):
        small_experiment(cells=[Cell("x", BaselinePolicy("control"), 0.4)])
    exp = small_experiment()
    next(exp)
    with pytest.raises(ValueError, match="outside the treatments"):
        exp.advance(cells=[Cell("x", BaselinePolicy("nope"), 1.0)])
    assert len(exp.history) == 1


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"min_control_weight": 0.6, "min_explore_weight": 0.4}, "leave room for the optimized cell"),
        ({"max_segment_depth": 7}, "max_segment_depth must be an integer from 0 to 4, got 7"),
        ({"min_segment_share": 0.7}, "min_segment_share must be a number in"),
        ({"n_draws": 3}, "n_draws must be an integer >= 10, got 3"),
        ({"thompson_floor": 0.9}, "thompson_floor must be a number in"),
        ({"decision_tolerance": 0}, "decision_tolerance must be a number > 0"),
    ],
)
def test_constructor_validation(kwargs: dict, message: str, small_experiment) -> None:
    with pytest.raises(ValueError, match=message):
        small_experiment(**kwargs)


def test_schedule_end_and_run_to_completion(small_experiment) -> None:
    exp = small_experiment(rounds=2)
    assert exp.run_to_completion() is exp
    assert len(exp.history) in (1, 2)
    if len(exp.history) == 2:
        with pytest.raises(StopIteration):
            next(exp)
    open_ended = small_experiment(rounds=None)
    assert open_ended.schedule.n_rounds is None
    with pytest.raises(ValueError, match="open-ended"):
        open_ended.run_to_completion()


def test_real_data_mode(small_experiment) -> None:
    base = make_generator("constant", treatments=["control", "t1"], seed=1)
    exp = small_experiment(generator=lambda r, plan: (base(r, plan)[0], None))
    snapshots = list(exp)
    assert all(s.truth_comparison is None for s in snapshots)
    assert snapshots[-1].to_json()["truth_comparison"] is None


def test_summary_and_confidence(small_experiment) -> None:
    exp = small_experiment()
    assert "Nothing has run yet" in exp.summary
    list(exp)
    text = exp.summary
    assert text.startswith("After 3 round(s) of 3, confidence is ")
    assert exp.confidence in ("low", "medium", "high")
    assert "Next round: control 5%, explore 5%, optimized 90%" in text


def _fit(p_best_per_leaf: list[dict[str, float]], active: list[int]) -> Any:
    leaves = [SimpleNamespace(p_best=p) for p in p_best_per_leaf]
    return SimpleNamespace(active=active, tree=SimpleNamespace(leaves=leaves))


def test_drop_after_two_rounds_under_threshold() -> None:
    treatments = ["control", "a", "b"]
    fit = _fit([{"control": 0.5, "a": 0.48, "b": 0.02}, {"control": 0.3, "a": 0.66, "b": 0.04}], [0, 1, 2])
    streaks = update_drop_streaks({}, fit, treatments, drop_threshold=0.05)
    assert streaks == {"a": 0, "b": 1} and still_active(treatments, streaks) == treatments
    streaks = update_drop_streaks(streaks, fit, treatments, drop_threshold=0.05)
    assert streaks["b"] == DROP_AFTER_ROUNDS and still_active(treatments, streaks) == ["control", "a"]
    recovered = _fit([{"control": 0.5, "a": 0.4, "b": 0.1}], [0, 1, 2])
    assert update_drop_streaks({"b": 1}, recovered, treatments, drop_threshold=0.05)["b"] == 0


def test_graduation_streaks_follow_rules() -> None:
    streaks, candidates = update_graduation({}, [("a", 0, "all visitors", 0.001, 0.995)])
    assert candidates[0].sustained_rounds == 1
    streaks, candidates = update_graduation(streaks, [("a", 2, "all visitors", 0.001, 0.995)])
    assert candidates[0].sustained_rounds == 2 and candidates[0].segment == 2
    streaks, candidates = update_graduation(streaks, [])
    assert streaks == {} and candidates == ()


def test_many_arms_drops_the_loser() -> None:
    from simfarm.experiments import sequential_experiment

    treatments = ["control", "a", "b", "c", "d"]
    exp = sequential_experiment(
        generator=make_generator("many_arms", treatments=treatments, seed=2),
        schedule=FixedSchedule(4000, 5),
        treatments=treatments,
        seed=2,
        n_draws=300,
        n_bootstrap=4,
    )
    last = list(exp)[-1]
    assert "c" in exp.dropped_treatments()
    assert "c" not in last.next_recommendation.treatments
    assert "c" not in last.next_recommendation.cells[1].policy.arms
    assert last.analysis.comparison("c").decision == "STOP" and not last.analysis.comparison("c").active


def test_snapshot_json_contract(small_experiment) -> None:
    exp = small_experiment(k=3)
    snapshots = list(exp)
    from simfarm.experiments import snapshot_from_json

    for s in snapshots:
        d = s.to_json()
        text = json.dumps(d, allow_nan=False)  # strict JSON: NaN/inf became null
        assert d["schema"] == "simfarm.experiment.round/1"
        assert d["n_rounds"] == 3 and d["treatments"] == ["control", "t1", "t2"]
        assert {"cells", "treatments", "tree", "graduation_candidates"} <= set(d["next_recommendation"])
        tree = d["next_recommendation"]["tree"]
        assert tree["max_depth"] == 3
        assert set(tree["root"]) in ({"leaf"}, {"feature", "categories", "threshold", "left", "right"})
        leaf = tree["leaves"][0]
        assert {"id", "rule", "share", "arm_probs", "best_arm", "p_best", "effect_interval80", "stability"} <= set(leaf)
        tc = d["truth_comparison"]
        assert {"cate_rmse", "policy_accuracy", "rpv_policy", "rpv_uniform", "rpv_oracle", "oracle_gap_rpv", "coverage"} <= set(tc)
        assert {r["level"] for r in tc["coverage"]} == {0.5, 0.8, 0.9, 0.95}
        comparison = d["analysis"]["comparisons"][0]
        assert {"arm", "lift", "interval80", "p_positive", "expected_loss", "decision"} <= set(comparison)
        back = snapshot_from_json(json.loads(text))
        assert back.to_json() == d
        assert back.posterior is None and back.round_idx == s.round_idx
        assert back.cells_shipped[0].id == s.cells_shipped[0].id
        assert back.next_recommendation.tree.leaves[0].arm_probs == s.next_recommendation.tree.leaves[0].arm_probs
        assert back.next_recommendation.cells[2].policy.tree is back.next_recommendation.tree
    assert np.isfinite(snapshots[-1].truth_comparison.cate_rmse)
