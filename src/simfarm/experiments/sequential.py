"""The round-by-round loop: :class:`SequentialExperiment`.

One round (``next(exp)`` or ``exp.advance()``):

1. size the round from the schedule; take the current plan (round 0: the
   cold start, or the ``cells`` given at construction);
2. call ``generator(round_idx, plan)`` -> ``(observed, truth | None)`` and
   validate it (:func:`~simfarm.experiments.cumulative.read_round`);
3. fit the hurdle posterior on the CUMULATIVE visitors (continuous
   covariates cut at round 0's quantiles, kept for the whole experiment);
4. fit the policy tree over the active arms; update drop streaks (and refit
   without arms that were just dropped);
5. analyse (arm comparisons, segments), find graduation candidates, build
   the next plan;
6. in sim mode, score against the cumulative truth;
7. commit: only now do the history, data, plan and streaks change, so a
   round that fails at any step leaves the experiment as it was.

Round ``r``'s randomness: the generator draws from ``(seed, r)``; the
posterior from ``(seed, r, 1)``; the stability bootstrap from
``(seed, r, 2)`` (``(seed, r, 3)`` for a refit after a drop). Nothing reads
global random state, so :meth:`~SequentialExperiment.checkpoint` /
:meth:`~SequentialExperiment.restore` continue bit-identically.
"""

from __future__ import annotations

import dataclasses
import inspect
import io
import json
import math
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np

from simfarm.experiments.analysis import Analysis, compare_arms
from simfarm.experiments.cells import Cell, thompson_weights, validate_cell_weights
from simfarm.experiments.contracts import CalibrationTruth, ObservedExperimentData
from simfarm.experiments.cumulative import CumulativeVisitors, RoundBatch, read_round
from simfarm.experiments.model import fit_hurdle_posterior
from simfarm.experiments.policy_tree import CREDIBLE_STABILITY, MAX_DEPTH, TreeFit, fit_policy_tree
from simfarm.experiments.recommend import (
    ExpectedLossRule,
    GraduationCandidate,
    NextRoundPlan,
    cold_start_plan,
    engine_cells,
    still_active,
    update_drop_streaks,
    update_graduation,
)
from simfarm.experiments.schedule import Schedule
from simfarm.experiments.snapshot import CellObservation, Experiment
from simfarm.experiments.strata import quantile_edges, stratify
from simfarm.experiments.truth import assignment_regret, evaluate_against_truth

__all__ = ["Generator", "SequentialExperiment", "sequential_experiment"]

#: ``generator(round_idx, plan) -> (observed, truth)``; truth is None in
#: real-data mode and the mode may not change between rounds. Every visitors
#: frame carries the reserved ``cell`` column (the allocating cell's id) and
#: adaptive generators fill the propensity columns.
Generator = Callable[[int, NextRoundPlan], tuple[ObservedExperimentData, CalibrationTruth | None]]

_CHECKPOINT_FORMAT = "simfarm.experiment.checkpoint/1"
_POSTERIOR, _TREE, _TREE_AFTER_DROP = 1, 2, 3


def _check_fraction(name: str, value: Any, *, low: float, high: float, high_open: bool = False) -> float:
    ok = not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)
    if ok:
        ok = low <= value < high if high_open else low <= value <= high
    if not ok:
        bracket = ")" if high_open else "]"
        raise ValueError(f"{name} must be a number in [{low}, {high}{bracket}, got {value!r}")
    return float(value)


