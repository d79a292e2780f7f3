"""Sim mode: score a round's posterior and recommended policy against the truth.

Everything is computed over the cumulative visitors, each with their
potential outcomes under every arm:

- ``cate_rmse``: root mean squared error of the posterior mean effect of
  every non-control arm over control, per visitor, against the true effect;
- ``policy_accuracy``: share of visitors whose recommended arm (their
  leaf's best arm) is truly best -- ties count as correct, so on the
  ``null`` scenario every arm is right;
- ``rpv_policy`` / ``rpv_uniform`` / ``rpv_oracle``: true value per visitor
  of the recommended policy, of a uniform draw over all arms, and of the
  best arm for each visitor; ``oracle_gap_rpv = rpv_oracle - rpv_policy``
  is the regret per visitor;
- ``assignment_regret_rpv`` (set by the loop): the regret the round's own
  visitors paid for being experimented on -- oracle value minus the value
  of the arm each actually received, averaged over the round;
- ``coverage``: for each segment (leaf), each active non-control arm and
  each level in :data:`COVERAGE_LEVELS`, whether the central posterior
  interval of the segment's average effect contains its true average
  effect. Segments are chosen on the same data, so this coverage includes
  the selection effect; the calibration studies read these rows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from simfarm.experiments.jsonvalues import from_json_number, to_json_number
from simfarm.experiments.model import HurdlePosterior
from simfarm.experiments.policy_tree import TreeFit

__all__ = ["COVERAGE_LEVELS", "CoverageRow", "TruthComparison", "assignment_regret", "evaluate_against_truth"]

COVERAGE_LEVELS = (0.5, 0.8, 0.9, 0.95)


@dataclass(frozen=True)
class CoverageRow:
    """Whether one segment's interval for one arm at one level holds the truth."""

    segment: int
    arm: str
    level: float
    lower: float
    upper: float
    truth: float
    covered: bool

    def to_json(self) -> dict[str, Any]:
        """``{"segment", "arm", "level", "lower", "upper", "truth", "covered"}``."""
        return {
            "segment": int(self.segment),
            "arm": self.arm,
            "level": float(self.level),
            "lower": to_json_number(self.lower),
            "upper": to_json_number(self.upper),
            "truth": to_json_number(self.truth),
            "covered": bool(self.covered),
        }


