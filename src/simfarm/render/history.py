"""Reading experiment round snapshots duck-typed, into small frozen views.

The evolution GIF must draw history from several sources with the same
attribute names but different types: our live ``Experiment`` objects, the
raw snapshot JSON dicts written to ``snapshots/<job>/round-NNN.json``, the
light objects of ``snapshot_from_json`` and pytyche's ``Experiment``. Each
field is looked up as a mapping key or an attribute, whichever the object
has, and unknown keys are ignored. The views hold only what the renderer
draws, so equal views mean equal pictures (used to skip redrawing).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CellView",
    "LeafView",
    "RoundView",
    "SplitView",
    "TreeView",
    "read_history",
    "round_view",
]

# Trees deeper than this are cut (a guard against cyclic or corrupt input).
_MAX_DEPTH = 16


@dataclass(frozen=True)
class CellView:
    """One cell of a round's plan: id, share of traffic, policy kind, arms."""

    id: str
    weight: float
    kind: str
    arms: tuple[str, ...] = ()


@dataclass(frozen=True)
class LeafView:
    """One leaf of a policy tree.

    Attributes:
        id: Leaf id (what split nodes point at).
        rule: Human-readable path condition ("" when unknown).
        share: Population share in [0, 1], or None.
        arm_probs: Assignment probability per arm, in the snapshot's order.
        best_arm: The arm with the highest posterior probability of being best.
    """

    id: int
    rule: str = ""
    share: float | None = None
    arm_probs: tuple[tuple[str, float], ...] = ()
    best_arm: str | None = None


@dataclass(frozen=True)
class SplitView:
    """An internal node: rows go left when ``feature`` is in ``categories``
    (categorical split) or ``feature <= threshold`` (numeric split)."""

    feature: str
    categories: tuple[str, ...] | None
    threshold: float | None
    left: SplitView | int
    right: SplitView | int

    def label(self) -> str:
        """The split condition as text, e.g. ``device_type in {mobile}``."""
        if self.categories is not None:
            return f"{self.feature} in {{{', '.join(self.categories)}}}"
        if self.threshold is not None:
            return f"{self.feature} <= {self.threshold:.4g}"
        return self.feature


@dataclass(frozen=True)
class TreeView:
    """A policy tree: the split structure (None when only leaves are known)
    and the leaves in left-to-right order."""

    root: SplitView | int | None
    leaves: tuple[LeafView, ...]

    @property
    def depth(self) -> int:
        """Number of split levels above the deepest leaf (0 for a single leaf)."""
        return _depth(self.root)


@dataclass(frozen=True)
class RoundView:
    """What one frame of the evolution GIF shows about one round."""

    round_idx: int | None
    n_rounds: int | None
    treatments: tuple[str, ...]
    cells: tuple[CellView, ...]
    tree: TreeView | None
    n_visitors_round: int | None = None
    n_visitors_cumulative: int | None = None


def _get(obj: Any, name: str, default: Any = None) -> Any:
    """``obj[name]`` for mappings, ``obj.name`` otherwise; *default* when absent."""
    if obj is None:
        return default
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    return getattr(obj, name, default)


def _as_mapping(value: Any) -> Mapping[str, Any] | None:
    """A mapping as is; a plain attribute object (``SimpleNamespace``) as its
    ``vars()``; anything else None. Arm -> probability maps may come either way."""
    if isinstance(value, Mapping):
        return value
    attrs = getattr(value, "__dict__", None)
    return attrs if isinstance(attrs, dict) and value is not None and not callable(value) else None


