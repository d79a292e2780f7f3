"""Per-arm comparisons against control and the SHIP / STOP / CONTINUE decision.

Over the whole (cumulative) population, for each non-control arm k with
value per visitor theta_k (posterior draws):

- ``lift``: posterior median of the relative lift ``theta_k / theta_0 - 1``,
  with its 80% central interval;
- ``p_positive``: P(theta_k > theta_0);
- ``expected_loss``: E[max(theta_0 - theta_k, 0)], the value per visitor
  expected to be lost by shipping k; ``expected_loss_stop`` is the mirror,
  E[max(theta_k - theta_0, 0)], lost by giving k up.

Decision, with tolerance ``t = decision_tolerance * E[theta_0]``: STOP when
``expected_loss_stop <= t`` (k cannot be meaningfully better); SHIP when
``expected_loss <= t`` (and not STOP); CONTINUE otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from simfarm.experiments.jsonvalues import from_json_number, to_json_number
from simfarm.experiments.model import HurdlePosterior
from simfarm.experiments.policy_tree import Segment

__all__ = ["DECISIONS", "Analysis", "ArmComparison", "compare_arms"]

DECISIONS = ("SHIP", "STOP", "CONTINUE")


@dataclass(frozen=True)
class ArmComparison:
    """One arm against control over the whole population.

    Attributes:
        arm: The arm.
        lift: Posterior median relative lift over control.
        interval80: 80% central interval of the relative lift.
        p_positive: P(arm's value > control's).
        expected_loss: E[max(control - arm, 0)] per visitor (loss of shipping).
        decision: ``SHIP``, ``STOP`` or ``CONTINUE``.
        effect: Posterior mean of (arm - control) value per visitor.
        effect_interval80: 80% interval of that difference.
        expected_loss_stop: E[max(arm - control, 0)] (loss of giving it up).
        active: False once the arm is dropped from the plan.
    """

    arm: str
    lift: float
    interval80: tuple[float, float]
    p_positive: float
    expected_loss: float
    decision: str
    effect: float = math.nan
    effect_interval80: tuple[float, float] = (math.nan, math.nan)
    expected_loss_stop: float = math.nan
    active: bool = True

    def to_json(self) -> dict[str, Any]:
        """The snapshot's comparison shape (plus effect fields and ``active``)."""
        return {
            "arm": self.arm,
            "lift": to_json_number(self.lift),
            "interval80": [to_json_number(self.interval80[0]), to_json_number(self.interval80[1])],
            "p_positive": to_json_number(self.p_positive),
            "expected_loss": to_json_number(self.expected_loss),
            "decision": self.decision,
            "effect": to_json_number(self.effect),
            "effect_interval80": [to_json_number(self.effect_interval80[0]), to_json_number(self.effect_interval80[1])],
            "expected_loss_stop": to_json_number(self.expected_loss_stop),
            "active": bool(self.active),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ArmComparison:
        """Inverse of :meth:`to_json` (nulls become NaN)."""
        iv = data.get("interval80") or [None, None]
        ev = data.get("effect_interval80") or [None, None]
        return cls(
            arm=str(data["arm"]),
            lift=from_json_number(data.get("lift")),
            interval80=(from_json_number(iv[0]), from_json_number(iv[1])),
            p_positive=from_json_number(data.get("p_positive")),
            expected_loss=from_json_number(data.get("expected_loss")),
            decision=str(data.get("decision", "CONTINUE")),
            effect=from_json_number(data.get("effect")),
            effect_interval80=(from_json_number(ev[0]), from_json_number(ev[1])),
            expected_loss_stop=from_json_number(data.get("expected_loss_stop")),
            active=bool(data.get("active", True)),
        )


@dataclass(frozen=True)
class Analysis:
    """A round's analysis: arm comparisons and the policy tree's segments.

    Attributes:
        comparisons: One per non-control arm of the universe.
        segments: The leaves of the round's policy tree.
    """

    comparisons: tuple[ArmComparison, ...]
    segments: tuple[Segment, ...]

    def comparison(self, arm: str) -> ArmComparison:
        """The comparison of *arm*.

        Raises:
            KeyError: When *arm* has none (it is the control or unknown).
        """
        for c in self.comparisons:
            if c.arm == arm:
                return c
        raise KeyError(f"no comparison for arm {arm!r}; arms: {[c.arm for c in self.comparisons]}")

    def to_json(self) -> dict[str, Any]:
        """``{"comparisons": [...], "segments": [...]}``."""
        return {"comparisons": [c.to_json() for c in self.comparisons], "segments": [s.to_json() for s in self.segments]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Analysis:
        """Inverse of :meth:`to_json`."""
        return cls(
            comparisons=tuple(ArmComparison.from_json(c) for c in data.get("comparisons", [])),
            segments=tuple(Segment.from_json(s) for s in data.get("segments", [])),
        )


def compare_arms(
    posterior: HurdlePosterior, *, active: Sequence[str], decision_tolerance: float
) -> tuple[ArmComparison, ...]:
    """Compare every non-control arm of the posterior with the control.

    Args:
        posterior: The round's posterior.
        active: Arms still in the plan (others are reported with ``active=False``).
        decision_tolerance: Tolerated expected loss, as a share of the
            control's value per visitor (> 0).

    Returns:
        One :class:`ArmComparison` per non-control arm, in treatments order.

    Raises:
        ValueError: When *decision_tolerance* is not positive.
    """
    if not decision_tolerance > 0:
        raise ValueError(f"decision_tolerance must be > 0, got {decision_tolerance!r}")
    overall = posterior.overall_value_draws
    control = overall[0]
    tolerance = decision_tolerance * float(control.mean())
    out = []
    for k, arm in enumerate(posterior.treatments[1:], start=1):
        diff = overall[k] - control
        with np.errstate(divide="ignore", invalid="ignore"):
            lift = overall[k] / control - 1.0
        loss_ship = float(np.maximum(-diff, 0.0).mean())
        loss_stop = float(np.maximum(diff, 0.0).mean())
        if loss_stop <= tolerance:
            decision = "STOP"
        elif loss_ship <= tolerance:
            decision = "SHIP"
        else:
            decision = "CONTINUE"
        lo, med, hi = np.nanquantile(lift, [0.1, 0.5, 0.9])
        elo, ehi = np.quantile(diff, [0.1, 0.9])
        out.append(
            ArmComparison(
                arm=arm,
                lift=float(med),
                interval80=(float(lo), float(hi)),
                p_positive=float((diff > 0).mean()),
                expected_loss=loss_ship,
                decision=decision,
                effect=float(diff.mean()),
                effect_interval80=(float(elo), float(ehi)),
                expected_loss_stop=loss_stop,
                active=arm in active,
            )
        )
    return tuple(out)
