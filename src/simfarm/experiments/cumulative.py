"""Visitors accumulated over rounds, as flat arrays, and the round-data checks.

:func:`read_round` validates one round's generator output against the
experiment (reserved ``cell`` column, cell ids of the plan, variant names
in the treatments universe, constant experiment id / metric / sim-vs-real
mode, covariate columns, truth shapes) and turns it into a
:class:`RoundBatch` of arrays. :meth:`CumulativeVisitors.extended` returns
a *new* object with the batch appended, so the loop commits by swapping
one reference: a failing round leaves the old object untouched.

Categorical covariates are stored as integer codes into a per-column list
of values in first-seen order; continuous ones as float64. Arms are
indices into the treatments universe. Rows are in round order, each round
in the order of its variant frames concatenated.

:meth:`CumulativeVisitors.to_arrays` / :meth:`from_arrays` give plain
arrays plus a JSON-able header, for a checkpoint that never unpickles.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from simfarm.experiments.contracts import (
    RESERVED_CELL_COLUMN,
    CalibrationTruth,
    ObservedExperimentData,
    is_reserved_column,
)

__all__ = ["CumulativeVisitors", "RoundBatch", "read_round"]

CATEGORICAL, CONTINUOUS = "categorical", "continuous"


def _kind(series: pd.Series) -> str:
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return CATEGORICAL
    if pd.api.types.is_numeric_dtype(dtype):
        return CONTINUOUS
    return CATEGORICAL


def _json_value(value: Any, column: str) -> Any:
    """A category value as a JSON scalar (missing values become None)."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, str | bool | int):
        return value
    raise ValueError(
        f"categorical covariate {column!r} holds {value!r} ({type(value).__name__}); "
        "categorical values must be strings, booleans or integers"
    )


@dataclass(frozen=True, eq=False)
class RoundBatch:
    """One validated round as arrays (see :func:`read_round`).

    Attributes:
        arm: ``(n,)`` universe index of each visitor's arm.
        cell: ``(n,)`` index into *cell_ids* of each visitor's cell.
        cell_ids: The round's plan cell ids.
        converted, revenue: Outcomes.
        categorical: ``name -> (values as a pandas-factorisable list of arrays)``.
        continuous: ``name -> float64 values``.
        covariate_order: Covariate names in column order.
        value, contrast: Truth ``(n, K)`` / ``(n, K-1)``, or None in real mode.
        p, m: Truth ``(n, K)``, or None.
        experiment_id, metric: The round's identity.
    """

    arm: np.ndarray
    cell: np.ndarray
    cell_ids: tuple[str, ...]
    converted: np.ndarray
    revenue: np.ndarray
    categorical: dict[str, list[pd.Series]]
    continuous: dict[str, np.ndarray]
    covariate_order: tuple[str, ...]
    p: np.ndarray | None
    m: np.ndarray | None
    contrast: np.ndarray | None
    experiment_id: str
    metric: str

    @property
    def n(self) -> int:
        """Visitors in the round."""
        return int(self.arm.shape[0])


