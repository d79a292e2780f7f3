"""The ``experiment`` workload: one sim-mode sequential experiment per job.

A job's params are one ``[[experiments]]`` block of the spec::

    [[experiments]]
    scenario = "reversal"            # required: one of SCENARIOS
    treatments = ["control", "a"]    # default: control + treatment (5 arms for many_arms)
    rounds = 5                       # or a [experiments.schedule] table
    visitors_per_round = 4000
    effect_scale = 1.0
    baseline_rate = 0.05
    # ... and the loop's keyword arguments by the same names

Each step is one round: a :class:`~simfarm.records.Record` whose metrics
are a flat row (truth comparison, coverage, per-arm decisions ...), whose
timings are wall-clock phases, and whose snapshot is the round JSON.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from simfarm.errors import SpecError
from simfarm.experiments.cells import cell_from_json, validate_cell_weights
from simfarm.experiments.contracts import METRICS
from simfarm.experiments.recommend import ExpectedLossRule
from simfarm.experiments.scenarios import SCENARIOS, default_treatments, make_generator
from simfarm.experiments.schedule import (
    ExplicitSchedule,
    FixedSchedule,
    GeometricSchedule,
    schedule_from_json,
)
from simfarm.experiments.sequential import SequentialExperiment
from simfarm.experiments.snapshot import Experiment
from simfarm.experiments.truth import COVERAGE_LEVELS
from simfarm.params import ParamReader
from simfarm.records import Record

__all__ = ["DEFAULTS", "ExperimentWorkload", "build", "record_metrics", "steps_for", "validate"]

#: Defaults of the optional keys (the loop's own defaults where they exist).
DEFAULTS: dict[str, Any] = {
    "rounds": 5,
    "visitors_per_round": 4000,
    "effect_scale": 1.0,
    "baseline_rate": 0.05,
    "metric": "revenue_per_visitor",
    "mean_order_value": 40.0,
    "spend_sigma": 0.8,
    "min_control_weight": 0.05,
    "min_explore_weight": 0.05,
    "max_segment_depth": 3,
    "min_segment_share": 0.10,
    "n_draws": 1000,
    "n_bootstrap": 20,
    "n_bins": 4,
    "thompson_floor": 0.01,
    "drop_threshold": 0.05,
    "decision_tolerance": 0.005,
    "stop_on_graduation": False,
}
_RULE_DEFAULTS = ExpectedLossRule().to_json()
#: Params passed through by name to make_generator / SequentialExperiment.
_GENERATOR_KEYS = ("effect_scale", "baseline_rate", "metric", "mean_order_value", "spend_sigma")
_LOOP_KEYS = (
    "min_control_weight",
    "min_explore_weight",
    "max_segment_depth",
    "min_segment_share",
    "n_draws",
    "n_bootstrap",
    "n_bins",
    "thompson_floor",
    "drop_threshold",
    "decision_tolerance",
)


def _fraction_below_one(r: ParamReader, key: str) -> float:
    value = r.number(key, DEFAULTS[key], minimum=0.0)
    if value >= 1.0:
        raise r.fail(key, "a finite number >= 0.0 and < 1.0", value)
    return value


def _read_schedule(r: ParamReader) -> dict[str, Any]:
    if not r.has("schedule"):
        return {
            "rounds": r.integer("rounds", DEFAULTS["rounds"], minimum=1),
            "visitors_per_round": r.integer("visitors_per_round", DEFAULTS["visitors_per_round"], minimum=1),
        }
    for key in ("rounds", "visitors_per_round"):
        if r.has(key):
            raise SpecError(f"{r.path(key)}: give either a schedule table or rounds/visitors_per_round, not both")
    sub = r.table_reader("schedule", required=True)
    assert sub is not None
    kind = sub.choice("kind", ["fixed", "geometric", "explicit"])
    if kind == "fixed":
        out = {
            "kind": kind,
            "per_round": sub.integer("per_round", minimum=1),
            "n_rounds": sub.integer("n_rounds", minimum=1),
        }
    elif kind == "geometric":
        out = {
            "kind": kind,
            "initial": sub.integer("initial", minimum=1),
            "growth": sub.number("growth", minimum=0.0, exclusive_minimum=True),
            "n_rounds": sub.integer("n_rounds", minimum=1),
        }
        try:
            schedule_from_json(out).next_round_size(out["n_rounds"] - 1)
        except ValueError as exc:
            raise SpecError(f"{sub.where}: {exc}") from None
    else:
        sizes = sub.raw("sizes")
        if not isinstance(sizes, list) or not sizes:
            raise sub.fail("sizes", "a non-empty list of positive integers", sizes)
        out = {"kind": kind, "sizes": [sub.check_integer("sizes", s, minimum=1) for s in sizes]}
    sub.finish()
    return {"schedule": out}


def _read_rule(r: ParamReader) -> dict[str, Any]:
    sub = r.table_reader("graduation_rule")
    if sub is None:
        return dict(_RULE_DEFAULTS)
    out = {
        "max_relative_loss": sub.number(
            "max_relative_loss", _RULE_DEFAULTS["max_relative_loss"], minimum=0.0, exclusive_minimum=True
        ),
        "min_prob_beats_control": sub.number(
            "min_prob_beats_control", _RULE_DEFAULTS["min_prob_beats_control"], minimum=0.0, maximum=1.0
        ),
        "min_stability": sub.number("min_stability", _RULE_DEFAULTS["min_stability"], minimum=0.0, maximum=1.0),
        "sustained_rounds": sub.integer("sustained_rounds", _RULE_DEFAULTS["sustained_rounds"], minimum=1),
    }
    sub.finish()
    return out


def _read_cells(r: ParamReader, treatments: list[str]) -> list[dict[str, Any]] | None:
    if not r.has("cells"):
        return None
    raw = r.raw("cells")
    if not isinstance(raw, list) or not raw:
        raise r.fail("cells", "a non-empty list of cell tables", raw)
    out = []
    for i, item in enumerate(raw):
        cr = ParamReader(item, f"{r.path('cells')}[{i}]")
        pr = cr.table_reader("policy", required=True)
        assert pr is not None
        kind = pr.choice("kind", ["baseline", "uniform"])
        if kind == "baseline":
            policy: dict[str, Any] = {"kind": kind, "arm": pr.choice("arm", treatments)}
        else:
            arms = pr.string_list("arms", list(treatments))
            outside = [a for a in arms if a not in treatments]
            if outside:
                raise pr.fail("arms", f"a list of arms among {treatments}", arms)
            policy = {"kind": kind, "arms": arms}
        pr.finish()
        cell = {"id": cr.string("id"), "weight": cr.number("weight", minimum=0.0, maximum=1.0), "policy": policy}
        cr.finish()
        out.append(cell)
    try:
        validate_cell_weights([cell_from_json(c) for c in out])
    except ValueError as exc:
        raise SpecError(f"{r.path('cells')}: {exc}") from None
    return out


def validate(params: dict[str, Any], where: str) -> dict[str, Any]:
    """Check one ``[[experiments]]`` block and fill in its defaults.

    Only ``scenario`` is required. ``treatments`` defaults to
    ``["control", "treatment"]`` (``["control", "a", "b", "c", "d"]`` for
    ``many_arms``); ``rounds = 5`` x ``visitors_per_round = 4000`` unless a
    ``schedule`` table (``kind = "fixed" | "geometric" | "explicit"`` and its
    fields) is given instead. See :data:`DEFAULTS` for the rest.

    Args:
        params: The block as parsed from TOML.
        where: Its key path for messages, e.g. ``"experiments[1]"``.

    Returns:
        The normalised params (every key present; ``cells`` and
        ``covariates`` only when given).

    Raises:
        SpecError: Naming the key, its value and what is allowed; unknown
            keys are errors with a close-match hint.
    """
    r = ParamReader(params, where)
    scenario = r.choice("scenario", SCENARIOS)
    treatments = r.string_list("treatments", list(default_treatments(scenario)), min_length=2)
    out: dict[str, Any] = {"scenario": scenario, "treatments": treatments}
    out.update(_read_schedule(r))
    out["effect_scale"] = r.number("effect_scale", DEFAULTS["effect_scale"], minimum=0.0, maximum=100.0)
    baseline = r.number("baseline_rate", DEFAULTS["baseline_rate"], minimum=0.0, exclusive_minimum=True)
    if baseline >= 1.0:
        raise r.fail("baseline_rate", "a finite number > 0.0 and < 1.0", baseline)
    out["baseline_rate"] = baseline
    out["metric"] = r.choice("metric", METRICS, DEFAULTS["metric"])
    out["mean_order_value"] = r.number("mean_order_value", DEFAULTS["mean_order_value"], minimum=0.0, exclusive_minimum=True)
    out["spend_sigma"] = r.number("spend_sigma", DEFAULTS["spend_sigma"], minimum=0.0, exclusive_minimum=True, maximum=5.0)
    out["min_control_weight"] = _fraction_below_one(r, "min_control_weight")
    out["min_explore_weight"] = _fraction_below_one(r, "min_explore_weight")
    if out["min_control_weight"] + out["min_explore_weight"] >= 1.0:
        raise SpecError(
            f"{r.path('min_control_weight')} + min_explore_weight must be below 1 to leave room for the "
            f"optimized cell, got {out['min_control_weight']} + {out['min_explore_weight']}"
        )
    out["max_segment_depth"] = r.integer("max_segment_depth", DEFAULTS["max_segment_depth"], minimum=0, maximum=4)
    out["min_segment_share"] = r.number("min_segment_share", DEFAULTS["min_segment_share"], minimum=0.0, maximum=0.5)
    out["graduation_rule"] = _read_rule(r)
    out["n_draws"] = r.integer("n_draws", DEFAULTS["n_draws"], minimum=10, maximum=100_000)
    out["n_bootstrap"] = r.integer("n_bootstrap", DEFAULTS["n_bootstrap"], minimum=0, maximum=1000)
    out["n_bins"] = r.integer("n_bins", DEFAULTS["n_bins"], minimum=1, maximum=32)
    out["thompson_floor"] = r.number(
        "thompson_floor", DEFAULTS["thompson_floor"], minimum=0.0, maximum=round(1.0 / len(treatments), 12)
    )
    out["drop_threshold"] = _fraction_below_one(r, "drop_threshold")
    out["decision_tolerance"] = r.number(
        "decision_tolerance", DEFAULTS["decision_tolerance"], minimum=0.0, exclusive_minimum=True, maximum=1.0
    )
    out["stop_on_graduation"] = r.boolean("stop_on_graduation", DEFAULTS["stop_on_graduation"])
    cells = _read_cells(r, treatments)
    if cells is not None:
        out["cells"] = cells
    if r.has("covariates"):
        out["covariates"] = r.string_list("covariates", min_length=0)
    r.finish()
    return out


def _schedule(p: Mapping[str, Any]) -> FixedSchedule | GeometricSchedule | ExplicitSchedule:
    """The schedule of validated params (always bounded)."""
    if "schedule" in p:
        return schedule_from_json(p["schedule"])
    return FixedSchedule(int(p["visitors_per_round"]), int(p["rounds"]))


def steps_for(params: dict[str, Any]) -> int:
    """Number of rounds (steps) a job with *params* runs at most.

    Raises:
        SpecError: When *params* do not validate.
    """
    n = _schedule(validate(dict(params), "experiment")).n_rounds
    assert n is not None  # validated schedules are bounded
    return int(n)


def _num(x: float) -> float:
    return float(x) if x is not None else math.nan


def record_metrics(experiment: Experiment, loop: SequentialExperiment) -> dict[str, Any]:
    """The flat metrics row of one round (see docs/experiments.md for columns).

    Args:
        experiment: The round's snapshot.
        loop: The experiment it came from (for graduation and drops).

    Returns:
        A dict of scalars; the same keys every round of a job.
    """
    tc = experiment.truth_comparison
    segments = experiment.analysis.segments
    graduated = loop.graduation_candidates()
    row: dict[str, Any] = {
        "round": experiment.round_idx,
        "visitors": experiment.n_visitors_round,
        "cumulative_visitors": experiment.n_visitors_cumulative,
        "arms_active": len(experiment.next_recommendation.treatments),
        "n_segments": len(segments),
        "n_credible_segments": sum(1 for s in segments if s.credible),
        "cate_rmse": math.nan if tc is None else tc.cate_rmse,
        "policy_accuracy": math.nan if tc is None else tc.policy_accuracy,
        "rpv_policy": math.nan if tc is None else tc.rpv_policy,
        "rpv_uniform": math.nan if tc is None else tc.rpv_uniform,
        "rpv_oracle": math.nan if tc is None else tc.rpv_oracle,
        "oracle_gap_rpv": math.nan if tc is None else tc.oracle_gap_rpv,
        "assignment_regret_rpv": math.nan if tc is None else tc.assignment_regret_rpv,
    }
    for level in COVERAGE_LEVELS:
        row[f"coverage_{round(level * 100)}"] = math.nan if tc is None else tc.coverage_fraction(level)
    for c in experiment.analysis.comparisons:
        row[f"decision_{c.arm}"] = c.decision
        row[f"lift_{c.arm}"] = _num(c.lift)
        row[f"lift_lo80_{c.arm}"] = _num(c.interval80[0])
        row[f"lift_hi80_{c.arm}"] = _num(c.interval80[1])
        row[f"p_positive_{c.arm}"] = _num(c.p_positive)
        row[f"expected_loss_{c.arm}"] = _num(c.expected_loss)
        row[f"active_{c.arm}"] = c.arm in experiment.next_recommendation.treatments
    row["graduated"] = bool(graduated)
    row["graduated_arms"] = ",".join(sorted({g.treatment for g in graduated}))
    row["n_graduation_candidates"] = len(experiment.next_recommendation.graduation_candidates)
    row["dropped_arms"] = ",".join(t for t in experiment.treatments if t not in experiment.next_recommendation.treatments)
    row["confidence"] = loop.confidence
    return row


class ExperimentWorkload:
    """The farm's view of a :class:`SequentialExperiment`: an iterator of Records.

    Attributes:
        params: The validated params.
        seed: The job seed (generator rounds and the loop draw from it).
        experiment: The underlying loop.
        n_steps: Rounds the job runs at most (it may stop early with
            ``stop_on_graduation``).
    """

    def __init__(self, params: dict[str, Any], seed: int) -> None:
        p = validate(dict(params), "experiment")
        self.params = p
        self.seed = int(seed)
        generator = make_generator(
            p["scenario"], treatments=p["treatments"], seed=self.seed, **{k: p[k] for k in _GENERATOR_KEYS}
        )
        self.experiment = SequentialExperiment(
            generator=generator,
            schedule=_schedule(p),
            treatments=p["treatments"],
            cells=[cell_from_json(c) for c in p["cells"]] if "cells" in p else None,
            graduation_rule=ExpectedLossRule(**p["graduation_rule"]),
            seed=self.seed,
            covariates=p.get("covariates"),
            **{k: p[k] for k in _LOOP_KEYS},
        )
        self.n_steps: int = steps_for(p)

    def __iter__(self) -> ExperimentWorkload:
        return self

    def __next__(self) -> Record:
        """Run the next round and return its Record.

        Raises:
            StopIteration: When the schedule is exhausted, or a graduation
                candidate is sustained and ``stop_on_graduation`` is set.
        """
        if self.params["stop_on_graduation"] and self.experiment.has_graduation_candidate():
            raise StopIteration
        experiment = next(self.experiment)
        return Record(
            step=experiment.round_idx,
            metrics=record_metrics(experiment, self.experiment),
            timings=dict(self.experiment.last_timings),
            snapshot=experiment.to_json(),
        )

    def checkpoint(self) -> bytes:
        """The loop's checkpoint (``.npz`` bytes, nothing pickled)."""
        return self.experiment.checkpoint()

    def restore(self, state: bytes) -> None:
        """Continue after the round recorded in *state*.

        Raises:
            ValueError: When *state* is not a checkpoint of this experiment.
        """
        self.experiment.restore(state)


def build(params: dict[str, Any], seed: int) -> ExperimentWorkload:
    """Build the ``experiment`` workload of one job (see :func:`validate` for params).

    Raises:
        SpecError: When *params* do not validate.
    """
    return ExperimentWorkload(params, seed)
