"""Sim-mode sequential adaptive experiments (numpy; no Ray).

A :class:`SequentialExperiment` runs round by round: it sizes a round from
its schedule, hands the current plan to a generator, fits a conjugate
hurdle posterior on the cumulative visitors, fits a policy tree, analyses,
recommends the next round's cells and, in sim mode, scores itself against
the truth. Quick start::

    from simfarm.experiments import FixedSchedule, make_generator, sequential_experiment

    gen = make_generator("reversal", treatments=["control", "treatment"], seed=1)
    exp = sequential_experiment(generator=gen, schedule=FixedSchedule(4000, 5),
                                treatments=["control", "treatment"], seed=1)
    for snapshot in exp:
        print(snapshot.summary_one_line())

The farm runs it as the ``experiment`` workload (:mod:`.workload`).
"""

from simfarm.experiments.analysis import Analysis, ArmComparison, compare_arms
from simfarm.experiments.cells import (
    Assignment,
    BaselinePolicy,
    Cell,
    TreePolicy,
    UniformPolicy,
    assign_visitors,
    cell_from_json,
    policy_from_json,
    thompson_weights,
    validate_cell_weights,
)
from simfarm.experiments.contracts import (
    METRICS,
    RESERVED_CELL_COLUMN,
    CalibrationTruth,
    ObservedExperimentData,
    VariantData,
    propensity_columns,
)
from simfarm.experiments.model import HurdlePosterior, fit_hurdle_posterior
from simfarm.experiments.policy_tree import LeafNode, PolicyTree, Segment, SplitNode, TreeFit, fit_policy_tree
from simfarm.experiments.recommend import (
    ExpectedLossRule,
    GraduationCandidate,
    NextRoundPlan,
    cold_start_plan,
)
from simfarm.experiments.scenarios import SCENARIOS, ScenarioGenerator, default_treatments, make_generator
from simfarm.experiments.schedule import (
    ExplicitSchedule,
    FixedSchedule,
    GeometricSchedule,
    Schedule,
    schedule_from_json,
)
from simfarm.experiments.sequential import Generator, SequentialExperiment, sequential_experiment
from simfarm.experiments.snapshot import SCHEMA, CellObservation, Experiment, snapshot_from_json
from simfarm.experiments.strata import Covariate, Strata, stratify
from simfarm.experiments.truth import COVERAGE_LEVELS, CoverageRow, TruthComparison, evaluate_against_truth

__all__ = [
    "COVERAGE_LEVELS",
    "METRICS",
    "RESERVED_CELL_COLUMN",
    "SCENARIOS",
    "SCHEMA",
    "Analysis",
    "ArmComparison",
    "Assignment",
    "BaselinePolicy",
    "CalibrationTruth",
    "Cell",
    "CellObservation",
    "Covariate",
    "CoverageRow",
    "ExpectedLossRule",
    "Experiment",
    "ExplicitSchedule",
    "FixedSchedule",
    "Generator",
    "GeometricSchedule",
    "GraduationCandidate",
    "HurdlePosterior",
    "LeafNode",
    "NextRoundPlan",
    "ObservedExperimentData",
    "PolicyTree",
    "ScenarioGenerator",
    "Schedule",
    "Segment",
    "SequentialExperiment",
    "SplitNode",
    "Strata",
    "TreeFit",
    "TreePolicy",
    "TruthComparison",
    "UniformPolicy",
    "VariantData",
    "assign_visitors",
    "cell_from_json",
    "cold_start_plan",
    "compare_arms",
    "default_treatments",
    "evaluate_against_truth",
    "fit_hurdle_posterior",
    "fit_policy_tree",
    "make_generator",
    "policy_from_json",
    "propensity_columns",
    "schedule_from_json",
    "sequential_experiment",
    "snapshot_from_json",
    "stratify",
    "thompson_weights",
    "validate_cell_weights",
]
