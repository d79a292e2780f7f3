"""Animator: matplotlib animations rendered frame-parallel, encoded in order.

Subclass :class:`Animator` and define two methods:

- ``setup(self) -> Figure``: build the figure once; keep the artists you
  will change as attributes of ``self``;
- ``update(self, frame_idx, params)``: change those artists for one frame.
  Return the artists you changed to let the frame be *blitted* (only they
  are redrawn over a cached background), or None to redraw the whole
  figure (needed when axis limits, ticks or titles change).

Then ``make_video("out.mp4", param_by_frame, fps=30, num_workers=-1)``.
``num_workers`` counts the drawing processes, this one included. With one,
frames are drawn here (no Ray at all). With n > 1, n - 1 render actors
each call ``setup()`` once and draw chunks of frames
handed out dynamically; frames return to this process and one encoder
(:class:`~simfarm.render.video.Mp4Writer`) writes them in frame order.
While no actor result is waiting (above all while the actors start), this
process draws single frames itself.

Heavy data: the animator object is serialised once into Ray's object
store and every actor holds a copy of it, so an array stored on ``self``
costs memory in every actor. Pass per-frame data through
``param_by_frame`` (a generator is fine: items are pulled as actors need
them), or load it inside ``setup()``, or store an ``ObjectRef`` on ``self``
and fetch it in ``setup()``. A warning is issued when the animator
serialises to more than 64 MiB.

Frames whose params arrive out of order carry their position explicitly:
``IndexedFrameParams(frame_id, params)``.
"""

from __future__ import annotations

import copy
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.artist import Artist
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from simfarm.render.figures import figure_rgb
from simfarm.render.video import DEFAULT_CRF, DEFAULT_PRESET, Mp4Writer

__all__ = ["Animator", "FrameDrawer", "FrameOrder", "IndexedFrameParams", "indexed_frames", "resolve_workers"]

#: Frames handed to an actor at a time when the frame count is unknown.
DEFAULT_CHUNK = 8


@dataclass(frozen=True)
class IndexedFrameParams:
    """Params of frame *frame_id* (0-based), for params that arrive in any order."""

    frame_id: int
    params: Any


def resolve_workers(num_workers: int) -> int:
    """Worker count: n >= 1 as given, -1 all CPUs, -2 all but one, ...

    Raises:
        ValueError: When *num_workers* is 0 or not an integer.
    """
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers == 0:
        raise ValueError(f"num_workers must be a positive integer or -1, -2, ... (CPUs minus k-1), got {num_workers!r}")
    if num_workers > 0:
        return num_workers
    return max(1, (os.cpu_count() or 1) + 1 + num_workers)


def indexed_frames(param_by_frame: Iterable[Any], n_frames: int | None = None) -> Iterator[tuple[int, Any]]:
    """``(frame_id, params)`` pairs from *param_by_frame*.

    Plain items are numbered in iteration order; :class:`IndexedFrameParams`
    items carry their own id. Mixing the two is an error. At most *n_frames*
    items are read (None: all).

    Raises:
        ValueError: Mixed item kinds or a negative/non-integer frame id.
    """
    indexed: bool | None = None
    for position, item in enumerate(param_by_frame):
        if n_frames is not None and position >= n_frames:
            return
        is_indexed = isinstance(item, IndexedFrameParams)
        if indexed is None:
            indexed = is_indexed
        elif indexed != is_indexed:
            raise ValueError(
                f"param_by_frame item {position} is {'an' if is_indexed else 'not an'} IndexedFrameParams but "
                f"item 0 {'is' if indexed else 'is not'}: wrap every item or none"
            )
        if is_indexed:
            frame_id = item.frame_id
            if isinstance(frame_id, bool) or not isinstance(frame_id, int | np.integer) or frame_id < 0:
                raise ValueError(f"IndexedFrameParams.frame_id must be a non-negative integer, got {frame_id!r}")
            yield int(frame_id), item.params
        else:
            yield position, item


