"""Depth-bounded policy tree over the covariates, fitted on the posterior.

The tree is a *policy* tree: it maximises the posterior expected value of
giving every leaf its best arm,

    sum over leaves L of max_k sum_{s in L} n_s * E[value_k(s)],

(``n_s`` visitors in stratum ``s``), not the accuracy of a classifier. Each
leaf must hold at least ``min_segment_share`` of the visitors. The search
is exhaustive up to depth 2 in one vectorised step (every pair of splits at
once, as matrix products over strata) and exhaustive above that by
enumerating the first split, so a depth-3 tree is the exact optimum over
the candidate splits. A split is kept only when it raises the value, so
children never share their arm.

Candidate splits: for a categorical covariate, every subset of its levels
(up to complement) when it has at most :data:`MAX_SUBSET_LEVELS` levels,
else each level against the rest; for a continuous covariate, every
interior quantile edge of its strata bins.

Each leaf becomes a :class:`Segment`: its rule, share, posterior P(best)
per arm, the 80% interval of each arm's effect over control, and a
stability score -- over bootstrap refits of the whole procedure, the
average share of the segment's visitors that the refitted tree sends to the
segment's arm. A segment is *credible* at stability >= 0.80.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from simfarm.experiments.jsonvalues import from_json_number, to_json_number
from simfarm.experiments.model import HurdlePosterior, bootstrap_stats, conjugate_update
from simfarm.experiments.strata import Strata

__all__ = [
    "CREDIBLE_STABILITY",
    "MAX_SUBSET_LEVELS",
    "LeafNode",
    "PolicyTree",
    "Segment",
    "SplitNode",
    "TreeFit",
    "fit_policy_tree",
    "node_from_json",
    "search_policy_tree",
]

#: Categorical covariates with at most this many levels are split on every
#: subset of levels; more levels fall back to one-versus-rest splits.
MAX_SUBSET_LEVELS = 5
#: Stability at which a segment counts as credible.
CREDIBLE_STABILITY = 0.80
#: Deepest tree the exhaustive search accepts (depth 4 already costs about
#: 30x depth 3).
MAX_DEPTH = 4


# ---------------------------------------------------------------------------
# Structure
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class LeafNode:
    """A leaf of the tree; ``leaf`` is the id of its :class:`Segment`."""

    leaf: int

    def to_json(self) -> dict[str, Any]:
        """``{"leaf": id}``."""
        return {"leaf": int(self.leaf)}


@dataclass(frozen=True)
class SplitNode:
    """An internal node: rows go left when ``feature`` is in ``categories``
    (categorical) or ``feature <= threshold`` (continuous), else right."""

    feature: str
    categories: tuple[Any, ...] | None
    threshold: float | None
    left: LeafNode | SplitNode
    right: LeafNode | SplitNode

    def to_json(self) -> dict[str, Any]:
        """The snapshot's NODE shape."""
        return {
            "feature": self.feature,
            "categories": None if self.categories is None else list(self.categories),
            "threshold": None if self.threshold is None else float(self.threshold),
            "left": self.left.to_json(),
            "right": self.right.to_json(),
        }


def node_from_json(data: Mapping[str, Any]) -> LeafNode | SplitNode:
    """Rebuild a node (recursively) from its JSON form.

    Raises:
        ValueError: When a node is neither a leaf nor a split with one of
            ``categories`` / ``threshold``.
    """
    if "leaf" in data:
        return LeafNode(int(data["leaf"]))
    categories = data.get("categories")
    threshold = data.get("threshold")
    if (categories is None) == (threshold is None):
        raise ValueError(f"tree node needs exactly one of categories / threshold, got {dict(data)!r}")
    return SplitNode(
        feature=str(data["feature"]),
        categories=None if categories is None else tuple(categories),
        threshold=None if threshold is None else float(threshold),
        left=node_from_json(data["left"]),
        right=node_from_json(data["right"]),
    )


