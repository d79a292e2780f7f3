"""Frames of the experiment evolution animation, drawn on one reused figure.

A frame shows, for round *i* of *N*:

- left: the cell allocation of every round so far as stacked bars (one
  bar per round, one segment per cell); the current round is opaque and
  labelled with percentages, earlier rounds are faded;
- right: the policy tree the round fitted (splits, and per leaf its
  population share and the Optimized cell's arm probabilities as text and
  as a small stacked bar), or a note when the round fitted none.

Why it is fast: the figure, its axes, ticks, legends and labels are built
and rasterised once; each frame restores that background and draws only
the artists that change (bars, tree edges and boxes). The text that
changes per frame (title, percentages, split conditions, leaf facts) is
blended in from rasterised lines cached by :mod:`simfarm.render.textsprites`
-- text is most of the cost of a frame, and lines repeat between rounds.
The tree's artists are rebuilt only when the tree differs from the
previous frame's. The naive way (clear the figure, re-create the axes,
redraw every artist and every text per frame) pays all of it every frame.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from matplotlib.artist import Artist
from matplotlib.patches import FancyBboxPatch, Patch, Rectangle
from matplotlib.ticker import MaxNLocator
from matplotlib.transforms import IdentityTransform

from simfarm.render.figures import arm_colors, cell_colors, figure_rgb, new_figure, style
from simfarm.render.history import LeafView, RoundView, SplitView, TreeView, read_history
from simfarm.render.textsprites import Line, TextBlock, TextSprites

__all__ = ["EvolutionPainter", "evolution_frames"]

_DPI = 100.0
_CELLS_WIDTH_IN = 4.2  # the allocation panel, labels included
_LEAF_WIDTH_IN = 1.7  # horizontal room per leaf column of the tree
_MIN_TREE_WIDTH_IN = 6.0
_LEVEL_HEIGHT_IN = 0.95  # vertical room per split level
_LINE_HEIGHT_IN = 0.16  # one line of leaf text
_PAST_ALPHA = 0.35
_PERCENT_BOX = {"facecolor": "white", "alpha": 0.75, "linewidth": 0}
_EDGE_BOX = {"facecolor": "white", "linewidth": 0}
_SPLIT_BOX = {"facecolor": "#f3f4f6", "edgecolor": "#9ca3af", "linewidth": 0.8}
_LEAF_BOX = {"facecolor": "white", "edgecolor": "#d1d5db", "linewidth": 0.8}
#: A text block placed in a frame: (block, left, top) in image pixels.
_Label = tuple[TextBlock, int, int]


class EvolutionPainter:
    """Draws the frames of one history on one fixed-size figure.

    Args:
        history: Round snapshots in any of the shapes :func:`read_history`
            accepts.

    Raises:
        ValueError: When *history* is empty.

    Attributes:
        size: ``(width, height)`` in pixels, the same for every frame.
    """

    def __init__(self, history: Sequence[Any]) -> None:
        self.rounds: list[RoundView] = read_history(history)
        trees = [r.tree for r in self.rounds if r.tree is not None]
        self.max_leaves = max((max(len(t.leaves), 1) for t in trees), default=1)
        self.max_depth = max((t.depth for t in trees), default=0)
        arms: dict[str, None] = {}
        for r in self.rounds:
            arms.update((a, None) for a in r.treatments)
            for t in [r.tree] if r.tree is not None else []:
                for leaf in t.leaves:
                    arms.update((a, None) for a, _ in leaf.arm_probs)
        self.arms = tuple(arms)
        self.max_arms = max(len(self.arms), 1)
        self._arm_color = arm_colors(self.arms)
        self._cell_color = cell_colors([(c.id, c.kind) for r in self.rounds for c in r.cells])

        tree_width = max(_MIN_TREE_WIDTH_IN, _LEAF_WIDTH_IN * self.max_leaves)
        leaf_height = _LINE_HEIGHT_IN * (self.max_arms + 2) + 0.3
        height = max(5.0, 1.6 + _LEVEL_HEIGHT_IN * self.max_depth + leaf_height + 0.6)
        with style():
            self.fig, self.canvas = new_figure(_CELLS_WIDTH_IN + tree_width, height, _DPI)
            self._build_static(tree_width, height)
        self.size = (int(self.canvas.get_width_height()[0]), int(self.canvas.get_width_height()[1]))
        self._background: Any = None
        self._text = TextSprites(_DPI)
        self._shown_tree: TreeView | None | str = "unset"
        self._tree_artists: list[Artist] = []
        self._tree_labels: list[_Label] = []

    # -- static part --------------------------------------------------------
    def _build_static(self, tree_width: float, height: float) -> None:
        width = _CELLS_WIDTH_IN + tree_width
        n = len(self.rounds)
        # Axes placed in inches (converted to figure fractions) so that the
        # panels keep their size whatever the tree width.
        self.ax_cells = self.fig.add_axes(
            (0.7 / width, 1.0 / height, (_CELLS_WIDTH_IN - 1.2) / width, (height - 2.3) / height)
        )
        ax = self.ax_cells
        ax.set_xlim(0.4, n + 0.6)
        ax.set_ylim(0.0, 1.0)
        ax.set_xlabel("round")
        ax.set_ylabel("share of traffic")
        ax.set_title("cell allocation", loc="left")
        if n <= 15:
            ax.set_xticks(range(1, n + 1))
        else:
            ax.xaxis.set_major_locator(MaxNLocator(nbins=12, integer=True))
        ax.yaxis.set_major_formatter(lambda v, _pos: f"{v:.0%}")
        ax.grid(axis="x", visible=False)
        _swatches(ax, self._cell_color, "lower left", (0.0, 1.06), max_columns=3)

        self.ax_tree = self.fig.add_axes(
            (_CELLS_WIDTH_IN / width, 0.55 / height, (tree_width - 0.2) / width, (height - 1.55) / height)
        )
        self.ax_tree.set_axis_off()
        self.ax_tree.set_xlim(0.0, float(self.max_leaves))
        leaf_units = (_LINE_HEIGHT_IN * (self.max_arms + 2) + 0.3) / _LEVEL_HEIGHT_IN
        self.ax_tree.set_ylim(-(self.max_depth + leaf_units), 0.35)
        self.ax_tree.text(0.0, 1.0, "policy tree", transform=self.ax_tree.transAxes,
                          fontweight="bold", fontsize=10, va="bottom")
        self.ax_tree.text(0.0, 0.985, "bars and percentages: the Optimized cell's arm probabilities per leaf",
                          transform=self.ax_tree.transAxes, fontsize=8, color="#4b5563", va="top")
        _swatches(self.ax_tree, {a: self._arm_color[a] for a in self.arms}, "lower right", (1.0, 1.0), max_columns=6)

        # Every round's bar segments exist from the start; frames only
        # toggle visibility and alpha.
        self._bars: list[list[Rectangle]] = []
        for r, view in enumerate(self.rounds):
            bottom = 0.0
            total = sum(c.weight for c in view.cells) or 1.0
            segments = []
            for cell in view.cells:
                share = cell.weight / total
                rect = Rectangle((r + 1 - 0.38, bottom), 0.76, share, facecolor=self._cell_color[cell.id],
                                 edgecolor="white", linewidth=0.6, animated=True, visible=False)
                ax.add_patch(rect)
                segments.append(rect)
                bottom += share
            self._bars.append(segments)


    # -- dynamic part -------------------------------------------------------
    def _to_image(self, ax: Any, x: float, y: float) -> tuple[float, float]:
        """Data coordinates of *ax* -> image pixels (origin top-left)."""
        xd, yd = ax.transData.transform((x, y))
        return float(xd), self.size[1] - float(yd)

    def _add_label(self, artists: list[Artist], labels: list[_Label], lines: list[Line], x: float, y: float, *,
                   ha: str = "center", va: str = "center", box: dict[str, Any] | None = None,
                   pad: float = 3.0) -> None:
        """Queue a text block at image position ``(x, y)``, with an optional
        rounded box behind it (the box joins *artists*, the text *labels*)."""
        block = self._text.block(lines)
        left, top = TextSprites.place(block, x, y, ha, va)
        if box is not None:
            # Boxes are drawn by matplotlib (display coordinates: origin bottom-left).
            patch = FancyBboxPatch((left, self.size[1] - top - block.height), block.width, block.height,
                                   boxstyle=f"round,pad={pad}", transform=IdentityTransform(), **box)
            patch.set_figure(self.fig)
            artists.append(patch)
        labels.append((block, left, top))

    def _set_round(self, i: int) -> tuple[list[Artist], list[_Label]]:
        view = self.rounds[i]
        n = len(self.rounds)
        width = self.size[0]
        artists: list[Artist] = []
        labels: list[_Label] = []
        self._add_label(artists, labels, [Line(f"round {i + 1}/{n}", 13, "bold")], width / 2, 8, va="top")
        facts = []
        if view.round_idx is not None:
            total = f" of {view.n_rounds}" if view.n_rounds is not None else ""
            facts.append(f"round index {view.round_idx}{total}")
        if view.n_visitors_round is not None:
            facts.append(f"{view.n_visitors_round:,} visitors this round")
        if view.n_visitors_cumulative is not None:
            facts.append(f"{view.n_visitors_cumulative:,} in total")
        if facts:
            self._add_label(artists, labels, [Line(" · ".join(facts), 9, color="#4b5563")], width / 2, 36, va="top")
        for r, segments in enumerate(self._bars):
            for rect in segments:
                rect.set_visible(r <= i)
                rect.set_alpha(1.0 if r == i else _PAST_ALPHA)
                if r <= i:
                    artists.append(rect)
        for rect in self._bars[i]:
            share = rect.get_height()
            if share >= 0.06:
                x, y = self._to_image(self.ax_cells, rect.get_x() + rect.get_width() / 2, rect.get_y() + share / 2)
                self._add_label(artists, labels, [Line(f"{share:.0%}", 7)], x, y, box=_PERCENT_BOX, pad=1.5)

        if view.tree != self._shown_tree:
            self._tree_artists, self._tree_labels = self._draw_tree(view.tree)
            self._shown_tree = view.tree
        return [*artists, *self._tree_artists], [*labels, *self._tree_labels]

    def _draw_tree(self, tree: TreeView | None) -> tuple[list[Artist], list[_Label]]:
        for artist in self._tree_artists:
            if artist.axes is not None:
                artist.remove()
        artists: list[Artist] = []
        labels: list[_Label] = []
        if tree is None or not tree.leaves:
            x, y = self._to_image(self.ax_tree, self.max_leaves / 2, -0.5 * (self.max_depth + 1))
            self._add_label(artists, labels, [Line("no policy tree fitted in this round", 11, color="#6b7280")], x, y)
            return artists, labels
        offset = (self.max_leaves - len(tree.leaves)) / 2
        column = {leaf.id: offset + k + 0.5 for k, leaf in enumerate(tree.leaves)}
        leaves = {leaf.id: leaf for leaf in tree.leaves}
        if tree.root is None:
            for leaf in tree.leaves:
                self._draw_leaf(leaf, column[leaf.id], 0.0, artists, labels)
        else:
            self._draw_node(tree.root, 0, column, leaves, artists, labels)
        return artists, labels

    def _draw_node(self, node: SplitView | int, level: int, column: dict[int, float], leaves: dict[int, LeafView],
                   artists: list[Artist], labels: list[_Label]) -> float:
        """Draw *node* and its subtree; return its x position (data units)."""
        y = -float(level)
        if not isinstance(node, SplitView):
            x = column[node]
            self._draw_leaf(leaves[node], x, y, artists, labels)
            return x
        x_left = self._draw_node(node.left, level + 1, column, leaves, artists, labels)
        x_right = self._draw_node(node.right, level + 1, column, leaves, artists, labels)
        x = (x_left + x_right) / 2
        ax = self.ax_tree
        for child_x, answer in ((x_left, "yes"), (x_right, "no")):
            artists.append(ax.plot([x, child_x], [y, y - 1.0 + 0.12], color="#9ca3af", linewidth=1.0,
                                   animated=True)[0])
            mx, my = self._to_image(ax, (x + child_x) / 2, y - 0.45)
            self._add_label(artists, labels, [Line(answer, 7, color="#6b7280")], mx, my, box=_EDGE_BOX, pad=1.0)
        nx, ny = self._to_image(ax, x, y)
        self._add_label(artists, labels, [Line(node.label(), 8)], nx, ny, box=_SPLIT_BOX, pad=3.0)
        return x

    def _draw_leaf(self, leaf: LeafView, x: float, y: float, artists: list[Artist], labels: list[_Label]) -> None:
        ax = self.ax_tree
        # The stacked bar of arm probabilities sits on the node position,
        # the text hangs below it.
        bar_height = 0.14
        left = x - 0.4
        total = sum(p for _, p in leaf.arm_probs) or 1.0
        for arm, p in leaf.arm_probs:
            width = 0.8 * p / total
            rect = Rectangle((left, y - bar_height / 2), width, bar_height, animated=True,
                             facecolor=self._arm_color.get(arm, "#6b7280"), edgecolor="none")
            ax.add_patch(rect)
            artists.append(rect)
            left += width
        frame = Rectangle((x - 0.4, y - bar_height / 2), 0.8, bar_height, fill=False, edgecolor="#374151",
                          linewidth=0.6, animated=True)
        ax.add_patch(frame)
        artists.append(frame)
        head = f"leaf {leaf.id}"
        if leaf.share is not None:
            head += f" · {leaf.share:.0%} of users"
        lines = [Line(head, 7.5)]
        best = leaf.best_arm or (max(leaf.arm_probs, key=lambda ap: ap[1])[0] if leaf.arm_probs else None)
        for arm, p in leaf.arm_probs:
            mark = "  (best)" if arm == best else ""
            lines.append(Line(f"{arm}: {p:.0%}{mark}", 7.5))
        tx, ty = self._to_image(ax, x, y - bar_height / 2)
        self._add_label(artists, labels, lines, tx, ty + 8, va="top", box=_LEAF_BOX, pad=3.0)

    # -- frames --------------------------------------------------------------
    def frame(self, i: int) -> np.ndarray:
        """The pixels of round *i*'s frame, ``uint8 (H, W, 3)``.

        Raises:
            IndexError: When *i* is not a round of the history.
        """
        if not 0 <= i < len(self.rounds):
            raise IndexError(f"frame index must be in [0, {len(self.rounds)}), got {i}")
        with style():
            artists, labels = self._set_round(i)
            if self._background is None:
                # Animated artists are left out of a full draw: what is
                # rasterised here is exactly the static background.
                self.canvas.draw()
                self._background = self.canvas.copy_from_bbox(self.fig.bbox)
            else:
                self.canvas.restore_region(self._background)
            renderer = self.canvas.get_renderer()
            for artist in artists:
                artist.draw(renderer)
            pixels = figure_rgb(self.canvas)
        for block, left, top in labels:
            self._text.blend(pixels, block, left, top)
        return pixels

    def frames(self) -> Iterator[np.ndarray]:
        """Every frame in round order."""
        for i in range(len(self.rounds)):
            yield self.frame(i)


def _swatches(ax: Any, colors: dict[str, str], loc: str, anchor: tuple[float, float], *, max_columns: int) -> None:
    """A frameless legend of colour swatches above *ax* (nothing when empty)."""
    if not colors:
        return
    handles = [Patch(facecolor=color, label=label) for label, color in colors.items()]
    ax.legend(handles=handles, loc=loc, bbox_to_anchor=anchor, ncol=min(len(handles), max_columns), frameon=False,
              fontsize=8, handlelength=1.0, columnspacing=1.0, borderaxespad=0.0)


def evolution_frames(history: Sequence[Any]) -> np.ndarray:
    """All frames of *history* stacked, ``uint8 (T, H, W, 3)``.

    Raises:
        ValueError: When *history* is empty.
    """
    painter = EvolutionPainter(history)
    return np.stack(list(painter.frames()))