class FrameOrder:
    """Reorder buffer: accepts frames in any order, emits them in frame order.

    Args:
        emit: Called with each frame, in order 0, 1, 2, ...
    """

    def __init__(self, emit: Callable[[np.ndarray], None]) -> None:
        self._emit = emit
        self._pending: dict[int, np.ndarray] = {}
        self.next_id = 0

    def push(self, frame_id: int, frame: np.ndarray) -> None:
        """Add frame *frame_id*; emit every frame that is now contiguous.

        Raises:
            ValueError: When *frame_id* was already given.
        """
        if frame_id < self.next_id or frame_id in self._pending:
            raise ValueError(f"frame {frame_id} was given twice: every frame_id must be unique")
        self._pending[frame_id] = frame
        while self.next_id in self._pending:
            self._emit(self._pending.pop(self.next_id))
            self.next_id += 1

    def finish(self) -> int:
        """Check that no frame is missing; return the number of frames emitted.

        Raises:
            ValueError: When some frame ids were skipped (names the first gap).
        """
        if self._pending:
            raise ValueError(
                f"frame {self.next_id} never arrived but frames up to {max(self._pending)} did: "
                "frame ids must cover 0 .. n-1 without gaps"
            )
        return self.next_id


class FrameDrawer:
    """Calls ``setup()`` once on a copy of an animator, then draws frames,
    blitting when ``update`` returns its artists.

    The copy keeps the caller's animator free of figure state (so it stays
    light to serialise for actors).

    Raises:
        TypeError: When ``setup()`` does not return a matplotlib Figure.
    """

    def __init__(self, animator: Animator) -> None:
        self.animator = copy.copy(animator)
        fig = self.animator.setup()
        if not isinstance(fig, Figure):
            raise TypeError(f"{type(animator).__name__}.setup() must return a matplotlib Figure, got {type(fig).__name__}")
        if not isinstance(fig.canvas, FigureCanvasAgg):
            FigureCanvasAgg(fig)  # rasterise off-screen whatever the session's backend
        self.fig = fig
        self.canvas: FigureCanvasAgg = fig.canvas
        self._blit_key: tuple[int, ...] | None = None
        self._background: Any = None
        self.blit = bool(getattr(animator, "blit", True))

    def draw(self, frame_idx: int, params: Any) -> np.ndarray:
        """Update the figure for one frame and return its pixels ``uint8 (H, W, 3)``."""
        artists = self.animator.update(frame_idx, params)
        artists = None if artists is None or not self.blit else [a for a in artists if isinstance(a, Artist)]
        if not artists:
            if self._blit_key is not None:
                self._reset_blit()
            self.canvas.draw()
            return figure_rgb(self.canvas)
        key = tuple(id(a) for a in artists)
        if key != self._blit_key:
            self._reset_blit()
            for artist in artists:
                artist.set_animated(True)
            self.canvas.draw()  # everything but the animated artists: the background
            self._background = self.canvas.copy_from_bbox(self.fig.bbox)
            self._blit_key = key
            self._blitted = artists
        else:
            self.canvas.restore_region(self._background)
        renderer = self.canvas.get_renderer()
        for artist in artists:
            artist.draw(renderer)
        return figure_rgb(self.canvas)

    def _reset_blit(self) -> None:
        for artist in getattr(self, "_blitted", []):
            artist.set_animated(False)
        self._blit_key, self._background, self._blitted = None, None, []

    def close(self) -> None:
        """Release the figure (from pyplot's registry too, when it is there)."""
        pyplot = sys.modules.get("matplotlib.pyplot")
        if pyplot is not None:
            pyplot.close(self.fig)