def _number(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _integer(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _text(value: Any) -> str:
    # Enums (pytyche's policy kinds) print as their value.
    return str(getattr(value, "value", value))


def _policy_kind(policy: Any) -> str:
    kind = _get(policy, "kind")
    if kind is not None:
        return _text(kind).lower()
    name = type(policy).__name__.lower()
    for known in ("baseline", "uniform", "tree"):
        if known in name:
            return known
    return name or "unknown"


def _policy_arms(policy: Any) -> tuple[str, ...]:
    arm = _get(policy, "arm")
    if arm is not None:
        return (_text(arm),)
    arms = _get(policy, "arms")
    if arms is not None and not isinstance(arms, str | bytes):
        return tuple(_text(a) for a in arms)
    leaf_probs = _as_mapping(_get(policy, "leaf_probs"))
    if leaf_probs is not None:
        seen: dict[str, None] = {}
        for probs in leaf_probs.values():
            probs = _as_mapping(probs)
            if probs is not None:
                seen.update((str(a), None) for a in probs)
        return tuple(seen)
    return ()


def _cell(cell: Any, index: int) -> CellView:
    cell_id = _get(cell, "id", None) or _get(cell, "name", None) or f"cell{index}"
    weight = _number(_get(cell, "weight", 0.0)) or 0.0
    policy = _get(cell, "policy")
    return CellView(id=_text(cell_id), weight=max(weight, 0.0), kind=_policy_kind(policy), arms=_policy_arms(policy))


def _probs(value: Any) -> tuple[tuple[str, float], ...]:
    value = _as_mapping(value)
    if value is None:
        return ()
    out = []
    for arm, p in value.items():
        number = _number(p)
        if number is not None:
            out.append((_text(arm), number))
    return tuple(out)


def _leaf(leaf: Any, index: int) -> LeafView:
    leaf_id = _integer(_get(leaf, "id"))
    best = _get(leaf, "best_arm")
    return LeafView(
        id=index if leaf_id is None else leaf_id,
        rule=_text(_get(leaf, "rule", "") or ""),
        share=_number(_get(leaf, "share")),
        arm_probs=_probs(_get(leaf, "arm_probs")),
        best_arm=None if best is None else _text(best),
    )


def _node(node: Any, depth: int) -> SplitView | int | None:
    if node is None or depth > _MAX_DEPTH:
        return None
    leaf = _get(node, "leaf")
    if leaf is not None:
        return _integer(leaf)
    if isinstance(node, int) and not isinstance(node, bool):
        return node
    feature = _get(node, "feature")
    left = _node(_get(node, "left"), depth + 1)
    right = _node(_get(node, "right"), depth + 1)
    if feature is None or left is None or right is None:
        return None
    categories = _get(node, "categories")
    return SplitView(
        feature=_text(feature),
        categories=None if categories is None else tuple(_text(c) for c in categories),
        threshold=_number(_get(node, "threshold")),
        left=left,
        right=right,
    )


def _depth(node: SplitView | int | None) -> int:
    if not isinstance(node, SplitView):
        return 0
    return 1 + max(_depth(node.left), _depth(node.right))


def _in_order(node: SplitView | int | None, out: list[int]) -> None:
    if isinstance(node, SplitView):
        _in_order(node.left, out)
        _in_order(node.right, out)
    elif node is not None:
        out.append(node)


def _tree(tree: Any) -> TreeView | None:
    if tree is None:
        return None
    raw_leaves = _get(tree, "leaves")
    leaves: list[LeafView]
    if raw_leaves is not None and not isinstance(raw_leaves, str | bytes | Mapping):
        leaves = [_leaf(leaf, i) for i, leaf in enumerate(raw_leaves)]
    else:
        # pytyche-style trees expose only a leaf -> arm probabilities map.
        allocation = _as_mapping(_get(tree, "allocation_map"))
        if allocation is None:
            return TreeView(root=None, leaves=())
        leaves = [
            LeafView(id=_integer(k) if _integer(k) is not None else i, arm_probs=_probs(v))
            for i, (k, v) in enumerate(allocation.items())
        ]
    root = _node(_get(tree, "root"), 0)
    # Draw leaves in the order the splits place them; leaves the structure
    # does not reach (or all of them, without structure) follow in input order.
    order: list[int] = []
    _in_order(root, order)
    by_id = {leaf.id: leaf for leaf in leaves}
    if any(i not in by_id for i in order):
        root, order = None, []
    ordered = [by_id[i] for i in order if i in by_id]
    placed = set(order)
    ordered += [leaf for leaf in leaves if leaf.id not in placed]
    return TreeView(root=root, leaves=tuple(ordered))


def round_view(snapshot: Any) -> RoundView:
    """Read one round snapshot (dict, snapshot object or pytyche Experiment).

    Args:
        snapshot: Anything with ``cells_shipped`` and ``next_recommendation``
            (whose ``tree`` may be None), as keys or attributes.

    Returns:
        The :class:`RoundView` of that round.

    Raises:
        TypeError: When *snapshot* has no ``cells_shipped`` sequence.
    """
    cells = _get(snapshot, "cells_shipped")
    if cells is None or isinstance(cells, str | bytes | Mapping):
        raise TypeError(
            f"an experiment round snapshot needs a 'cells_shipped' list, got {type(snapshot).__name__} "
            f"whose cells_shipped is {type(cells).__name__}"
        )
    cells = list(cells)
    plan = _get(snapshot, "next_recommendation")
    treatments = _get(snapshot, "treatments") or _get(plan, "treatments") or ()
    cell_views = tuple(_cell(c, i) for i, c in enumerate(cells))
    if not treatments:
        seen: dict[str, None] = {}
        for cell in cell_views:
            seen.update((a, None) for a in cell.arms)
        treatments = tuple(seen)
    return RoundView(
        round_idx=_integer(_get(snapshot, "round_idx")),
        n_rounds=_integer(_get(snapshot, "n_rounds")),
        treatments=tuple(_text(t) for t in treatments),
        cells=cell_views,
        tree=_tree(_get(plan, "tree")),
        n_visitors_round=_integer(_get(snapshot, "n_visitors_round")),
        n_visitors_cumulative=_integer(_get(snapshot, "n_visitors_cumulative")),
    )


def read_history(history: Sequence[Any]) -> list[RoundView]:
    """:func:`round_view` of every round, in order.

    Raises:
        ValueError: When *history* is empty.
        TypeError: When a round lacks ``cells_shipped`` (names the round).
    """
    rounds = list(history)
    if not rounds:
        raise ValueError("history is empty: pass at least one round snapshot to render")
    views = []
    for i, snapshot in enumerate(rounds):
        try:
            views.append(round_view(snapshot))
        except TypeError as exc:
            raise TypeError(f"history[{i}]: {exc}") from None
    return views