def read_round(
    data: ObservedExperimentData,
    truth: CalibrationTruth | None,
    *,
    round_idx: int,
    treatments: Sequence[str],
    plan_cell_ids: Sequence[str],
    previous: CumulativeVisitors,
    covariates: Sequence[str] | None = None,
) -> RoundBatch:
    """Validate one round of generator output and convert it to arrays.

    Args:
        data: The round's observed data.
        truth: Its truth (sim mode) or None (real-data mode).
        round_idx: The round's index (for messages).
        treatments: The experiment's treatments universe.
        plan_cell_ids: Ids of the cells of the plan the round ran with.
        previous: The data of earlier rounds (identity and covariates must match).
        covariates: Covariate columns to use (default: every non-reserved column).

    Returns:
        The :class:`RoundBatch`.

    Raises:
        ValueError: Naming what is wrong and how to fix it, when the data is
            not an ObservedExperimentData, a variant lacks the ``cell`` or an
            outcome column, a variant name or cell id is unknown, the
            experiment id / metric / mode changed, the covariates differ from
            earlier rounds, or the truth does not match the rows.
    """
    where = f"round {round_idx}"
    if not isinstance(data, ObservedExperimentData):
        raise ValueError(
            f"{where}: the generator must return (ObservedExperimentData, CalibrationTruth | None), "
            f"got {type(data).__name__} as data"
        )
    if truth is not None and not isinstance(truth, CalibrationTruth):
        raise ValueError(f"{where}: truth must be a CalibrationTruth or None, got {type(truth).__name__}")
    for variant in data.variants:
        if RESERVED_CELL_COLUMN not in variant.visitors.columns:
            raise ValueError(
                f"{where} data for variant {variant.name!r} lacks the reserved {RESERVED_CELL_COLUMN!r} column; "
                "the generator must record, for every visitor, the id of the plan cell that allocated it"
            )
        missing = [c for c in ("converted", "revenue") if c not in variant.visitors.columns]
        if missing:
            raise ValueError(f"{where} data for variant {variant.name!r} lacks column(s) {missing}")
    rogue = [v.name for v in data.variants if v.name not in treatments]
    if rogue:
        raise ValueError(
            f"{where} data has variant name(s) {rogue} outside the treatments {list(treatments)}; "
            "return only arms of the experiment's treatments (or add them to treatments)"
        )
    if previous.n_rounds:
        if data.experiment_id != previous.experiment_id:
            raise ValueError(
                f"{where} data has experiment_id {data.experiment_id!r} but earlier rounds had "
                f"{previous.experiment_id!r}; keep it constant (one SequentialExperiment runs one experiment)"
            )
        if data.metric != previous.metric:
            raise ValueError(
                f"{where} data has metric {data.metric!r} but earlier rounds had {previous.metric!r}; "
                "the metric may not change between rounds"
            )
        if (truth is not None) != previous.sim:
            was = "a CalibrationTruth (sim mode)" if previous.sim else "None (real-data mode)"
            now = "a CalibrationTruth (sim mode)" if truth is not None else "None (real-data mode)"
            raise ValueError(
                f"{where} returned {now} but earlier rounds returned {was}; "
                "a generator must stay in one mode for the whole experiment"
            )

    frames = [v.visitors for v in data.variants]
    arm = np.concatenate(
        [np.full(len(f), list(treatments).index(v.name), dtype=np.int64) for f, v in zip(frames, data.variants, strict=True)]
    )
    cell_ids = tuple(plan_cell_ids)
    cell_parts = []
    for f in frames:
        codes, uniques = pd.factorize(f[RESERVED_CELL_COLUMN], use_na_sentinel=True)
        values = [_json_value(u, RESERVED_CELL_COLUMN) for u in uniques]
        unknown = sorted({str(u) for u in values if u not in cell_ids} | ({"<missing>"} if (codes < 0).any() else set()))
        if unknown:
            raise ValueError(
                f"{where} {RESERVED_CELL_COLUMN!r} column holds id(s) {unknown} that are not cells of the round's "
                f"plan {list(cell_ids)}; label every visitor with the id of the plan cell that allocated it"
            )
        lut = np.array([cell_ids.index(u) for u in values], dtype=np.int64)
        cell_parts.append(lut[codes] if len(lut) else codes.astype(np.int64))
    cell = np.concatenate(cell_parts) if cell_parts else np.zeros(0, np.int64)
    converted = np.concatenate([f["converted"].to_numpy(dtype=bool) for f in frames])
    revenue = np.concatenate([f["revenue"].to_numpy(dtype=np.float64) for f in frames])
    if not np.isfinite(revenue).all() or (revenue < 0).any():
        raise ValueError(f"{where}: revenue must be finite and >= 0 for every visitor")
    if data.metric == "revenue_per_visitor" and (revenue[converted] <= 0).any():
        raise ValueError(f"{where}: every converted visitor needs revenue > 0 under metric revenue_per_visitor")

    # Covariates: the same columns, of the same kinds, in every variant and round.
    names = [c for c in frames[0].columns if not is_reserved_column(c)] if covariates is None else list(covariates)
    for f, v in zip(frames, data.variants, strict=True):
        cols = [c for c in f.columns if not is_reserved_column(c)] if covariates is None else names
        missing = [c for c in names if c not in f.columns]
        if sorted(cols) != sorted(names) or missing:
            raise ValueError(
                f"{where} variant {v.name!r} has covariate columns {sorted(cols)} but expected {sorted(names)}; "
                "every variant must carry the same covariates"
            )
    if previous.n_rounds and sorted(names) != sorted(previous.covariate_order):
        raise ValueError(
            f"{where} has covariate columns {sorted(names)} but earlier rounds had "
            f"{sorted(previous.covariate_order)}; every round must carry the same covariates"
        )
    order = tuple(previous.covariate_order) if previous.n_rounds else tuple(names)
    categorical: dict[str, list[pd.Series]] = {}
    continuous: dict[str, np.ndarray] = {}
    for name in order:
        kinds = {_kind(f[name]) for f in frames if len(f)} or {previous.kinds.get(name, CATEGORICAL)}
        kind = kinds.pop() if len(kinds) == 1 else None
        if kind is None or (previous.n_rounds and previous.kinds[name] != kind):
            raise ValueError(
                f"{where} covariate {name!r} changed kind (numeric columns are continuous, others categorical); "
                "give it the same dtype in every variant and round"
            )
        if kind == CATEGORICAL:
            categorical[name] = [f[name] for f in frames]
        else:
            continuous[name] = np.concatenate([f[name].to_numpy(dtype=np.float64) for f in frames])

    p = m = contrast = None
    if truth is not None:
        n = len(arm)
        if truth.n_visitors != n:
            raise ValueError(
                f"{where} truth covers {truth.n_visitors} visitors but the data has {n}; "
                "the truth arrays must follow the rows of the variant frames concatenated"
            )
        arms = list(truth.arms) or list(treatments)
        if sorted(arms) != sorted(treatments) or arms[0] != treatments[0]:
            raise ValueError(
                f"{where} truth gives arms {arms} but the experiment's treatments are {list(treatments)}; "
                "give potential outcomes for every arm of the universe, control first"
            )
        if truth.metric != data.metric:
            raise ValueError(f"{where} truth is on metric {truth.metric!r} but the data on {data.metric!r}")
        index = [arms.index(t) for t in treatments]
        p = np.stack([truth.p_per_visitor[i] for i in index], axis=1)
        m = np.stack([truth.m_per_visitor[i] for i in index], axis=1)
        contrast = np.stack([truth.contrast_cate_per_visitor[i - 1] for i in index[1:]], axis=1) if len(index) > 1 else np.zeros((n, 0))
    return RoundBatch(
        arm=arm,
        cell=cell,
        cell_ids=cell_ids,
        converted=converted,
        revenue=revenue,
        categorical=categorical,
        continuous=continuous,
        covariate_order=order,
        p=p,
        m=m,
        contrast=contrast,
        experiment_id=data.experiment_id,
        metric=data.metric,
    )