def _check_int(name: str, value: Any, *, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        allowed = f"an integer from {low} to {high}" if high is not None else f"an integer >= {low}"
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return int(value)


class SequentialExperiment:
    """The adaptive experiment, one round per ``next()``; see the module docstring.

    Iterating yields :class:`~simfarm.experiments.snapshot.Experiment`
    snapshots and stops when the schedule is exhausted.

    Args:
        generator: ``generator(round_idx, plan) -> (observed, truth | None)``.
        schedule: Round sizes (``n_rounds``, ``next_round_size(rounds_done)``).
        treatments: The treatments universe, control first (>= 2 distinct).
        cells: Round 0's cells instead of the cold start (weights sum to 1).
        min_control_weight: Control cell share in engine plans, [0, 1).
        min_explore_weight: Explore cell share in engine plans, [0, 1);
            with the control share, below 1.
        max_segment_depth: Policy-tree depth bound, 0..4.
        min_segment_share: Minimum visitor share per segment, [0, 0.5].
        graduation_rule: Default :class:`ExpectedLossRule` ().
        seed: Seed of the loop's random streams (posterior, bootstrap).
        n_draws: Posterior draws per stratum x arm (>= 10).
        n_bootstrap: Bootstrap refits for segment stability (>= 0).
        n_bins: Quantile bins per continuous covariate (1..32).
        thompson_floor: Minimum per-arm probability in optimized leaves,
            [0, 1/K].
        drop_threshold: An arm is dropped after 2 rounds with P(best) under
            this in every leaf, [0, 1).
        decision_tolerance: Expected-loss tolerance of the SHIP/STOP
            decision, as a share of the control's value (> 0).
        covariates: Covariate columns to model (default: all non-reserved).

    Raises:
        ValueError: On any argument outside its range (the message names it).
    """

    def __init__(
        self,
        *,
        generator: Generator,
        schedule: Schedule,
        treatments: Sequence[str],
        cells: Sequence[Cell] | None = None,
        min_control_weight: float = 0.05,
        min_explore_weight: float = 0.05,
        max_segment_depth: int = 3,
        min_segment_share: float = 0.10,
        graduation_rule: ExpectedLossRule | None = None,
        seed: int = 0,
        n_draws: int = 1000,
        n_bootstrap: int = 20,
        n_bins: int = 4,
        thompson_floor: float = 0.01,
        drop_threshold: float = 0.05,
        decision_tolerance: float = 0.005,
        covariates: Sequence[str] | None = None,
    ) -> None:
        treatments = list(treatments)
        if len(treatments) < 2 or len(set(treatments)) != len(treatments) or not all(
            isinstance(t, str) and t for t in treatments
        ):
            raise ValueError(f"treatments must be at least 2 distinct non-empty names, control first, got {treatments}")
        if not callable(getattr(schedule, "next_round_size", None)):
            raise ValueError(f"schedule must have next_round_size(rounds_done), got {type(schedule).__name__}")
        self._min_control = _check_fraction("min_control_weight", min_control_weight, low=0.0, high=1.0, high_open=True)
        self._min_explore = _check_fraction("min_explore_weight", min_explore_weight, low=0.0, high=1.0, high_open=True)
        if self._min_control + self._min_explore >= 1.0:
            raise ValueError(
                "min_control_weight + min_explore_weight must be below 1 to leave room for the optimized cell, "
                f"got {min_control_weight} + {min_explore_weight}"
            )
        self._max_depth = _check_int("max_segment_depth", max_segment_depth, low=0, high=MAX_DEPTH)
        self._min_share = _check_fraction("min_segment_share", min_segment_share, low=0.0, high=0.5)
        self._n_draws = _check_int("n_draws", n_draws, low=10)
        self._n_bootstrap = _check_int("n_bootstrap", n_bootstrap, low=0)
        self._n_bins = _check_int("n_bins", n_bins, low=1, high=32)
        self._floor = _check_fraction("thompson_floor", thompson_floor, low=0.0, high=1.0 / len(treatments))
        self._drop_threshold = _check_fraction("drop_threshold", drop_threshold, low=0.0, high=1.0, high_open=True)
        if isinstance(decision_tolerance, bool) or not isinstance(decision_tolerance, int | float) or not (
            math.isfinite(decision_tolerance) and decision_tolerance > 0
        ):
            raise ValueError(f"decision_tolerance must be a number > 0, got {decision_tolerance!r}")
        self._tolerance = float(decision_tolerance)
        if graduation_rule is not None and not isinstance(graduation_rule, ExpectedLossRule):
            raise ValueError(f"graduation_rule must be an ExpectedLossRule or None, got {type(graduation_rule).__name__}")
        self._rule = graduation_rule or ExpectedLossRule()
        self._generator = generator
        self._schedule = schedule
        self._treatments = treatments
        self._initial_cells = None if cells is None else self._check_cells(cells, "cells")
        self._seed = int(seed)
        self._covariates = None if covariates is None else list(covariates)
        # Committed state: replaced together at the end of a round.
        self._history: list[Experiment] = []
        self._data = CumulativeVisitors(treatments)
        self._plan: NextRoundPlan | None = None
        self._active: list[str] = list(treatments)
        self._drop_streaks: dict[str, int] = {}
        self._graduation_streaks: dict[tuple[str, str], int] = {}
        self._edges: dict[str, tuple[float, ...]] = {}
        #: Wall-clock seconds of the last round's phases.
        self.last_timings: dict[str, float] = {}

    # -- iteration ------------------------------------------------------------
    def __iter__(self) -> SequentialExperiment:
        return self

    def __next__(self) -> Experiment:
        return self.advance()

    def _check_cells(self, cells: Sequence[Cell], what: str) -> tuple[Cell, ...]:
        cells = tuple(cells)
        try:
            validate_cell_weights(cells)
        except ValueError as exc:
            raise ValueError(f"{what}: {exc}") from None
        for c in cells:
            outside = [a for a in c.policy.arms_used() if a not in self._treatments]
            if outside:
                raise ValueError(
                    f"{what}: cell {c.id!r} assigns arm(s) {outside} outside the treatments {self._treatments}"
                )
        return cells

    def _rng(self, round_idx: int, purpose: int) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence((self._seed, round_idx, purpose)))

    def _fit_tree(self, posterior: Any, active: list[str], round_idx: int, purpose: int) -> TreeFit:
        return fit_policy_tree(
            posterior,
            active=active,
            max_depth=self._max_depth,
            min_segment_share=self._min_share,
            n_bootstrap=self._n_bootstrap,
            rng=self._rng(round_idx, purpose),
            allocate=lambda p_best: thompson_weights(p_best, min(self._floor, 1.0 / len(p_best))),
        )

    def advance(self, cells: Sequence[Cell] | None = None) -> Experiment:
        """Run one round and return its snapshot.

        Args:
            cells: This round's cells instead of the plan's (later rounds go
                back to the engine's plans). Weights must sum to 1; the
                engine's minimum weights do not apply.

        Returns:
            The round's :class:`Experiment`.

        Raises:
            StopIteration: When the schedule is exhausted.
            ValueError: On invalid override cells, or round data that breaks
                the contract: a missing ``cell`` column, cell ids outside the
                plan, variant names outside the treatments, a changed
                experiment id / metric / sim-vs-real mode (the history is
                left unchanged).
        """
        round_idx = len(self._history)
        size = self._schedule.next_round_size(round_idx)
        if size is None:
            raise StopIteration
        started = time.perf_counter()
        if self._plan is None:
            plan = cold_start_plan(self._treatments)
            if self._initial_cells is not None:
                plan = dataclasses.replace(plan, cells=self._initial_cells)
        else:
            plan = self._plan
        if cells is not None:
            plan = dataclasses.replace(plan, cells=self._check_cells(cells, "advance(cells=...)"))
        plan = dataclasses.replace(plan, n_visitors=int(size))

        data, truth = self._generator(round_idx, plan)
        generated = time.perf_counter()
        batch = read_round(
            data,
            truth,
            round_idx=round_idx,
            treatments=self._treatments,
            plan_cell_ids=[c.id for c in plan.cells],
            previous=self._data,
            covariates=self._covariates,
        )
        cumulative = self._data.extended(batch)
        # Continuous covariates are cut at round 0's quantiles for the whole
        # experiment: the tree's thresholds are these edges, so every later
        # round assigns arms with constant probabilities inside a stratum
        # (moving edges would let assignment vary with the covariate inside
        # a stratum and bias its estimates).
        edges = self._edges or {name: quantile_edges(values, self._n_bins) for name, values in batch.continuous.items()}
        strata = stratify(
            {name: (cumulative.codes[name], cumulative.categories[name]) for name in cumulative.codes},
            cumulative.continuous,
            n_bins=self._n_bins,
            order=cumulative.covariate_order,
            edges=edges,
        )
        posterior = fit_hurdle_posterior(
            strata,
            cumulative.arm,
            cumulative.converted,
            cumulative.revenue,
            treatments=self._treatments,
            metric=batch.metric,
            n_draws=self._n_draws,
            rng=self._rng(round_idx, _POSTERIOR),
        )
        fitted = time.perf_counter()
        active = list(self._active)
        fit = self._fit_tree(posterior, active, round_idx, _TREE)
        drop_streaks = update_drop_streaks(self._drop_streaks, fit, self._treatments, drop_threshold=self._drop_threshold)
        next_active = still_active(active, drop_streaks)
        if next_active != active:
            fit = self._fit_tree(posterior, next_active, round_idx, _TREE_AFTER_DROP)
            drop_streaks = {a: s for a, s in drop_streaks.items() if a in next_active}
        tree_done = time.perf_counter()
        analysis = Analysis(
            comparisons=compare_arms(posterior, active=next_active, decision_tolerance=self._tolerance),
            segments=fit.tree.leaves,
        )
        graduation_streaks, candidates = update_graduation(
            self._graduation_streaks, self._rule.qualifying(fit, self._treatments)
        )
        next_plan = NextRoundPlan(
            cells=engine_cells(
                fit.tree, next_active, min_control_weight=self._min_control, min_explore_weight=self._min_explore
            ),
            treatments=tuple(next_active),
            tree=fit.tree,
            graduation_candidates=candidates,
        )
        value = cumulative.value()
        truth_comparison = None
        if value is not None and cumulative.contrast is not None:
            truth_comparison = dataclasses.replace(
                evaluate_against_truth(posterior, fit, value, cumulative.contrast),
                assignment_regret_rpv=assignment_regret(value[cumulative.n - batch.n :], batch.arm),
            )
        experiment = Experiment(
            round_idx=round_idx,
            n_rounds=self._schedule.n_rounds,
            treatments=tuple(self._treatments),
            active_treatments=tuple(plan.treatments),
            n_visitors_round=batch.n,
            n_visitors_cumulative=cumulative.n,
            cells_shipped=tuple(plan.cells),
            cell_observations=_cell_observations(batch, plan, self._treatments),
            next_recommendation=next_plan,
            analysis=analysis,
            truth_comparison=truth_comparison,
            posterior=posterior,
            posterior_summary=posterior.summary(),
        )
        finished = time.perf_counter()

        # Commit. Older snapshots drop their posterior draws (memory); the
        # latest keeps them.
        if self._history:
            self._history[-1] = dataclasses.replace(self._history[-1], posterior=None)
        self._history.append(experiment)
        self._data = cumulative
        self._plan = next_plan
        self._active = next_active
        self._drop_streaks = drop_streaks
        self._graduation_streaks = graduation_streaks
        self._edges = edges
        self.last_timings = {
            "round_wall_s": finished - started,
            "generate_s": generated - started,
            "fit_s": fitted - generated,
            "tree_s": tree_done - fitted,
            "analysis_s": finished - tree_done,
        }
        return experiment

    def run_to_completion(self) -> SequentialExperiment:
        """Advance until the schedule ends or a graduation candidate is sustained.

        Returns:
            ``self``.

        Raises:
            ValueError: When the schedule is open-ended (``n_rounds`` is None):
                give it a round count, or call ``advance()`` yourself.
        """
        if self._schedule.n_rounds is None:
            raise ValueError(
                "run_to_completion needs a schedule with n_rounds set; this one is open-ended, "
                "so call advance() in your own loop with your own stopping rule"
            )
        while not self.has_graduation_candidate():
            try:
                self.advance()
            except StopIteration:
                break
        return self

    # -- state ------------------------------------------------------------------
    @property
    def treatments(self) -> list[str]:
        """The treatments universe, control first."""
        return list(self._treatments)

    @property
    def schedule(self) -> Schedule:
        """The round schedule."""
        return self._schedule

    @property
    def history(self) -> list[Experiment]:
        """Completed rounds, oldest first (a copy of the list). Only the latest
        keeps its ``posterior``; snapshots restored from a checkpoint have none."""
        return list(self._history)

    @property
    def latest(self) -> Experiment | None:
        """The last completed round, or None."""
        return self._history[-1] if self._history else None

    @property
    def current_round_idx(self) -> int:
        """Rounds completed = the index of the next round."""
        return len(self._history)

    @property
    def next_recommendation(self) -> NextRoundPlan | None:
        """The plan the next round will run (None before round 0)."""
        return self._plan

    @property
    def cumulative(self) -> CumulativeVisitors:
        """Every visitor of the committed rounds (``.frame()`` gives a DataFrame)."""
        return self._data

    def graduation_candidates(self, sustained_rounds: int | None = None) -> list[GraduationCandidate]:
        """Latest candidates that qualified for at least *sustained_rounds*
        consecutive rounds (default: the rule's ``sustained_rounds``)."""
        need = self._rule.sustained_rounds if sustained_rounds is None else sustained_rounds
        if self._plan is None:
            return []
        return [c for c in self._plan.graduation_candidates if c.sustained_rounds >= need]

    def has_graduation_candidate(self) -> bool:
        """Whether :meth:`graduation_candidates` is non-empty."""
        return bool(self.graduation_candidates())

    def has_credible_segments(self, stability_threshold: float = CREDIBLE_STABILITY) -> bool:
        """Whether a latest segment has stability >= *stability_threshold*."""
        if not self._history:
            return False
        return any(s.stability >= stability_threshold for s in self._history[-1].analysis.segments)

    def dropped_treatments(self) -> list[str]:
        """Arms of the universe no longer active."""
        return [t for t in self._treatments if t not in self._active]

    @property
    def confidence(self) -> Literal["high", "medium", "low"]:
        """``high``: a credible segment and a sustained graduation candidate;
        ``medium``: a credible segment; ``low``: neither."""
        if not self.has_credible_segments():
            return "low"
        return "high" if self.has_graduation_candidate() else "medium"

    @property
    def summary(self) -> str:
        """Plain prose about the series so far (deterministic)."""
        if not self._history:
            return (
                f"Nothing has run yet. Arms: {', '.join(self._treatments)} ({self._treatments[0]} is the control); "
                "each next() runs one round."
            )
        latest = self._history[-1]
        total = f" of {self._schedule.n_rounds}" if self._schedule.n_rounds is not None else ""
        parts = [
            f"After {len(self._history)} round(s){total}, confidence is {self.confidence}. "
            f"Latest {latest.summary_one_line()}",
            latest.next_recommendation.prose_summary,
        ]
        candidates = self.graduation_candidates()
        if candidates:
            pairs = "; ".join(f"{c.treatment} where {c.rule}" for c in candidates)
            parts.append(f"Ready to graduate: {pairs}.")
        dropped = self.dropped_treatments()
        if dropped:
            parts.append(f"Dropped arms: {', '.join(dropped)}.")
        return "\n\n".join(parts)

    # -- checkpoint -------------------------------------------------------------
    def checkpoint(self) -> bytes:
        """Everything needed to continue after the last round, as ``.npz`` bytes.

        Arrays: the cumulative visitors (and truth). JSON (stored as a
        ``uint8`` array): the plan and its tree, active arms, drop and
        graduation streaks, and every round's snapshot. Nothing is pickled.
        """
        arrays, header = self._data.to_arrays()
        state = {
            "format": _CHECKPOINT_FORMAT,
            "seed": self._seed,
            "treatments": self._treatments,
            "data": header,
            "plan": None if self._plan is None else self._plan.to_json(),
            "active": self._active,
            "drop_streaks": self._drop_streaks,
            "graduation_streaks": [[a, r, n] for (a, r), n in self._graduation_streaks.items()],
            "edges": {name: list(e) for name, e in self._edges.items()},
            "history": [e.to_json() for e in self._history],
        }
        arrays = dict(arrays)
        arrays["state"] = np.frombuffer(json.dumps(state).encode(), dtype=np.uint8)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        return buffer.getvalue()

    def restore(self, state: bytes) -> None:
        """Continue from :meth:`checkpoint` bytes (read with ``allow_pickle=False``).

        Raises:
            ValueError: When the bytes are not such a checkpoint, or were
                written by an experiment with other treatments or seed.
        """
        try:
            with np.load(io.BytesIO(state), allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        except Exception as exc:  # corrupt or foreign bytes
            raise ValueError(f"not an experiment checkpoint: {exc}") from None
        if "state" not in arrays:
            raise ValueError("not an experiment checkpoint: it has no 'state' entry")
        meta = json.loads(bytes(arrays.pop("state")).decode())
        if meta.get("format") != _CHECKPOINT_FORMAT:
            raise ValueError(f"checkpoint format {meta.get('format')!r} is not {_CHECKPOINT_FORMAT!r}")
        if meta["treatments"] != self._treatments or int(meta["seed"]) != self._seed:
            raise ValueError(
                f"checkpoint belongs to an experiment with treatments {meta['treatments']} and seed {meta['seed']}, "
                f"not {self._treatments} and seed {self._seed}; restore it into an identically built experiment"
            )
        self._data = CumulativeVisitors.from_arrays(arrays, meta["data"])
        self._plan = None if meta["plan"] is None else NextRoundPlan.from_json(meta["plan"])
        self._active = list(meta["active"])
        self._drop_streaks = {k: int(v) for k, v in meta["drop_streaks"].items()}
        self._graduation_streaks = {(a, r): int(n) for a, r, n in meta["graduation_streaks"]}
        self._edges = {name: tuple(float(x) for x in e) for name, e in meta["edges"].items()}
        self._history = [Experiment.from_json(e) for e in meta["history"]]


def _cell_observations(batch: RoundBatch, plan: NextRoundPlan, treatments: Sequence[str]) -> tuple[CellObservation, ...]:
    out = []
    for i, cell in enumerate(plan.cells):
        members = batch.cell == i
        n = int(members.sum())
        conversions = int(batch.converted[members].sum())
        revenue = float(batch.revenue[members].sum())
        counts = np.bincount(batch.arm[members], minlength=len(treatments))
        total = conversions if batch.metric == "conversion_rate" else revenue
        out.append(
            CellObservation(
                cell_id=cell.id,
                n_visitors=n,
                n_conversions=conversions,
                revenue=revenue,
                arm_counts={t: int(c) for t, c in zip(treatments, counts, strict=True) if c},
                value_per_visitor=total / n if n else math.nan,
            )
        )
    return tuple(out)


def sequential_experiment(**kwargs: Any) -> SequentialExperiment:
    """Build a :class:`SequentialExperiment`: the verb form, same keyword arguments.

    ``generator``, ``schedule`` and ``treatments`` are required; ``cells``,
    ``min_control_weight``, ``min_explore_weight``, ``max_segment_depth``,
    ``min_segment_share``, ``graduation_rule``, ``seed`` and the further
    options (``n_draws``, ``n_bootstrap``, ``n_bins``, ``thompson_floor``,
    ``drop_threshold``, ``decision_tolerance``, ``covariates``) are optional;
    see the class for their meaning and defaults.

    Raises:
        ValueError: On an invalid argument.
        TypeError: On an unknown or missing keyword.
    """
    return SequentialExperiment(**kwargs)


# Show the class's keyword arguments in help() and IDEs.
sequential_experiment.__signature__ = inspect.signature(SequentialExperiment).replace(  # type: ignore[attr-defined]
    return_annotation=SequentialExperiment
)
