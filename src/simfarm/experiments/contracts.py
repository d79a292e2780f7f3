"""The data a round hands to the loop: observed visitors and (sim mode) the truth.

A generator returns one :class:`ObservedExperimentData` per round -- one
:class:`VariantData` per arm, control first -- and, when it simulates, a
:class:`CalibrationTruth` whose per-visitor arrays line up with the rows of
the round's variant frames concatenated in order.

Visitors frames carry the columns named in :data:`RESERVED_COLUMNS`, the
propensity columns (:func:`propensity_columns`) and, besides, any number of
covariates: every other column is a covariate of the model.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

__all__ = [
    "METRICS",
    "RESERVED_CELL_COLUMN",
    "RESERVED_COLUMNS",
    "CalibrationTruth",
    "ObservedExperimentData",
    "VariantData",
    "is_reserved_column",
    "propensity_columns",
]

#: Outcome metrics the model knows. ``revenue_per_visitor`` values an arm by
#: p * m (conversion probability times mean order value); ``conversion_rate``
#: by p alone.
METRICS = ("revenue_per_visitor", "conversion_rate")

#: The column that records which cell of the plan allocated each visitor.
RESERVED_CELL_COLUMN = "cell"

#: Columns with a fixed meaning; they are never covariates.
RESERVED_COLUMNS = ("visitor_id", "experiment_id", "variant", "converted", "revenue", RESERVED_CELL_COLUMN)

_PROPENSITY = re.compile(r"^propensity(_\d+)?$")


def propensity_columns(n_arms: int) -> list[str]:
    """Names of the propensity columns for an experiment with *n_arms* arms.

    Args:
        n_arms: Number of arms in the treatments universe, control included.

    Returns:
        ``["propensity"]`` (the probability of the treatment) when
        ``n_arms == 2``; ``["propensity_1", ..., "propensity_{K-1}"]`` (one per
        non-control arm) when ``n_arms >= 3``; ``[]`` for a single arm.

    Raises:
        ValueError: When *n_arms* is below 1.
    """
    if n_arms < 1:
        raise ValueError(f"n_arms must be at least 1, got {n_arms}")
    if n_arms == 1:
        return []
    if n_arms == 2:
        return ["propensity"]
    return [f"propensity_{k}" for k in range(1, n_arms)]


def is_reserved_column(name: str) -> bool:
    """Whether *name* is a reserved column (so not a covariate)."""
    return name in RESERVED_COLUMNS or bool(_PROPENSITY.match(name))


@dataclass(frozen=True, eq=False)
class VariantData:
    """The visitors one arm received in one round (or cumulatively).

    Attributes:
        name: The arm's name (one of the experiment's treatments).
        visitors: One row per visitor: ``visitor_id, experiment_id, variant,
            converted, revenue``, covariates, ``cell`` and the propensity
            columns.
        n_visitors: ``len(visitors)``.
        n_conversions: Number of rows with ``converted`` true.
        total_revenue: Sum of ``revenue``.

    Raises:
        ValueError: When *name* is empty or *n_visitors* differs from the
            number of rows.
    """

    name: str
    visitors: pd.DataFrame
    n_visitors: int
    n_conversions: int
    total_revenue: float

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"VariantData.name must be a non-empty string, got {self.name!r}")
        if int(self.n_visitors) != len(self.visitors):
            raise ValueError(
                f"variant {self.name!r}: n_visitors is {self.n_visitors} but the visitors frame "
                f"has {len(self.visitors)} rows; build it with VariantData.from_visitors()"
            )

    @classmethod
    def from_visitors(cls, name: str, visitors: pd.DataFrame) -> VariantData:
        """Build a variant and derive its summary counts from *visitors*.

        Raises:
            ValueError: When the frame lacks ``converted`` or ``revenue``.
        """
        missing = [c for c in ("converted", "revenue") if c not in visitors.columns]
        if missing:
            raise ValueError(f"variant {name!r}: visitors frame lacks column(s) {missing}")
        return cls(
            name=name,
            visitors=visitors,
            n_visitors=len(visitors),
            n_conversions=int(np.count_nonzero(visitors["converted"].to_numpy())),
            total_revenue=float(visitors["revenue"].to_numpy(dtype=float).sum()),
        )


@dataclass(frozen=True, eq=False)
class ObservedExperimentData:
    """One round of observed data: every arm's visitors, control first.

    Attributes:
        experiment_id: Identity of the experiment; constant across rounds.
        metric: One of :data:`METRICS`; constant across rounds.
        variants: One entry per arm, the control arm first.

    Raises:
        ValueError: On an unknown metric, no variants, or duplicate names.
    """

    experiment_id: str
    metric: str
    variants: Sequence[VariantData]

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {self.metric!r}")
        if not self.variants:
            raise ValueError("ObservedExperimentData needs at least one variant (the control)")
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"variant names must be unique, got {names}")

    @property
    def treatments(self) -> list[str]:
        """The variant names in order (control first)."""
        return [v.name for v in self.variants]

    @property
    def n_visitors(self) -> int:
        """Total visitors over all variants."""
        return sum(int(v.n_visitors) for v in self.variants)

    def visitors(self) -> pd.DataFrame:
        """All variants' rows concatenated in order (the truth arrays' row order)."""
        return pd.concat([v.visitors for v in self.variants], ignore_index=True)


def _as_float_arrays(values: Sequence[np.ndarray], what: str) -> tuple[np.ndarray, ...]:
    arrays = tuple(np.asarray(v, dtype=np.float64).reshape(-1) for v in values)
    lengths = {len(a) for a in arrays}
    if len(lengths) > 1:
        raise ValueError(f"CalibrationTruth.{what} arrays differ in length: {sorted(lengths)}")
    return arrays


@dataclass(frozen=True, eq=False)
class CalibrationTruth:
    """The ground truth of one simulated round, per visitor.

    Every array has one entry per visitor, in the row order of the round's
    variant frames concatenated (``ObservedExperimentData.visitors()``).
    Per-arm lists follow *arms* (control first); they give each visitor's
    potential outcome under every arm, not only the arm received.

    Attributes:
        effect: Population-average effect of the first non-control arm
            (mean of ``contrast_cate_per_visitor[0]``; 0.0 with one arm).
        p_per_visitor: Conversion probability under each arm.
        m_per_visitor: Mean order value given conversion under each arm.
        contrast_cate_per_visitor: Per non-control arm k, the visitor's
            effect ``p_k m_k - p_0 m_0`` (``p_k - p_0`` when *metric* is
            ``conversion_rate``).
        arms: Names of the arms the lists follow; ``()`` means the
            experiment's treatments universe, in order.
        metric: The metric the contrasts are on.

    Raises:
        ValueError: When list lengths disagree with each other or with
            *arms*, or arrays differ in length.
    """

    effect: float
    p_per_visitor: Sequence[np.ndarray]
    m_per_visitor: Sequence[np.ndarray]
    contrast_cate_per_visitor: Sequence[np.ndarray]
    arms: tuple[str, ...] = ()
    metric: str = "revenue_per_visitor"
    _n: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        p = _as_float_arrays(self.p_per_visitor, "p_per_visitor")
        m = _as_float_arrays(self.m_per_visitor, "m_per_visitor")
        c = _as_float_arrays(self.contrast_cate_per_visitor, "contrast_cate_per_visitor")
        if len(p) != len(m) or not p:
            raise ValueError(
                f"CalibrationTruth needs one p and one m array per arm, got {len(p)} p and {len(m)} m"
            )
        if len(c) != len(p) - 1:
            raise ValueError(
                f"CalibrationTruth needs one contrast array per non-control arm ({len(p) - 1}), got {len(c)}"
            )
        if self.arms and len(self.arms) != len(p):
            raise ValueError(f"CalibrationTruth.arms names {len(self.arms)} arms but has {len(p)} p arrays")
        if self.metric not in METRICS:
            raise ValueError(f"CalibrationTruth.metric must be one of {METRICS}, got {self.metric!r}")
        lengths = {len(a) for a in (*p, *m, *c)}
        if len(lengths) > 1:
            raise ValueError(f"CalibrationTruth arrays differ in length: {sorted(lengths)}")
        object.__setattr__(self, "p_per_visitor", p)
        object.__setattr__(self, "m_per_visitor", m)
        object.__setattr__(self, "contrast_cate_per_visitor", c)
        object.__setattr__(self, "arms", tuple(self.arms))
        object.__setattr__(self, "_n", len(p[0]))

    @property
    def n_visitors(self) -> int:
        """Number of visitors the arrays cover."""
        return self._n

    def value_per_visitor(self) -> np.ndarray:
        """Each visitor's expected metric value under each arm, ``(n, K)``.

        ``p * m`` for ``revenue_per_visitor``, ``p`` for ``conversion_rate``.
        """
        p = np.stack(self.p_per_visitor, axis=1)
        if self.metric == "conversion_rate":
            return p
        return p * np.stack(self.m_per_visitor, axis=1)
