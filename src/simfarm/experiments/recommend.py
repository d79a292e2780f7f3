"""The next round's plan: cells, dropped arms and graduation candidates.

An engine plan has three cells: **control** (everyone gets the control,
``min_control_weight``), **explore** (uniform over the active arms,
``min_explore_weight``) and **optimized** (the rest: a :class:`TreePolicy`
whose leaves assign arms by Thompson weights -- the share of posterior
draws in which each arm is best there, floored). Round 0 has no posterior
yet and runs the cold start: control 50%, explore 50%.

Dropping: a non-control arm whose P(best) stays under ``drop_threshold`` in
every leaf for :data:`DROP_AFTER_ROUNDS` consecutive rounds leaves the
active list for good.

Graduation (:class:`ExpectedLossRule`): in a segment, arm k qualifies when
committing the segment to k is expected to lose little against the best
arm (``E[max_j theta_j - theta_k] <= max_relative_loss * E[theta_0]``), k
beats control with probability >= ``min_prob_beats_control``, and the
segment is stable (>= ``min_stability``). A candidate is reported with the
number of consecutive rounds its (arm, segment rule) pair has qualified;
it graduates at ``sustained_rounds`` (default 2).

The defaults (0.1% loss, P >= 0.99) are strict on purpose: the posterior
is looked at after every round, and with five looks at cumulative data
"P >= 0.95 twice in a row" graduated a null arm in 4 of 40 experiments;
at the defaults, none of those 40 did (see docs/benchmarks.md).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from simfarm.experiments.cells import (
    BaselinePolicy,
    Cell,
    TreePolicy,
    UniformPolicy,
    cell_from_json,
    validate_cell_weights,
)
from simfarm.experiments.jsonvalues import from_json_number, to_json_number
from simfarm.experiments.policy_tree import PolicyTree, TreeFit

__all__ = [
    "DROP_AFTER_ROUNDS",
    "ExpectedLossRule",
    "GraduationCandidate",
    "NextRoundPlan",
    "cold_start_plan",
    "engine_cells",
    "still_active",
    "update_drop_streaks",
    "update_graduation",
]

#: Consecutive rounds under the drop threshold before an arm is dropped.
DROP_AFTER_ROUNDS = 2
CONTROL_CELL, EXPLORE_CELL, OPTIMIZED_CELL = "control", "explore", "optimized"


@dataclass(frozen=True)
class GraduationCandidate:
    """An (arm, segment) pair that meets the graduation rule this round.

    Attributes:
        treatment: The arm.
        segment: Leaf id of the segment in this round's tree.
        rule: The segment's rule (what streaks are tracked by across rounds).
        sustained_rounds: Consecutive rounds this pair has qualified.
        expected_loss: E[max_j theta_j - theta_k] in the segment, per visitor.
        p_beats_control: P(theta_k > theta_0) in the segment.
    """

    treatment: str
    segment: int
    rule: str
    sustained_rounds: int
    expected_loss: float
    p_beats_control: float = math.nan

    def to_json(self) -> dict[str, Any]:
        """``{"treatment", "segment", "sustained_rounds", "expected_loss", "rule", "p_beats_control"}``."""
        return {
            "treatment": self.treatment,
            "segment": int(self.segment),
            "sustained_rounds": int(self.sustained_rounds),
            "expected_loss": to_json_number(self.expected_loss),
            "rule": self.rule,
            "p_beats_control": to_json_number(self.p_beats_control),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> GraduationCandidate:
        """Inverse of :meth:`to_json`."""
        return cls(
            treatment=str(data["treatment"]),
            segment=int(data["segment"]),
            rule=str(data.get("rule", "")),
            sustained_rounds=int(data.get("sustained_rounds", 1)),
            expected_loss=from_json_number(data.get("expected_loss")),
            p_beats_control=from_json_number(data.get("p_beats_control")),
        )


@dataclass(frozen=True)
class ExpectedLossRule:
    """When an arm is ready to graduate in a segment (see the module docstring).

    Args:
        max_relative_loss: Tolerated expected loss, as a share of the
            segment's control value per visitor (> 0).
        min_prob_beats_control: Required P(arm beats control) in the segment.
        min_stability: Required segment stability (0 ignores it).
        sustained_rounds: Consecutive qualifying rounds to graduate (>= 1).

    Raises:
        ValueError: On a value outside its range.
    """

    max_relative_loss: float = 0.001
    min_prob_beats_control: float = 0.99
    min_stability: float = 0.80
    sustained_rounds: int = 2

    def __post_init__(self) -> None:
        if not (math.isfinite(self.max_relative_loss) and self.max_relative_loss > 0):
            raise ValueError(f"max_relative_loss must be a number > 0, got {self.max_relative_loss!r}")
        for name in ("min_prob_beats_control", "min_stability"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0 <= value <= 1):
                raise ValueError(f"{name} must be in [0, 1], got {value!r}")
        if isinstance(self.sustained_rounds, bool) or not isinstance(self.sustained_rounds, int) or self.sustained_rounds < 1:
            raise ValueError(f"sustained_rounds must be a positive integer, got {self.sustained_rounds!r}")

    def qualifying(self, fit: TreeFit, treatments: Sequence[str]) -> list[tuple[str, int, str, float, float]]:
        """``(arm, leaf id, rule, expected loss, P(beats control))`` meeting the rule now."""
        out = []
        draws = fit.leaf_value_draws[:, fit.active, :]  # (L, A, S)
        best = draws.max(axis=1)
        for leaf, segment in enumerate(fit.tree.leaves):
            stable = self.min_stability <= 0 or (math.isfinite(segment.stability) and segment.stability >= self.min_stability)
            if not stable:
                continue
            control_value = float(draws[leaf, 0].mean())
            for i, arm in enumerate(fit.active[1:], start=1):
                loss = float((best[leaf] - draws[leaf, i]).mean())
                p_beat = float((draws[leaf, i] > draws[leaf, 0]).mean())
                if loss <= self.max_relative_loss * control_value and p_beat >= self.min_prob_beats_control:
                    out.append((treatments[arm], leaf, segment.rule, loss, p_beat))
        return out

    def to_json(self) -> dict[str, Any]:
        """The rule's fields."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class NextRoundPlan:
    """What the next round runs, and what the engine concluded.

    Attributes:
        cells: The cells (weights sum to 1).
        treatments: Active arms, control first.
        tree: The round's policy tree (None on a cold start).
        graduation_candidates: (arm, segment) pairs meeting the rule now.
        n_visitors: Visitors of the round this plan runs (filled in by the
            loop when it ships the plan; None on a recommendation).
    """

    cells: tuple[Cell, ...]
    treatments: tuple[str, ...]
    tree: PolicyTree | None = None
    graduation_candidates: tuple[GraduationCandidate, ...] = field(default_factory=tuple)
    n_visitors: int | None = None

    @property
    def prose_summary(self) -> str:
        """One deterministic paragraph describing the plan."""
        split = ", ".join(f"{c.id} {c.weight:.0%}" for c in self.cells)
        text = f"Next round: {split} over arms {', '.join(self.treatments)}."
        if self.tree is not None:
            leaves = "; ".join(f"{s.rule} -> {s.best_arm}" for s in self.tree.leaves)
            text += f" The policy tree has {self.tree.n_leaves} segment(s): {leaves}."
        return text

    def to_json(self) -> dict[str, Any]:
        """The snapshot's ``next_recommendation`` shape."""
        return {
            "cells": [c.to_json() for c in self.cells],
            "treatments": list(self.treatments),
            "tree": None if self.tree is None else self.tree.to_json(),
            "graduation_candidates": [g.to_json() for g in self.graduation_candidates],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> NextRoundPlan:
        """Inverse of :meth:`to_json`; tree policies get the plan's tree attached."""
        tree = None if data.get("tree") is None else PolicyTree.from_json(data["tree"])
        return cls(
            cells=tuple(cell_from_json(c, tree) for c in data.get("cells", [])),
            treatments=tuple(data.get("treatments", [])),
            tree=tree,
            graduation_candidates=tuple(GraduationCandidate.from_json(g) for g in data.get("graduation_candidates", [])),
        )


def cold_start_plan(treatments: Sequence[str], n_visitors: int | None = None) -> NextRoundPlan:
    """Round 0's plan: control cell 50%, explore cell (uniform over all arms) 50%."""
    cells = (
        Cell(CONTROL_CELL, BaselinePolicy(treatments[0]), 0.5),
        Cell(EXPLORE_CELL, UniformPolicy(tuple(treatments)), 0.5),
    )
    return NextRoundPlan(cells=cells, treatments=tuple(treatments), n_visitors=n_visitors)


def engine_cells(
    tree: PolicyTree, active: Sequence[str], *, min_control_weight: float, min_explore_weight: float
) -> tuple[Cell, ...]:
    """Control + explore + optimized cells for a fitted tree.

    The optimized cell uses the tree leaves' ``arm_probs``.

    Raises:
        ValueError: When the floors leave no room for the optimized cell.
    """
    optimized = 1.0 - min_control_weight - min_explore_weight
    if optimized <= 0:
        raise ValueError(
            f"min_control_weight + min_explore_weight must be < 1, got {min_control_weight} + {min_explore_weight}"
        )
    cells = (
        Cell(CONTROL_CELL, BaselinePolicy(active[0]), float(min_control_weight)),
        Cell(EXPLORE_CELL, UniformPolicy(tuple(active)), float(min_explore_weight)),
        Cell(OPTIMIZED_CELL, TreePolicy({str(s.id): s.arm_probs for s in tree.leaves}, tree), optimized),
    )
    validate_cell_weights(cells)
    return cells


def update_drop_streaks(
    streaks: Mapping[str, int], fit: TreeFit, treatments: Sequence[str], *, drop_threshold: float
) -> dict[str, int]:
    """Count, per active non-control arm, consecutive rounds under the threshold.

    An arm's streak grows when its P(best) is below *drop_threshold* in
    every leaf, and resets to 0 otherwise.

    Returns:
        The new streaks (arms not active this round are left out).
    """
    out: dict[str, int] = {}
    for arm in fit.active[1:]:
        name = treatments[arm]
        p_max = max(seg.p_best.get(name, 0.0) for seg in fit.tree.leaves)
        out[name] = streaks.get(name, 0) + 1 if p_max < drop_threshold else 0
    return out


def still_active(active: Sequence[str], streaks: Mapping[str, int]) -> list[str]:
    """Active arms minus those whose drop streak reached :data:`DROP_AFTER_ROUNDS`."""
    return [a for i, a in enumerate(active) if i == 0 or streaks.get(a, 0) < DROP_AFTER_ROUNDS]


def update_graduation(
    streaks: Mapping[tuple[str, str], int], qualifying: Sequence[tuple[str, int, str, float, float]]
) -> tuple[dict[tuple[str, str], int], tuple[GraduationCandidate, ...]]:
    """Advance the (arm, rule) streaks with this round's qualifying pairs.

    Pairs that do not qualify this round lose their streak.

    Returns:
        ``(new streaks, candidates)``.
    """
    new: dict[tuple[str, str], int] = {}
    candidates = []
    for arm, leaf, rule, loss, p_beat in qualifying:
        count = streaks.get((arm, rule), 0) + 1
        new[(arm, rule)] = count
        candidates.append(GraduationCandidate(arm, leaf, rule, count, loss, p_beat))
    return new, tuple(candidates)
