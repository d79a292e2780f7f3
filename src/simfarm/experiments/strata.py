"""Visitors grouped into strata: the cross of categorical levels and quantile bins.

The posterior (:mod:`~simfarm.experiments.model`) and the policy tree
(:mod:`~simfarm.experiments.policy_tree`) work on strata, not on visitors:
every visitor of a stratum shares its posterior draws, so a segment's
average over visitors is a count-weighted average over strata. That is
what keeps a round over a million visitors cheap.

A continuous covariate is cut at interior quantile edges ``e_0 < e_1 < ...``;
its level is the number of edges strictly below the value, so
``value <= e_j`` holds exactly for levels ``0..j`` (the policy tree's
thresholds are these edges). Missing values (NaN) fall in the top level,
which is also where a ``value <= threshold`` test sends them (to the right).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

__all__ = ["Covariate", "Strata", "bin_values", "quantile_edges", "stratify"]

#: Above this many possible level combinations, strata are found by sorting
#: instead of a dense ``bincount`` table.
_DENSE_LIMIT = 1 << 22


@dataclass(frozen=True)
class Covariate:
    """How one covariate is cut into levels.

    Attributes:
        name: Column name.
        kind: ``"categorical"`` or ``"continuous"``.
        categories: Categorical: the level values, level ``i`` is
            ``categories[i]``. Empty for continuous covariates.
        edges: Continuous: the interior bin edges, ascending. Empty for
            categorical covariates (and for a constant continuous one).
    """

    name: str
    kind: Literal["categorical", "continuous"]
    categories: tuple[Any, ...] = ()
    edges: tuple[float, ...] = ()

    @property
    def n_levels(self) -> int:
        """Number of levels: categories, or bins (edges + 1)."""
        return len(self.categories) if self.kind == "categorical" else len(self.edges) + 1


@dataclass(frozen=True, eq=False)
class Strata:
    """The occupied strata of a set of visitors.

    Attributes:
        covariates: How each covariate was cut, in column order.
        levels: ``(n_strata, n_covariates)`` level of each covariate in each stratum.
        counts: ``(n_strata,)`` visitors per stratum (every arm together).
        of_visitor: ``(n_visitors,)`` stratum index of each visitor.
    """

    covariates: tuple[Covariate, ...]
    levels: np.ndarray
    counts: np.ndarray
    of_visitor: np.ndarray

    @property
    def n_strata(self) -> int:
        """Number of occupied strata."""
        return int(self.counts.shape[0])

    @property
    def n_visitors(self) -> int:
        """Number of visitors stratified."""
        return int(self.of_visitor.shape[0])


def quantile_edges(values: np.ndarray, n_bins: int) -> tuple[float, ...]:
    """Interior edges cutting *values* into about *n_bins* equally full bins.

    Duplicate edges (heavy ties) are merged and edges at or above the largest
    value are dropped, so no bin is empty by construction. NaNs are ignored.

    Args:
        values: 1-D numeric array.
        n_bins: Wanted number of bins (>= 1).

    Returns:
        Ascending interior edges (``len <= n_bins - 1``); ``()`` when all
        values are equal, missing, or ``n_bins == 1``.

    Raises:
        ValueError: When *n_bins* is below 1.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    values = np.asarray(values, dtype=np.float64)
    finite = values[~np.isnan(values)] if np.isnan(values).any() else values
    if n_bins == 1 or finite.size == 0:
        return ()
    qs = np.quantile(finite, np.arange(1, n_bins) / n_bins)
    top = finite.max()
    return tuple(float(e) for e in np.unique(qs) if e < top)


def bin_values(values: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """Level of each value: the number of *edges* strictly below it (NaN: top level)."""
    return np.searchsorted(np.asarray(edges, dtype=np.float64), np.asarray(values, dtype=np.float64), side="left")


def stratify(
    categorical: Mapping[str, tuple[np.ndarray, Sequence[Any]]],
    continuous: Mapping[str, np.ndarray],
    *,
    n_bins: int,
    order: Sequence[str] | None = None,
    edges: Mapping[str, Sequence[float]] | None = None,
) -> Strata:
    """Group visitors into strata.

    Args:
        categorical: ``name -> (codes, categories)``: integer codes per visitor
            (``0 <= code < len(categories)``) and the level values.
        continuous: ``name -> values`` per visitor (NaN allowed).
        n_bins: Quantile bins per continuous covariate.
        order: Covariate order (default: categorical then continuous, each in
            mapping order). It decides the tree's tie-breaking between splits.
        edges: Fixed interior edges for some continuous covariates (used as
            given instead of quantiles of *continuous*).

    Returns:
        The occupied strata; with no covariates, one stratum holding everyone.

    Raises:
        ValueError: When arrays differ in length, *order* does not name every
            covariate exactly once, or a code is out of range.
    """
    names = list(order) if order is not None else [*categorical, *continuous]
    if sorted(names) != sorted([*categorical, *continuous]):
        raise ValueError(f"order {names} must name every covariate exactly once")
    lengths = {len(codes) for codes, _ in categorical.values()} | {len(v) for v in continuous.values()}
    if len(lengths) > 1:
        raise ValueError(f"covariate arrays differ in length: {sorted(lengths)}")
    n = lengths.pop() if lengths else 0

    covariates: list[Covariate] = []
    level_columns: list[np.ndarray] = []
    for name in names:
        if name in categorical:
            codes, categories = categorical[name]
            codes = np.asarray(codes, dtype=np.int64)
            if codes.size and (codes.min() < 0 or codes.max() >= len(categories)):
                raise ValueError(f"covariate {name!r}: codes must lie in [0, {len(categories)})")
            covariates.append(Covariate(name, "categorical", categories=tuple(categories)))
            level_columns.append(codes)
        else:
            values = np.asarray(continuous[name], dtype=np.float64)
            cut = tuple(float(e) for e in edges[name]) if edges and name in edges else quantile_edges(values, n_bins)
            covariates.append(Covariate(name, "continuous", edges=cut))
            level_columns.append(bin_values(values, cut).astype(np.int64))

    radices = np.array([max(c.n_levels, 1) for c in covariates], dtype=np.int64)
    if not covariates or n == 0:
        return Strata(
            covariates=tuple(covariates),
            levels=np.zeros((1 if n else 0, len(covariates)), dtype=np.int64),
            counts=np.array([n] if n else [], dtype=np.int64),
            of_visitor=np.zeros(n, dtype=np.int64),
        )
    # Mixed-radix code of each visitor's level combination.
    strides = np.ones(len(radices), dtype=np.int64)
    strides[:-1] = np.cumprod(radices[::-1])[::-1][1:]
    code = np.zeros(n, dtype=np.int64)
    for column, stride in zip(level_columns, strides, strict=True):
        code += column * stride
    n_combinations = int(np.prod(radices.astype(np.float64)))
    if n_combinations <= _DENSE_LIMIT:
        dense_counts = np.bincount(code, minlength=n_combinations)
        occupied = np.flatnonzero(dense_counts)
        remap = np.full(n_combinations, -1, dtype=np.int64)
        remap[occupied] = np.arange(occupied.size)
        of_visitor = remap[code]
        counts = dense_counts[occupied].astype(np.int64)
    else:
        occupied, of_visitor, counts = np.unique(code, return_inverse=True, return_counts=True)
        of_visitor = of_visitor.astype(np.int64)
    levels = (occupied[:, None] // strides[None, :]) % radices[None, :]
    return Strata(tuple(covariates), levels.astype(np.int64), counts.astype(np.int64), of_visitor)
