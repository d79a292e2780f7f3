"""A round's snapshot (:class:`Experiment`) and its JSON form.

The JSON shape (schema ``simfarm.experiment.round/1``) is the contract with
:mod:`simfarm.render`: the farm writes it to ``snapshots/<job>/round-NNN.json``.
:func:`snapshot_from_json` reads it back into an :class:`Experiment` with
the same attribute names as a live one -- only ``posterior`` is None (the
draws are not stored) -- so consumers can take either.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from simfarm.experiments.analysis import Analysis
from simfarm.experiments.cells import Cell, cell_from_json
from simfarm.experiments.jsonvalues import from_json_number, to_json_number
from simfarm.experiments.model import HurdlePosterior
from simfarm.experiments.recommend import NextRoundPlan
from simfarm.experiments.truth import TruthComparison
from simfarm.records import json_safe

__all__ = ["SCHEMA", "CellObservation", "Experiment", "snapshot_from_json"]

SCHEMA = "simfarm.experiment.round/1"


@dataclass(frozen=True)
class CellObservation:
    """What one cell of the shipped plan saw this round (observed, not modelled).

    Attributes:
        cell_id: The cell.
        n_visitors: Visitors it allocated this round.
        n_conversions: Of whom converted.
        revenue: Their total revenue.
        arm_counts: Visitors per arm.
        value_per_visitor: Observed revenue (or conversions) per visitor;
            NaN for an empty cell.
    """

    cell_id: str
    n_visitors: int
    n_conversions: int
    revenue: float
    arm_counts: dict[str, int]
    value_per_visitor: float

    def to_json(self) -> dict[str, Any]:
        """Plain dict of the fields."""
        return {
            "cell_id": self.cell_id,
            "n_visitors": int(self.n_visitors),
            "n_conversions": int(self.n_conversions),
            "revenue": float(self.revenue),
            "arm_counts": {k: int(v) for k, v in self.arm_counts.items()},
            "value_per_visitor": to_json_number(self.value_per_visitor),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CellObservation:
        """Inverse of :meth:`to_json`."""
        return cls(
            cell_id=str(data["cell_id"]),
            n_visitors=int(data["n_visitors"]),
            n_conversions=int(data["n_conversions"]),
            revenue=float(data["revenue"]),
            arm_counts={k: int(x) for k, x in data.get("arm_counts", {}).items()},
            value_per_visitor=from_json_number(data.get("value_per_visitor")),
        )


@dataclass(frozen=True, eq=False)
class Experiment:
    """The state of the experiment after one round.

    Attributes:
        round_idx: 0-based round index.
        n_rounds: The schedule's round count, or None when open-ended.
        treatments: The treatments universe, control first.
        active_treatments: Arms the round ran with (not dropped).
        n_visitors_round: Visitors this round.
        n_visitors_cumulative: Visitors over all rounds so far.
        cells_shipped: The cells the round ran with.
        cell_observations: Per shipped cell, what it saw this round.
        next_recommendation: The plan for the next round (with the tree).
        analysis: Arm comparisons and segments.
        truth_comparison: Scores against the truth (sim mode), else None.
        posterior: The fitted posterior (live snapshots only; None when read
            from JSON).
        posterior_summary: JSON-able summary of the posterior.
    """

    round_idx: int
    n_rounds: int | None
    treatments: tuple[str, ...]
    active_treatments: tuple[str, ...]
    n_visitors_round: int
    n_visitors_cumulative: int
    cells_shipped: tuple[Cell, ...]
    cell_observations: tuple[CellObservation, ...]
    next_recommendation: NextRoundPlan
    analysis: Analysis
    truth_comparison: TruthComparison | None
    posterior: HurdlePosterior | None = None
    posterior_summary: dict[str, Any] = field(default_factory=dict)

    def summary_one_line(self) -> str:
        """One deterministic sentence about the round."""
        total = f"/{self.n_rounds}" if self.n_rounds is not None else ""
        decisions = ", ".join(f"{c.arm} {c.decision} ({c.lift:+.1%})" for c in self.analysis.comparisons)
        text = (
            f"round {self.round_idx + 1}{total}: {self.n_visitors_cumulative:,} visitors so far; "
            f"{decisions or 'no arms to compare'}; {len(self.analysis.segments)} segment(s)"
        )
        if self.truth_comparison is not None:
            text += (
                f"; regret {self.truth_comparison.oracle_gap_rpv:.4g} per visitor, "
                f"policy accuracy {self.truth_comparison.policy_accuracy:.0%}"
            )
        return text + "."

    def to_json(self) -> dict[str, Any]:
        """The round snapshot dict (strict JSON: NaN/inf become null)."""
        return json_safe(
            {
                "schema": SCHEMA,
                "round_idx": int(self.round_idx),
                "n_rounds": self.n_rounds,
                "treatments": list(self.treatments),
                "active_treatments": list(self.active_treatments),
                "n_visitors_round": int(self.n_visitors_round),
                "n_visitors_cumulative": int(self.n_visitors_cumulative),
                "cells_shipped": [c.to_json() for c in self.cells_shipped],
                "next_recommendation": self.next_recommendation.to_json(),
                "analysis": self.analysis.to_json(),
                "truth_comparison": None if self.truth_comparison is None else self.truth_comparison.to_json(),
                "cell_observations": [o.to_json() for o in self.cell_observations],
                "posterior": dict(self.posterior_summary),
            }
        )

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Experiment:
        """Rebuild a snapshot from :meth:`to_json` output (``posterior`` is None).

        Unknown keys are ignored. The shipped cells' tree policies carry no
        tree (it belongs to the previous round's recommendation).

        Raises:
            ValueError: When ``schema`` is not ``simfarm.experiment.round/1``.
        """
        if data.get("schema") != SCHEMA:
            raise ValueError(f"expected a snapshot with schema {SCHEMA!r}, got {data.get('schema')!r}")
        truth = data.get("truth_comparison")
        return cls(
            round_idx=int(data["round_idx"]),
            n_rounds=None if data.get("n_rounds") is None else int(data["n_rounds"]),
            treatments=tuple(data["treatments"]),
            active_treatments=tuple(data.get("active_treatments", data["treatments"])),
            n_visitors_round=int(data.get("n_visitors_round", 0)),
            n_visitors_cumulative=int(data.get("n_visitors_cumulative", 0)),
            cells_shipped=tuple(cell_from_json(c) for c in data.get("cells_shipped", [])),
            cell_observations=tuple(CellObservation.from_json(o) for o in data.get("cell_observations", [])),
            next_recommendation=NextRoundPlan.from_json(data["next_recommendation"]),
            analysis=Analysis.from_json(data.get("analysis", {})),
            truth_comparison=None if truth is None else TruthComparison.from_json(truth),
            posterior=None,
            posterior_summary=dict(data.get("posterior") or {}),
        )


def snapshot_from_json(data: Mapping[str, Any]) -> Experiment:
    """Read a round snapshot dict back as an :class:`Experiment` (see :meth:`Experiment.from_json`)."""
    return Experiment.from_json(data)
