"""Cells of a round's plan, their allocation policies, and visitor assignment.

A plan splits traffic into cells by weight (weights sum to 1); each cell
assigns its visitors to arms by a policy:

- :class:`BaselinePolicy`: everyone gets one arm (the control cell);
- :class:`UniformPolicy`: uniform over a list of arms (the explore cell);
- :class:`TreePolicy`: per leaf of a policy tree, given arm probabilities
  (the optimized cell).

:func:`assign_visitors` draws each visitor's cell, then their arm, for a
whole frame at once, and returns each visitor's propensity -- the
probability the plan gave them of receiving each arm, over all cells.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from simfarm.experiments.policy_tree import PolicyTree

__all__ = [
    "Assignment",
    "BaselinePolicy",
    "Cell",
    "Policy",
    "TreePolicy",
    "UniformPolicy",
    "assign_visitors",
    "cell_from_json",
    "policy_from_json",
    "thompson_weights",
    "validate_cell_weights",
]

#: How far cell weights (and a leaf's arm probabilities) may sum from 1.
WEIGHT_TOLERANCE = 1e-9


def _arm_column(arms: Sequence[str], arm: str, who: str) -> int:
    try:
        return list(arms).index(arm)
    except ValueError:
        raise ValueError(f"{who} names arm {arm!r}, which is not among the arms {list(arms)}") from None


@dataclass(frozen=True)
class BaselinePolicy:
    """Every visitor gets ``arm`` (the control, in engine plans)."""

    arm: str
    kind: ClassVar[str] = "baseline"

    def arms_used(self) -> list[str]:
        """The arms this policy may assign."""
        return [self.arm]

    def arm_probabilities(self, covariates: Any, arms: Sequence[str], n: int) -> np.ndarray:
        """``(n, len(arms))`` assignment probabilities (one-hot rows).

        Raises:
            ValueError: When ``arm`` is not among *arms*.
        """
        row = np.zeros(len(arms))
        row[_arm_column(arms, self.arm, "BaselinePolicy")] = 1.0
        return np.broadcast_to(row, (n, len(arms)))

    def to_json(self) -> dict[str, Any]:
        """``{"kind": "baseline", "arm": ...}``."""
        return {"kind": self.kind, "arm": self.arm}


@dataclass(frozen=True)
class UniformPolicy:
    """Uniform over ``arms`` (the active arms, in engine plans)."""

    arms: tuple[str, ...]
    kind: ClassVar[str] = "uniform"

    def __post_init__(self) -> None:
        if not self.arms or len(set(self.arms)) != len(self.arms):
            raise ValueError(f"UniformPolicy needs a non-empty list of distinct arms, got {list(self.arms)}")
        object.__setattr__(self, "arms", tuple(self.arms))

    def arms_used(self) -> list[str]:
        """The arms this policy may assign."""
        return list(self.arms)

    def arm_probabilities(self, covariates: Any, arms: Sequence[str], n: int) -> np.ndarray:
        """``(n, len(arms))``: ``1/len(self.arms)`` on each of its arms.

        Raises:
            ValueError: When one of its arms is not among *arms*.
        """
        row = np.zeros(len(arms))
        for arm in self.arms:
            row[_arm_column(arms, arm, "UniformPolicy")] = 1.0 / len(self.arms)
        return np.broadcast_to(row, (n, len(arms)))

    def to_json(self) -> dict[str, Any]:
        """``{"kind": "uniform", "arms": [...]}``."""
        return {"kind": self.kind, "arms": list(self.arms)}


@dataclass(frozen=True)
class TreePolicy:
    """Per leaf of a policy tree, a distribution over arms.

    Args:
        leaf_probs: ``leaf id -> {arm: probability}`` (keys may be ints or
            their strings); each leaf's probabilities are >= 0 and sum to 1.
        tree: The tree that routes visitors to leaves. May be None for a
            policy read back from a snapshot (it then describes, but cannot
            assign).

    Raises:
        ValueError: On negative or non-summing probabilities, or when the
            tree has a leaf without probabilities.
    """

    leaf_probs: Mapping[str, Mapping[str, float]]
    tree: PolicyTree | None = None
    kind: ClassVar[str] = "tree"

    def __post_init__(self) -> None:
        probs: dict[str, dict[str, float]] = {}
        for leaf, dist in self.leaf_probs.items():
            dist = {str(a): float(p) for a, p in dist.items()}
            if not dist or any(not math.isfinite(p) or p < 0 for p in dist.values()):
                raise ValueError(f"TreePolicy leaf {leaf}: probabilities must be finite and >= 0, got {dist}")
            total = sum(dist.values())
            if abs(total - 1.0) > 1e-6:
                raise ValueError(f"TreePolicy leaf {leaf}: probabilities must sum to 1, got {total:.6g} ({dist})")
            probs[str(leaf)] = dist
        if self.tree is not None:
            missing = [s.id for s in self.tree.leaves if str(s.id) not in probs]
            if missing:
                raise ValueError(f"TreePolicy has no probabilities for tree leaves {missing}")
        object.__setattr__(self, "leaf_probs", probs)

    def arms_used(self) -> list[str]:
        """Arms with a positive probability in some leaf (first-seen order)."""
        seen: dict[str, None] = {}
        for dist in self.leaf_probs.values():
            for arm, p in dist.items():
                if p > 0:
                    seen.setdefault(arm)
        return list(seen)

    def arm_probabilities(self, covariates: Any, arms: Sequence[str], n: int) -> np.ndarray:
        """``(n, len(arms))``: each visitor's leaf's probabilities.

        Raises:
            ValueError: Without a tree, or when an arm is not among *arms*.
        """
        if self.tree is None:
            raise ValueError("this TreePolicy has no tree (read from a snapshot?) and cannot assign visitors")
        table = np.zeros((max(s.id for s in self.tree.leaves) + 1, len(arms)))
        for leaf, dist in self.leaf_probs.items():
            if int(leaf) >= table.shape[0]:
                continue
            for arm, p in dist.items():
                table[int(leaf), _arm_column(arms, arm, f"TreePolicy leaf {leaf}")] = p
        return table[self.tree.leaf_index(covariates, n=n)]

    def to_json(self) -> dict[str, Any]:
        """``{"kind": "tree", "leaf_probs": {"0": {...}, ...}}`` (the tree travels separately)."""
        return {"kind": self.kind, "leaf_probs": {k: dict(v) for k, v in self.leaf_probs.items()}}


Policy = BaselinePolicy | UniformPolicy | TreePolicy


@dataclass(frozen=True)
class Cell:
    """A share of the round's traffic and how it is assigned.

    Attributes:
        id: Unique name within the plan (recorded in the ``cell`` column).
        policy: How the cell assigns arms.
        weight: Share of the round's visitors, in [0, 1].
    """

    id: str
    policy: Policy
    weight: float

    def to_json(self) -> dict[str, Any]:
        """The snapshot's CELL shape."""
        return {"id": self.id, "weight": float(self.weight), "policy": self.policy.to_json()}