class Animator:
    """Base class of parallel matplotlib animations (see the module docs).

    Attributes:
        blit: Class attribute; set False to always redraw whole frames.
    """

    blit: bool = True

    def setup(self) -> Figure:
        """Build and return the figure; store artists on ``self``. Called once per worker."""
        raise NotImplementedError(f"{type(self).__name__} must define setup(self) -> Figure")

    def update(self, frame_idx: int, params: Any) -> Iterable[Artist] | None:
        """Change the artists for frame *frame_idx*.

        Must depend only on ``(frame_idx, params)`` (and state built in
        ``setup``): frames are drawn by different workers in any order.

        Returns:
            The changed artists (blitting), or None (full redraw).
        """
        raise NotImplementedError(f"{type(self).__name__} must define update(self, frame_idx, params)")

    def make_video(
        self,
        output_file: str | Path,
        param_by_frame: Iterable[Any],
        fps: int | float | Fraction = 30,
        num_workers: int = -1,
        *,
        n_frames: int | None = None,
        chunk_size: int | None = None,
        crf: int = DEFAULT_CRF,
        preset: str = DEFAULT_PRESET,
        pool: Any = None,
    ) -> Path:
        """Render every frame and write an H.264 MP4.

        Args:
            output_file: Destination ``.mp4`` (parent folders are created).
            param_by_frame: One item per frame, passed to ``update`` as
                ``params`` (list, tuple or generator), or
                :class:`IndexedFrameParams` items in any order.
            fps: Frame rate: int, float or Fraction.
            num_workers: Processes that draw, this one included: 1 draws
                here without Ray; n > 1 starts n - 1 render actors (and a
                local Ray when none is initialised) while this process
                draws whenever no actor's frames are waiting to be encoded;
                -1 all CPUs, -2 all but one, ...
            n_frames: Read at most this many items (None: all).
            chunk_size: Frames per actor request (None: chosen from the
                frame count when known, else 8).
            crf: libx264 quality.
            preset: libx264 speed preset.
            pool: A running :class:`simfarm.farm.renderers.RenderPool`
                whose actors draw the frames and stay up afterwards (no
                start-up cost per video); *num_workers* is then ignored.

        Returns:
            *output_file* as a :class:`~pathlib.Path`.

        Raises:
            ValueError: No frames, duplicate or missing frame ids, bad
                arguments, or frames of different sizes.
            Exception: Whatever ``setup``/``update`` raised (also from actors).
        """
        workers = resolve_workers(num_workers) if pool is None else max(1, pool.n_workers)
        if n_frames is not None and (isinstance(n_frames, bool) or not isinstance(n_frames, int) or n_frames < 1):
            raise ValueError(f"n_frames must be a positive integer or None, got {n_frames!r}")
        items = indexed_frames(param_by_frame, n_frames)
        out = Path(output_file)
        try:
            with Mp4Writer(out, fps, crf=crf, preset=preset) as video:
                order = FrameOrder(video.write)
                if workers == 1 and (pool is None or pool.n_workers == 0):
                    drawer = FrameDrawer(self)
                    try:
                        for frame_id, params in items:
                            order.push(frame_id, drawer.draw(frame_id, params))
                    finally:
                        drawer.close()
                else:
                    from simfarm.farm.renderers import animate_frames  # Ray only on this path

                    total = n_frames if n_frames is not None else _length(param_by_frame)
                    if chunk_size is None:
                        chunk_size = DEFAULT_CHUNK if total is None else max(1, min(8, total // (8 * workers)))
                    local = _LazyDrawer(self)  # this process draws too while it waits
                    try:
                        actors = pool.actors if pool is not None else None
                        # num_workers counts the drawing processes, this one included: a
                        # new actor costs a process start (Ray + matplotlib imports, ~1 s
                        # of CPU) that this already set-up process does not.
                        n_actors = workers - 1 if pool is None else workers
                        for frame_id, frame in animate_frames(self, items, n_actors, chunk_size=chunk_size,
                                                              local_draw=local.draw, actors=actors):
                            order.push(frame_id, frame)
                    finally:
                        local.close()
                order.finish()
        except BaseException:
            out.unlink(missing_ok=True)  # no half-written video left behind
            raise
        return out


class _LazyDrawer:
    """A :class:`FrameDrawer` made on first use (``setup()`` only if this process draws)."""

    def __init__(self, animator: Animator) -> None:
        self._animator = animator
        self._drawer: FrameDrawer | None = None

    def draw(self, frame_idx: int, params: Any) -> np.ndarray:
        if self._drawer is None:
            self._drawer = FrameDrawer(self._animator)
        return self._drawer.draw(frame_idx, params)

    def close(self) -> None:
        if self._drawer is not None:
            self._drawer.close()


def _length(items: Iterable[Any]) -> int | None:
    try:
        return len(items)  # type: ignore[arg-type]
    except TypeError:
        return None