@dataclass(frozen=True)
class TruthComparison:
    """A round's scores against the truth (see the module docstring)."""

    cate_rmse: float
    policy_accuracy: float
    rpv_policy: float
    rpv_uniform: float
    rpv_oracle: float
    oracle_gap_rpv: float
    coverage: tuple[CoverageRow, ...]
    assignment_regret_rpv: float = math.nan

    def coverage_fraction(self, level: float) -> float:
        """Share of coverage rows at *level* that cover the truth (NaN if none)."""
        rows = [r.covered for r in self.coverage if abs(r.level - level) < 1e-12]
        return float(np.mean(rows)) if rows else math.nan

    def to_json(self) -> dict[str, Any]:
        """The snapshot's ``truth_comparison`` shape."""
        return {
            "cate_rmse": to_json_number(self.cate_rmse),
            "policy_accuracy": to_json_number(self.policy_accuracy),
            "rpv_policy": to_json_number(self.rpv_policy),
            "rpv_uniform": to_json_number(self.rpv_uniform),
            "rpv_oracle": to_json_number(self.rpv_oracle),
            "oracle_gap_rpv": to_json_number(self.oracle_gap_rpv),
            "assignment_regret_rpv": to_json_number(self.assignment_regret_rpv),
            "coverage": [r.to_json() for r in self.coverage],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TruthComparison:
        """Inverse of :meth:`to_json` (nulls become NaN)."""
        return cls(
            cate_rmse=from_json_number(data.get("cate_rmse")),
            policy_accuracy=from_json_number(data.get("policy_accuracy")),
            rpv_policy=from_json_number(data.get("rpv_policy")),
            rpv_uniform=from_json_number(data.get("rpv_uniform")),
            rpv_oracle=from_json_number(data.get("rpv_oracle")),
            oracle_gap_rpv=from_json_number(data.get("oracle_gap_rpv")),
            coverage=tuple(
                CoverageRow(
                    segment=int(r["segment"]),
                    arm=str(r["arm"]),
                    level=float(r["level"]),
                    lower=from_json_number(r.get("lower")),
                    upper=from_json_number(r.get("upper")),
                    truth=from_json_number(r.get("truth")),
                    covered=bool(r.get("covered")),
                )
                for r in data.get("coverage", [])
            ),
            assignment_regret_rpv=from_json_number(data.get("assignment_regret_rpv")),
        )


def evaluate_against_truth(
    posterior: HurdlePosterior,
    fit: TreeFit,
    value: np.ndarray,
    contrast: np.ndarray,
) -> TruthComparison:
    """Score the posterior and the recommended tree against the truth.

    Args:
        posterior: The round's posterior over the cumulative visitors.
        fit: The recommended policy tree (its leaves' best arms are the policy).
        value: ``(n, K)`` true expected value of each visitor under each arm
            (treatments order), rows aligned with the posterior's visitors.
        contrast: ``(n, K-1)`` true effect of each non-control arm.

    Returns:
        The :class:`TruthComparison`.

    Raises:
        ValueError: When the arrays do not match the posterior's visitors/arms.
    """
    n, k = posterior.strata.n_visitors, len(posterior.treatments)
    if value.shape != (n, k) or contrast.shape != (n, k - 1):
        raise ValueError(
            f"truth arrays must be ({n}, {k}) and ({n}, {k - 1}), got {value.shape} and {contrast.shape}"
        )
    stratum = posterior.strata.of_visitor
    leaf = fit.stratum_leaf[stratum]
    recommended = np.asarray(fit.leaf_arm)[leaf]
    rows = np.arange(n)
    v_policy = value[rows, recommended]
    v_best = value.max(axis=1)
    correct = v_policy >= v_best - 1e-9 * np.abs(v_best) - 1e-15
    if k > 1:
        error = posterior.contrast_mean[stratum] - contrast
        cate_rmse = float(np.sqrt(np.mean(error * error)))
    else:
        cate_rmse = math.nan

    rows_out: list[CoverageRow] = []
    n_leaves = fit.leaf_value_draws.shape[0]
    leaf_size = np.bincount(leaf, minlength=n_leaves).astype(np.float64)
    names = posterior.treatments
    for arm in fit.active[1:]:
        with np.errstate(invalid="ignore", divide="ignore"):
            true_mean = np.bincount(leaf, weights=contrast[:, arm - 1], minlength=n_leaves) / leaf_size
        effect = fit.leaf_value_draws[:, arm, :] - fit.leaf_value_draws[:, 0, :]
        for level in COVERAGE_LEVELS:
            lower, upper = np.quantile(effect, [(1 - level) / 2, (1 + level) / 2], axis=-1)
            for s in range(n_leaves):
                rows_out.append(
                    CoverageRow(
                        segment=s,
                        arm=names[arm],
                        level=level,
                        lower=float(lower[s]),
                        upper=float(upper[s]),
                        truth=float(true_mean[s]),
                        covered=bool(lower[s] <= true_mean[s] <= upper[s]),
                    )
                )
    rpv_policy = float(v_policy.mean())
    rpv_oracle = float(v_best.mean())
    return TruthComparison(
        cate_rmse=cate_rmse,
        policy_accuracy=float(correct.mean()),
        rpv_policy=rpv_policy,
        rpv_uniform=float(value.mean()),
        rpv_oracle=rpv_oracle,
        oracle_gap_rpv=rpv_oracle - rpv_policy,
        coverage=tuple(rows_out),
    )


def assignment_regret(value: np.ndarray, arm: np.ndarray) -> float:
    """Mean over visitors of (best arm's true value - received arm's true value).

    Args:
        value: ``(n, K)`` true value of each visitor under each arm.
        arm: ``(n,)`` index of the arm each visitor received.

    Returns:
        The regret per visitor (NaN with no visitors).
    """
    if len(arm) == 0:
        return math.nan
    return float((value.max(axis=1) - value[np.arange(len(arm)), arm]).mean())