def validate_cell_weights(cells: Sequence[Cell]) -> None:
    """Check that a plan's cells are usable.

    Raises:
        ValueError: When *cells* is empty, an id is empty or repeated, a
            weight is not a finite number in [0, 1], or the weights do not
            sum to 1 (within 1e-9). The message lists every cell's weight.
    """
    if not cells:
        raise ValueError("a plan needs at least one cell")
    ids = [c.id for c in cells]
    if any(not isinstance(i, str) or not i for i in ids) or len(set(ids)) != len(ids):
        raise ValueError(f"cell ids must be distinct non-empty strings, got {ids}")
    listing = ", ".join(f"{c.id}={c.weight!r}" for c in cells)
    for c in cells:
        w = c.weight
        if isinstance(w, bool) or not isinstance(w, int | float) or not math.isfinite(w) or not 0 <= w <= 1:
            raise ValueError(f"cell {c.id!r} weight must be a finite number in [0, 1], got {w!r} ({listing})")
    total = math.fsum(float(c.weight) for c in cells)
    if abs(total - 1.0) > WEIGHT_TOLERANCE:
        raise ValueError(
            f"cell weights must sum to 1, got {total:.12g} ({listing}); rescale them so they add up to 1"
        )


def thompson_weights(p_best: Mapping[str, float], floor: float) -> dict[str, float]:
    """Assignment probabilities from P(best): ``floor + (1 - K*floor) * p``.

    Every arm keeps at least *floor* (when ``K * floor <= 1``) and the
    result sums to 1.

    Args:
        p_best: Posterior probability that each arm is best (sums to 1).
        floor: Minimum probability per arm, ``0 <= floor <= 1/K``.

    Raises:
        ValueError: When *floor* is negative or ``K * floor > 1``.
    """
    k = len(p_best)
    if floor < 0 or k * floor > 1 + 1e-12:
        raise ValueError(f"thompson floor must be in [0, 1/{k}] for {k} arms, got {floor}")
    total = math.fsum(p_best.values())
    shares = {a: (p / total if total > 0 else 1.0 / k) for a, p in p_best.items()}
    return {a: floor + (1.0 - k * floor) * s for a, s in shares.items()}