@dataclass(frozen=True)
class Segment:
    """One leaf of a policy tree, as the analysis reports it.

    Attributes:
        id: Leaf id (left-to-right order).
        rule: Readable condition, e.g. ``"device_type in {mobile} and browse_depth <= 3.25"``.
        share: Share of the (cumulative) visitors in the segment.
        arm_probs: The Optimized cell's assignment probabilities here.
        best_arm: Arm with the highest posterior mean value here.
        p_best: Posterior probability that each active arm is best here.
        effect_interval80: Per active non-control arm, the 80% central
            interval of its effect on value per visitor over control.
        stability: Bootstrap stability in [0, 1] (credible at >= 0.80).
        n_visitors: Visitors in the segment.
        effect_mean: Per active non-control arm, the posterior mean effect.
    """

    id: int
    rule: str
    share: float
    arm_probs: dict[str, float]
    best_arm: str
    p_best: dict[str, float]
    effect_interval80: dict[str, tuple[float, float]]
    stability: float
    n_visitors: int = 0
    effect_mean: dict[str, float] = field(default_factory=dict)

    @property
    def stability_score(self) -> float:
        """Alias of :attr:`stability` (pytyche's name)."""
        return self.stability

    @property
    def credible(self) -> bool:
        """Whether ``stability >= 0.80``."""
        return self.stability >= CREDIBLE_STABILITY

    def to_json(self) -> dict[str, Any]:
        """The snapshot's LEAF shape (plus ``n_visitors`` and ``effect_mean``)."""
        return {
            "id": int(self.id),
            "rule": self.rule,
            "share": to_json_number(self.share),
            "arm_probs": {k: to_json_number(v) for k, v in self.arm_probs.items()},
            "best_arm": self.best_arm,
            "p_best": {k: to_json_number(v) for k, v in self.p_best.items()},
            "effect_interval80": {k: [to_json_number(lo), to_json_number(hi)] for k, (lo, hi) in self.effect_interval80.items()},
            "stability": to_json_number(self.stability),
            "n_visitors": int(self.n_visitors),
            "effect_mean": {k: to_json_number(v) for k, v in self.effect_mean.items()},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Segment:
        """Inverse of :meth:`to_json` (nulls read back as NaN; unknown keys ignored)."""
        f = from_json_number
        return cls(
            id=int(data["id"]),
            rule=str(data.get("rule", "")),
            share=f(data.get("share")),
            arm_probs={k: f(v) for k, v in (data.get("arm_probs") or {}).items()},
            best_arm=str(data.get("best_arm", "")),
            p_best={k: f(v) for k, v in (data.get("p_best") or {}).items()},
            effect_interval80={k: (f(v[0]), f(v[1])) for k, v in (data.get("effect_interval80") or {}).items()},
            stability=f(data.get("stability")),
            n_visitors=int(data.get("n_visitors", 0)),
            effect_mean={k: f(v) for k, v in (data.get("effect_mean") or {}).items()},
        )


def _column(covariates: Any, name: str) -> np.ndarray:
    try:
        values = covariates[name]
    except (KeyError, IndexError):
        raise ValueError(f"the policy tree splits on {name!r} but the visitors have no such column") from None
    return values.to_numpy() if isinstance(values, pd.Series) else np.asarray(values)


def _goes_left(node: SplitNode, values: np.ndarray) -> np.ndarray:
    if node.categories is not None:
        return pd.Series(values, copy=False).isin(list(node.categories)).to_numpy(dtype=bool)
    with np.errstate(invalid="ignore"):
        return np.asarray(values, dtype=np.float64) <= float(node.threshold)  # NaN -> right


@dataclass(frozen=True)
class PolicyTree:
    """A fitted policy tree: nodes plus one :class:`Segment` per leaf.

    Attributes:
        max_depth: The depth bound it was fitted under.
        root: The root node.
        leaves: Segments, indexed by leaf id.
    """

    max_depth: int
    root: LeafNode | SplitNode
    leaves: tuple[Segment, ...]

    @property
    def n_leaves(self) -> int:
        """Number of leaves."""
        return len(self.leaves)

    @property
    def allocation_map(self) -> dict[int, dict[str, float]]:
        """Leaf id -> the Optimized cell's arm probabilities (pytyche's name)."""
        return {s.id: dict(s.arm_probs) for s in self.leaves}

    def leaf_index(self, covariates: Any, n: int | None = None) -> np.ndarray:
        """Leaf id of every visitor, routed by the raw covariate values.

        Vectorised per node (never per row). A category the tree never saw
        and a missing continuous value both take the right branch.

        Args:
            covariates: A DataFrame or a mapping of column name to values.
            n: Number of visitors; needed only when *covariates* is an
                empty mapping (a tree with no split).

        Returns:
            ``(n,)`` int64 leaf ids.

        Raises:
            ValueError: When a split's covariate is missing.
        """
        if n is None:
            if isinstance(covariates, pd.DataFrame):
                n = len(covariates)
            else:
                lengths = {len(v) for v in covariates.values()}
                if len(lengths) != 1:
                    raise ValueError("leaf_index needs n= or covariate columns of one common length")
                n = lengths.pop()
        out = np.empty(n, dtype=np.int64)
        columns: dict[str, np.ndarray] = {}
        stack: list[tuple[LeafNode | SplitNode, np.ndarray]] = [(self.root, np.arange(n))]
        while stack:
            node, rows = stack.pop()
            if isinstance(node, LeafNode):
                out[rows] = node.leaf
                continue
            if node.feature not in columns:
                columns[node.feature] = _column(covariates, node.feature)
            left = _goes_left(node, columns[node.feature][rows])
            stack.append((node.left, rows[left]))
            stack.append((node.right, rows[~left]))
        return out

    def with_arm_probs(self, probs: Mapping[int, Mapping[str, float]]) -> PolicyTree:
        """A copy whose leaves carry the given assignment probabilities."""
        leaves = tuple(replace(s, arm_probs=dict(probs[s.id])) for s in self.leaves)
        return replace(self, leaves=leaves)

    def to_json(self) -> dict[str, Any]:
        """The snapshot's TREE shape."""
        return {"max_depth": int(self.max_depth), "root": self.root.to_json(), "leaves": [s.to_json() for s in self.leaves]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PolicyTree:
        """Inverse of :meth:`to_json`."""
        return cls(
            max_depth=int(data["max_depth"]),
            root=node_from_json(data["root"]),
            leaves=tuple(Segment.from_json(s) for s in data.get("leaves", [])),
        )


# ---------------------------------------------------------------------------
# Search
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class _Split:
    covariate: int
    left_levels: tuple[int, ...]


def _candidate_splits(strata: Strata) -> tuple[list[_Split], np.ndarray]:
    splits: list[_Split] = []
    for f, cov in enumerate(strata.covariates):
        present = np.unique(strata.levels[:, f]).tolist()
        if len(present) < 2:
            continue
        if cov.kind == "continuous":
            splits.extend(_Split(f, tuple(present[: i + 1])) for i in range(len(present) - 1))
        elif len(present) <= MAX_SUBSET_LEVELS:
            for size in range(1, len(present) // 2 + 1):
                for subset in itertools.combinations(present, size):
                    # A subset and its complement make one split; keep the
                    # one holding the first level when the halves are equal.
                    if 2 * size == len(present) and present[0] not in subset:
                        continue
                    splits.append(_Split(f, subset))
        else:
            splits.extend(_Split(f, (level,)) for level in present)
    member = np.zeros((len(splits), strata.n_strata))
    for i, split in enumerate(splits):
        member[i] = np.isin(strata.levels[:, split.covariate], split.left_levels)
    return splits, member


class _Search:
    """Exhaustive policy-tree search over strata (see the module docstring).

    ``x`` arrays are ``(n_strata, n_arms + 1)``: the weighted value sums per
    arm and, last, the weights, zeroed outside the node.
    """

    def __init__(self, value: np.ndarray, weight: np.ndarray, member: np.ndarray, min_weight: float) -> None:
        self.x = np.concatenate([value * weight[:, None], weight[:, None]], axis=1)
        self.member = member
        self.min_weight = max(float(min_weight), 1e-12)
        self._pairs: np.ndarray | None = None
        self.n_splits = member.shape[0]
        root = self._leaf_value(self.x.sum(0))
        self.tol = 1e-9 * abs(float(root)) + 1e-300

    @property
    def pairs(self) -> np.ndarray:
        # (C*C, J): membership in the left side of split a AND split b.
        if self._pairs is None:
            m = self.member
            self._pairs = (m[:, None, :] * m[None, :, :]).reshape(-1, m.shape[1])
        return self._pairs

    @staticmethod
    def _leaf_value(sums: np.ndarray) -> np.ndarray:
        return sums[..., :-1].max(-1)

    def _feasible(self, sums: np.ndarray) -> np.ndarray:
        return sums[..., -1] >= self.min_weight

    def _pair_value(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        ok = self._feasible(left) & self._feasible(right)
        return np.where(ok, self._leaf_value(left) + self._leaf_value(right), -np.inf)

    def _keep_better(self, split_value: np.ndarray, leaf_value: np.ndarray) -> np.ndarray:
        return np.where(split_value > leaf_value + self.tol, split_value, leaf_value)

    def _depth2(self, x: np.ndarray) -> np.ndarray:
        """Best depth-2 value under each first split, for a batch of nodes.

        Args:
            x: ``(B, n_strata, n_arms + 1)`` node arrays.

        Returns:
            ``(B, C)``; -inf where the first split is infeasible. Every pair
            of splits is scored at once: one matrix product with the pair
            memberships.
        """
        b, c = x.shape[0], self.n_splits
        node = x.sum(1)
        left = np.matmul(self.member, x)  # (B, C, A+1)
        right = node[:, None, :] - left
        ll = np.matmul(self.pairs, x).reshape(b, c, c, -1)  # left of first, left of second
        lr = left[:, :, None, :] - ll
        rl = left[:, None, :, :] - ll  # right of first, left of second
        rr = right[:, :, None, :] - rl
        best_left = self._keep_better(self._pair_value(ll, lr).max(2), self._leaf_value(left))
        best_right = self._keep_better(self._pair_value(rl, rr).max(2), self._leaf_value(right))
        feasible = self._feasible(left) & self._feasible(right)
        return np.where(feasible, best_left + best_right, -np.inf)

    def split_values(self, x: np.ndarray, depth: int) -> np.ndarray:
        """Value of the best depth-``depth`` subtree under each first split (-inf: infeasible)."""
        if depth == 2:
            return self._depth2(x[None])[0]
        node = x.sum(0)
        left = self.member @ x
        right = node - left
        if depth == 1:
            return self._pair_value(left, right)
        feasible = self._feasible(left) & self._feasible(right)
        inside = self.member[:, :, None]
        children = np.concatenate([x[None] * inside, x[None] * (1.0 - inside)])  # (2C, J, A+1)
        if depth == 3:
            sums = children.sum(1)
            best = self._keep_better(self._depth2(children).max(1), self._leaf_value(sums))
        else:
            best = np.array([self.best_value(child, depth - 1) for child in children])
        values = best[: self.n_splits] + best[self.n_splits :]
        return np.where(feasible, values, -np.inf)

    def best_value(self, x: np.ndarray, depth: int) -> float:
        """Value of the best subtree of depth <= ``depth`` for the node ``x``."""
        leaf = float(self._leaf_value(x.sum(0)))
        if depth == 0 or self.n_splits == 0:
            return leaf
        best_split = float(self.split_values(x, depth).max())
        return best_split if best_split > leaf + self.tol else leaf

    def build(self, x: np.ndarray, depth: int) -> tuple:
        """Nested ``("leaf", arm)`` / ``("split", split_index, left, right)``."""
        sums = x.sum(0)
        leaf = ("leaf", int(np.argmax(sums[:-1])))
        if depth == 0 or self.n_splits == 0:
            return leaf
        values = self.split_values(x, depth)
        i = int(np.argmax(values))
        if not values[i] > float(self._leaf_value(sums)) + self.tol:
            return leaf
        inside = self.member[i][:, None]
        left = self.build(x * inside, depth - 1)
        right = self.build(x * (1.0 - inside), depth - 1)
        if left[0] == right[0] == "leaf" and left[1] == right[1]:
            return leaf  # both sides chose the same arm: the split adds nothing
        return ("split", i, left, right)


def search_policy_tree(
    value: np.ndarray,
    weight: np.ndarray,
    strata: Strata,
    *,
    max_depth: int,
    min_segment_share: float,
    _candidates: tuple[list[_Split], np.ndarray] | None = None,
) -> tuple[tuple, list[_Split], np.ndarray]:
    """Find the policy tree maximising ``sum_leaves max_k sum_s weight_s value_sk``.

    Args:
        value: ``(n_strata, n_arms)`` expected value of each arm per stratum
            (only the arms that may be assigned).
        weight: ``(n_strata,)`` visitors per stratum.
        strata: The strata (covariate levels define the candidate splits).
        max_depth: Depth bound, 0..4.
        min_segment_share: Minimum share of the total weight per leaf.

    Returns:
        ``(structure, splits, member)``: the nested structure (see
        ``_Search.build``), the candidate splits and their ``(C, n_strata)``
        left-membership matrix.

    Raises:
        ValueError: On a depth outside 0..4 or a share outside [0, 0.5].
    """
    if not 0 <= max_depth <= MAX_DEPTH:
        raise ValueError(f"max_depth must be an integer from 0 to {MAX_DEPTH}, got {max_depth}")
    if not 0.0 <= min_segment_share <= 0.5:
        raise ValueError(f"min_segment_share must be in [0, 0.5], got {min_segment_share}")
    splits, member = _candidates if _candidates is not None else _candidate_splits(strata)
    search = _Search(value, weight, member, min_segment_share * float(weight.sum()))
    return search.build(search.x, max_depth), splits, member


# ---------------------------------------------------------------------------
# From search structure to PolicyTree + segments
# ---------------------------------------------------------------------------
def _stratum_leaves(structure: tuple, member: np.ndarray, n_strata: int) -> tuple[np.ndarray, list[int]]:
    """Leaf id per stratum and the arm of each leaf (left-to-right ids)."""
    leaf_of = np.full(n_strata, -1, dtype=np.int64)
    arms: list[int] = []

    def walk(node: tuple, inside: np.ndarray) -> None:
        if node[0] == "leaf":
            leaf_of[inside] = len(arms)
            arms.append(node[1])
            return
        left = member[node[1]] > 0
        walk(node[2], inside & left)
        walk(node[3], inside & ~left)

    walk(structure, np.ones(n_strata, dtype=bool))
    return leaf_of, arms


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def _rule(constraints: dict[int, Any], strata: Strata) -> str:
    parts = []
    for f in sorted(constraints):
        cov = strata.covariates[f]
        c = constraints[f]
        if cov.kind == "categorical":
            names = ", ".join(str(cov.categories[level]) for level in sorted(c))
            parts.append(f"{cov.name} in {{{names}}}")
        else:
            lo, hi = c
            if lo is not None and hi is not None:
                parts.append(f"{_fmt(lo)} < {cov.name} <= {_fmt(hi)}")
            elif hi is not None:
                parts.append(f"{cov.name} <= {_fmt(hi)}")
            else:
                parts.append(f"{cov.name} > {_fmt(lo)}")
    return " and ".join(parts) if parts else "all visitors"


def _to_nodes(structure: tuple, splits: list[_Split], strata: Strata) -> tuple[LeafNode | SplitNode, list[str]]:
    """Nodes with leaf ids in left-to-right order, and each leaf's rule."""
    rules: list[str] = []

    def walk(node: tuple, constraints: dict[int, Any]) -> LeafNode | SplitNode:
        if node[0] == "leaf":
            rules.append(_rule(constraints, strata))
            return LeafNode(len(rules) - 1)
        split = splits[node[1]]
        f = split.covariate
        cov = strata.covariates[f]
        left_c, right_c = dict(constraints), dict(constraints)
        if cov.kind == "categorical":
            allowed = constraints.get(f, set(range(cov.n_levels)))
            left_c[f] = allowed & set(split.left_levels)
            right_c[f] = allowed - set(split.left_levels)
            categories: tuple[Any, ...] | None = tuple(cov.categories[level] for level in split.left_levels)
            threshold = None
        else:
            threshold = float(cov.edges[max(split.left_levels)])
            lo, hi = constraints.get(f, (None, None))
            left_c[f] = (lo, threshold if hi is None else min(hi, threshold))
            right_c[f] = (threshold if lo is None else max(lo, threshold), hi)
            categories = None
        left = walk(node[2], left_c)
        right = walk(node[3], right_c)
        return SplitNode(cov.name, categories, threshold, left, right)

    return walk(structure, {}), rules


@dataclass(frozen=True, eq=False)
class TreeFit:
    """A fitted tree with what the loop needs besides the JSON shape.

    Attributes:
        tree: The policy tree (segments filled in).
        stratum_leaf: ``(n_strata,)`` leaf id of every stratum.
        leaf_arm: Universe index of each leaf's best arm.
        leaf_value_draws: ``(n_leaves, n_arms, S)`` posterior draws of each
            leaf's average value per visitor under each arm.
        active: Universe indices of the arms the tree could assign.
    """

    tree: PolicyTree
    stratum_leaf: np.ndarray
    leaf_arm: list[int]
    leaf_value_draws: np.ndarray
    active: list[int]


def fit_policy_tree(
    posterior: HurdlePosterior,
    *,
    active: Sequence[str],
    max_depth: int = 3,
    min_segment_share: float = 0.10,
    n_bootstrap: int = 20,
    rng: np.random.Generator,
    allocate: Callable[[dict[str, float]], dict[str, float]] | None = None,
) -> TreeFit:
    """Fit the policy tree on the posterior and describe its segments.

    Args:
        posterior: The round's posterior (cumulative data).
        active: Arms the tree may assign (control first; a subset of the
            posterior's treatments).
        max_depth: Depth bound, 0..4.
        min_segment_share: Minimum visitor share per leaf, in [0, 0.5].
        n_bootstrap: Bootstrap refits for the stability score (0 skips it:
            stability is NaN).
        rng: Source of the bootstrap replicates.
        allocate: Maps a leaf's P(best) to its assignment probabilities
            (default: P(best) itself).

    Returns:
        The :class:`TreeFit`.

    Raises:
        ValueError: When *active* names an arm outside the posterior, or on
            a bad depth / share.
    """
    unknown = [a for a in active if a not in posterior.treatments]
    if unknown or not active or active[0] != posterior.treatments[0]:
        raise ValueError(
            f"active arms {list(active)} must be a subset of {posterior.treatments} "
            f"that starts with the control {posterior.treatments[0]!r}"
        )
    act = [posterior.treatments.index(a) for a in active]
    strata = posterior.strata
    weight = strata.counts.astype(np.float64)
    candidates = _candidate_splits(strata)
    structure, splits, member = search_policy_tree(
        posterior.value_mean[:, act],
        weight,
        strata,
        max_depth=max_depth,
        min_segment_share=min_segment_share,
        _candidates=candidates,
    )
    stratum_leaf, leaf_arm_local = _stratum_leaves(structure, member, strata.n_strata)
    root, rules = _to_nodes(structure, splits, strata)
    leaf_arm = [act[a] for a in leaf_arm_local]
    n_leaves = len(leaf_arm)
    draws = posterior.group_value_draws(stratum_leaf, n_leaves)
    stability = _stability(
        posterior, act, stratum_leaf, leaf_arm_local, candidates, max_depth, min_segment_share, n_bootstrap, rng
    )
    names = posterior.treatments
    total = weight.sum()
    leaf_weight = np.bincount(stratum_leaf, weights=weight, minlength=n_leaves)
    winners = np.argmax(draws[:, act, :], axis=1)  # (L, S) local arm index
    segments = []
    for leaf in range(n_leaves):
        p_best = {names[a]: float(np.mean(winners[leaf] == i)) for i, a in enumerate(act)}
        effects = draws[leaf, act[1:], :] - draws[leaf, 0, :]
        lo, hi = np.quantile(effects, [0.1, 0.9], axis=-1) if len(act) > 1 else (np.array([]), np.array([]))
        segments.append(
            Segment(
                id=leaf,
                rule=rules[leaf],
                share=float(leaf_weight[leaf] / total) if total else math.nan,
                arm_probs=(allocate or dict)(p_best),
                best_arm=names[leaf_arm[leaf]],
                p_best=p_best,
                effect_interval80={names[a]: (float(lo[i]), float(hi[i])) for i, a in enumerate(act[1:])},
                stability=float(stability[leaf]),
                n_visitors=int(round(leaf_weight[leaf])),
                effect_mean={names[a]: float(effects[i].mean()) for i, a in enumerate(act[1:])},
            )
        )
    tree = PolicyTree(max_depth=max_depth, root=root, leaves=tuple(segments))
    return TreeFit(tree=tree, stratum_leaf=stratum_leaf, leaf_arm=leaf_arm, leaf_value_draws=draws, active=act)


def _stability(
    posterior: HurdlePosterior,
    act: list[int],
    stratum_leaf: np.ndarray,
    leaf_arm_local: list[int],
    candidates: tuple[list[_Split], np.ndarray],
    max_depth: int,
    min_segment_share: float,
    n_bootstrap: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Per leaf: mean over bootstrap refits of the share of its visitors sent to its arm."""
    n_leaves = len(leaf_arm_local)
    if n_bootstrap <= 0:
        return np.full(n_leaves, math.nan)
    strata = posterior.strata
    weight = strata.counts.astype(np.float64)
    boot = bootstrap_stats(posterior.stats, rng, n_bootstrap)
    refit = conjugate_update(
        boot,
        posterior.dummies,
        posterior.covariate_of_dummy,
        hyper=posterior.conjugate.hyper,
        start=posterior.conjugate,
    )
    means = refit.mean_value(posterior.metric)[..., act]
    boot_weight = boot.n.sum(-1)
    target = np.asarray(leaf_arm_local)[stratum_leaf]  # arm the fitted tree gives each stratum
    leaf_weight = np.bincount(stratum_leaf, weights=weight, minlength=n_leaves)
    agree = np.zeros(n_leaves)
    for b in range(n_bootstrap):
        structure, _, member = search_policy_tree(
            means[b],
            boot_weight[b],
            strata,
            max_depth=max_depth,
            min_segment_share=min_segment_share,
            _candidates=candidates,
        )
        boot_leaf, boot_arm = _stratum_leaves(structure, member, strata.n_strata)
        same = (np.asarray(boot_arm)[boot_leaf] == target).astype(np.float64)
        agree += np.bincount(stratum_leaf, weights=weight * same, minlength=n_leaves)
    with np.errstate(invalid="ignore", divide="ignore"):
        return agree / (n_bootstrap * leaf_weight)