def _encode(parts: list[pd.Series], categories: list[Any], name: str) -> tuple[np.ndarray, list[Any]]:
    """Codes of the values into *categories* (extended in first-seen order)."""
    categories = list(categories)
    index = {v: i for i, v in enumerate(categories)}
    out = []
    for part in parts:
        codes, uniques = pd.factorize(part, use_na_sentinel=False)
        lut = np.empty(len(uniques), dtype=np.int64)
        for j, u in enumerate(uniques):
            value = _json_value(u, name)
            if value not in index:
                index[value] = len(categories)
                categories.append(value)
            lut[j] = index[value]
        out.append(lut[codes] if len(lut) else codes.astype(np.int64))
    return (np.concatenate(out) if out else np.zeros(0, np.int64)), categories


class CumulativeVisitors:
    """Every visitor of the committed rounds (immutable: see :meth:`extended`).

    Attributes:
        treatments: The universe, control first.
        n_rounds: Rounds committed.
        experiment_id, metric, sim: The identity fixed by round 0.
        covariate_order: Covariate names; ``kinds`` maps each to its kind.
        categories: Per categorical covariate, its values in code order.
        codes: Per categorical covariate, ``(n,)`` codes.
        continuous: Per continuous covariate, ``(n,)`` values.
        arm, converted, revenue, round_index: ``(n,)`` per visitor.
        p, m, contrast: Truth arrays (sim mode) or None.
    """

    def __init__(self, treatments: Sequence[str]) -> None:
        self.treatments = list(treatments)
        self.n_rounds = 0
        self.experiment_id: str | None = None
        self.metric: str | None = None
        self.sim = False
        self.covariate_order: tuple[str, ...] = ()
        self.kinds: dict[str, str] = {}
        self.categories: dict[str, list[Any]] = {}
        self.codes: dict[str, np.ndarray] = {}
        self.continuous: dict[str, np.ndarray] = {}
        k = len(self.treatments)
        self.arm = np.zeros(0, np.int64)
        self.converted = np.zeros(0, bool)
        self.revenue = np.zeros(0, np.float64)
        self.round_index = np.zeros(0, np.int64)
        self.p: np.ndarray | None = np.zeros((0, k))
        self.m: np.ndarray | None = np.zeros((0, k))
        self.contrast: np.ndarray | None = np.zeros((0, k - 1))

    @property
    def n(self) -> int:
        """Visitors so far."""
        return int(self.arm.shape[0])

    def extended(self, batch: RoundBatch) -> CumulativeVisitors:
        """A new object holding these visitors followed by *batch*'s."""
        new = CumulativeVisitors(self.treatments)
        new.n_rounds = self.n_rounds + 1
        new.experiment_id, new.metric = batch.experiment_id, batch.metric
        new.sim = batch.p is not None
        new.covariate_order = batch.covariate_order
        new.kinds = {n: (CATEGORICAL if n in batch.categorical else CONTINUOUS) for n in batch.covariate_order}
        for name, parts in batch.categorical.items():
            codes, new.categories[name] = _encode(parts, self.categories.get(name, []), name)
            new.codes[name] = np.concatenate([self.codes.get(name, np.zeros(0, np.int64)), codes])
        for name, values in batch.continuous.items():
            new.continuous[name] = np.concatenate([self.continuous.get(name, np.zeros(0)), values])
        new.arm = np.concatenate([self.arm, batch.arm])
        new.converted = np.concatenate([self.converted, batch.converted])
        new.revenue = np.concatenate([self.revenue, batch.revenue])
        new.round_index = np.concatenate([self.round_index, np.full(batch.n, self.n_rounds, np.int64)])
        if new.sim:
            assert self.p is not None and self.m is not None and self.contrast is not None
            new.p = np.concatenate([self.p, batch.p])
            new.m = np.concatenate([self.m, batch.m])
            new.contrast = np.concatenate([self.contrast, batch.contrast])
        else:
            new.p = new.m = new.contrast = None
        return new

    def value(self) -> np.ndarray | None:
        """True ``(n, K)`` value per visitor under each arm (sim mode), else None."""
        if self.p is None or self.m is None:
            return None
        return self.p if self.metric == "conversion_rate" else self.p * self.m

    def frame(self) -> pd.DataFrame:
        """All visitors as a DataFrame: ``round, variant, converted, revenue`` and the covariates."""
        columns: dict[str, Any] = {
            "round": self.round_index,
            "variant": pd.Categorical.from_codes(self.arm, categories=self.treatments),
            "converted": self.converted,
            "revenue": self.revenue,
        }
        for name in self.covariate_order:
            if name in self.codes:
                columns[name] = np.asarray(self.categories[name], dtype=object)[self.codes[name]]
            else:
                columns[name] = self.continuous[name]
        return pd.DataFrame(columns)

    # -- checkpoint ---------------------------------------------------------
    def to_arrays(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Plain arrays (no objects) and a JSON-able header describing them."""
        arrays: dict[str, np.ndarray] = {
            "arm": self.arm,
            "converted": self.converted,
            "revenue": self.revenue,
            "round_index": self.round_index,
        }
        for i, name in enumerate(self.covariate_order):
            arrays[f"covariate_{i}"] = self.codes[name] if name in self.codes else self.continuous[name]
        if self.sim:
            assert self.p is not None and self.m is not None and self.contrast is not None
            arrays.update(truth_p=self.p, truth_m=self.m, truth_contrast=self.contrast)
        header = {
            "treatments": self.treatments,
            "n_rounds": self.n_rounds,
            "experiment_id": self.experiment_id,
            "metric": self.metric,
            "sim": self.sim,
            "covariates": [
                {"name": n, "kind": self.kinds[n], "categories": self.categories.get(n)} for n in self.covariate_order
            ],
        }
        return arrays, header

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], header: Mapping[str, Any]) -> CumulativeVisitors:
        """Inverse of :meth:`to_arrays`.

        Raises:
            KeyError: When an array is missing.
        """
        new = cls(header["treatments"])
        new.n_rounds = int(header["n_rounds"])
        new.experiment_id = header["experiment_id"]
        new.metric = header["metric"]
        new.sim = bool(header["sim"])
        new.arm = np.asarray(arrays["arm"])
        new.converted = np.asarray(arrays["converted"])
        new.revenue = np.asarray(arrays["revenue"])
        new.round_index = np.asarray(arrays["round_index"])
        order = []
        for i, cov in enumerate(header["covariates"]):
            name = cov["name"]
            order.append(name)
            new.kinds[name] = cov["kind"]
            if cov["kind"] == CATEGORICAL:
                new.categories[name] = list(cov["categories"])
                new.codes[name] = np.asarray(arrays[f"covariate_{i}"])
            else:
                new.continuous[name] = np.asarray(arrays[f"covariate_{i}"])
        new.covariate_order = tuple(order)
        if new.sim:
            new.p = np.asarray(arrays["truth_p"])
            new.m = np.asarray(arrays["truth_m"])
            new.contrast = np.asarray(arrays["truth_contrast"])
        elif new.n_rounds:
            new.p = new.m = new.contrast = None
        return new
