"""Duck-typed reading of round snapshots: dicts, attribute objects, pytyche-like objects."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from simfarm.render.history import SplitView, read_history, round_view


def test_dict_and_object_snapshots_read_the_same(history, to_objects):
    from_dicts = read_history(history)
    from_objects = read_history([to_objects(s) for s in history])
    assert from_dicts == from_objects
    assert from_dicts[0].tree is None  # round 0 fitted no tree
    assert [len(r.tree.leaves) for r in from_dicts[1:]] == [2, 3, 4, 5, 2]
    assert from_dicts[2].cells[2].id == "optimized"
    assert from_dicts[2].cells[2].kind == "tree"
    assert from_dicts[2].treatments == ("control", "a", "b")


def test_tree_leaves_follow_the_split_order(history):
    view = round_view(history[4])
    order = []

    def walk(node):
        if isinstance(node, SplitView):
            walk(node.left)
            walk(node.right)
        else:
            order.append(node)

    walk(view.tree.root)
    assert [leaf.id for leaf in view.tree.leaves] == order
    assert view.tree.depth >= 2
    leaf = view.tree.leaves[0]
    assert abs(sum(p for _, p in leaf.arm_probs) - 1.0) < 1e-3
    assert 0.0 <= leaf.share <= 1.0


class BaselinePolicy:
    def __init__(self, arm):
        self.arm = arm


class UniformPolicy:
    def __init__(self, arms):
        self.arms = arms


def test_pytyche_like_objects_with_allocation_map_only():
    # pytyche's cells carry policy objects without a 'kind'; its tree may
    # expose just a leaf -> arm probabilities map.
    tree = SimpleNamespace(allocation_map={0: {"control": 0.2, "a": 0.8}, 1: {"control": 0.9, "a": 0.1}})
    snapshot = SimpleNamespace(
        round_idx=1,
        cells_shipped=[SimpleNamespace(id="control", weight=0.1, policy=BaselinePolicy("control")),
                       SimpleNamespace(id="explore", weight=0.9, policy=UniformPolicy(["control", "a"]))],
        next_recommendation=SimpleNamespace(tree=tree),
    )
    view = round_view(snapshot)
    assert [c.kind for c in view.cells] == ["baseline", "uniform"]
    assert view.treatments == ("control", "a")  # inferred from the cells
    assert view.tree.root is None
    assert [leaf.arm_probs for leaf in view.tree.leaves] == [(("control", 0.2), ("a", 0.8)), (("control", 0.9), ("a", 0.1))]


def test_unknown_keys_and_nulls_are_tolerated(history):
    snapshot = dict(history[2])
    snapshot["something_new"] = {"nested": [1, 2]}
    snapshot["n_rounds"] = None
    snapshot["next_recommendation"] = None
    view = round_view(snapshot)
    assert view.tree is None and view.n_rounds is None
    assert len(view.cells) == 3


def test_empty_history_and_missing_cells_are_errors(history):
    with pytest.raises(ValueError, match="history is empty"):
        read_history([])
    with pytest.raises(TypeError, match=r"history\[1\]: .*cells_shipped"):
        read_history([history[0], {"round_idx": 1}])