@dataclass(frozen=True, eq=False)
class Assignment:
    """Result of :func:`assign_visitors`.

    Attributes:
        cell: ``(n,)`` index of each visitor's cell in the plan.
        arm: ``(n,)`` index of each visitor's arm in *arms*.
        propensity: ``(n, len(arms))`` probability of each arm for each
            visitor under the plan (cells mixed by weight).
    """

    cell: np.ndarray
    arm: np.ndarray
    propensity: np.ndarray


def assign_visitors(
    cells: Sequence[Cell],
    covariates: Any,
    arms: Sequence[str],
    u_cell: np.ndarray,
    u_arm: np.ndarray,
) -> Assignment:
    """Assign every visitor a cell, then an arm, vectorised over visitors.

    Callers pass the uniforms (from their seeded generator) so that two
    plans run on the same seed see the same visitors and the same luck.

    Args:
        cells: The plan's cells (weights validated here).
        covariates: DataFrame or mapping of covariate columns (tree policies
            route on it).
        arms: Arm names; indices in the result refer to this list.
        u_cell, u_arm: ``(n,)`` uniforms in [0, 1) deciding cell and arm.

    Returns:
        The :class:`Assignment`.

    Raises:
        ValueError: On invalid weights, a policy naming an arm outside
            *arms*, or uniforms of different lengths.
    """
    validate_cell_weights(cells)
    n = len(u_cell)
    if len(u_arm) != n:
        raise ValueError(f"u_cell and u_arm must have one entry per visitor, got {n} and {len(u_arm)}")
    weights = np.array([float(c.weight) for c in cells])
    edges = np.cumsum(weights)
    edges[-1] = np.inf  # absorb rounding so every visitor lands in a cell
    cell = np.searchsorted(edges, np.asarray(u_cell) * weights.sum(), side="right")
    cell = np.minimum(cell, len(cells) - 1)
    propensity = np.zeros((n, len(arms)))
    chosen = np.zeros((n, len(arms)))
    for i, c in enumerate(cells):
        probs = c.policy.arm_probabilities(covariates, arms, n)
        propensity += weights[i] * probs
        members = cell == i
        chosen[members] = probs[members]
    cumulative = np.cumsum(chosen, axis=1)
    arm = (cumulative <= np.asarray(u_arm)[:, None] * cumulative[:, -1:]).sum(axis=1)
    arm = np.minimum(arm, len(arms) - 1)
    return Assignment(cell=cell.astype(np.int64), arm=arm.astype(np.int64), propensity=propensity)


def policy_from_json(data: Mapping[str, Any], tree: PolicyTree | None = None) -> Policy:
    """Rebuild a policy from its JSON form; *tree* is attached to tree policies.

    Raises:
        ValueError: On an unknown ``kind`` or missing fields.
    """
    kind = data.get("kind")
    if kind == "baseline":
        return BaselinePolicy(str(data["arm"]))
    if kind == "uniform":
        return UniformPolicy(tuple(data["arms"]))
    if kind == "tree":
        return TreePolicy(data["leaf_probs"], tree)
    raise ValueError(f"policy kind must be one of 'baseline', 'uniform', 'tree', got {kind!r}")


def cell_from_json(data: Mapping[str, Any], tree: PolicyTree | None = None) -> Cell:
    """Rebuild a cell from its JSON form (see :func:`policy_from_json`)."""
    return Cell(id=str(data["id"]), policy=policy_from_json(data["policy"], tree), weight=float(data["weight"]))
