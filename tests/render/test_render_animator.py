"""Animator in-process (num_workers=1): frames, order, blitting, errors."""

from __future__ import annotations

import av
import numpy as np
import pytest
from matplotlib.figure import Figure

from simfarm.render.animator import Animator, FrameDrawer, FrameOrder, IndexedFrameParams, indexed_frames, resolve_workers


class Sine(Animator):
    """A moving sine wave: blits the line."""

    def __init__(self, points: int = 200) -> None:
        self.points = points

    def setup(self) -> Figure:
        fig = Figure(figsize=(3.2, 2.4), dpi=50)
        ax = fig.add_subplot()
        ax.set_xlim(0, 2 * np.pi)
        ax.set_ylim(-1.1, 1.1)
        self.x = np.linspace(0, 2 * np.pi, self.points)
        (self.line,) = ax.plot(self.x, np.sin(self.x))
        return fig

    def update(self, frame_idx, params):
        self.line.set_ydata(np.sin(self.x + params["phase"]))
        return [self.line]


class SineNoBlit(Sine):
    blit = False


def _decode(path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])]


def _params(n):
    return [{"phase": 0.3 * i} for i in range(n)]


def test_make_video_in_process(tmp_path):
    anim = Sine()
    path = anim.make_video(tmp_path / "sine.mp4", _params(12), fps=12, num_workers=1)
    frames = _decode(path)
    assert len(frames) == 12 and frames[0].shape == (120, 160, 3)
    assert not np.array_equal(frames[0], frames[5])
    assert not hasattr(anim, "line")  # setup ran on a copy: the animator stays light to ship


def test_blitted_frames_do_not_depend_on_drawing_order():
    # Workers draw different frames first; a frame's pixels must not care.
    forward, backward = FrameDrawer(Sine()), FrameDrawer(Sine())
    params = _params(5)
    first = [forward.draw(i, p) for i, p in enumerate(params)]
    second = {i: backward.draw(i, params[i]) for i in reversed(range(5))}
    assert all(np.array_equal(first[i], second[i]) for i in range(5))


def test_blitting_matches_full_redraws_up_to_stacking_order():
    # A blitted artist is drawn over the static ones (here: the left spine
    # it crosses); everywhere else the pixels are those of a full redraw.
    blit, full = FrameDrawer(Sine()), FrameDrawer(SineNoBlit())
    for i, p in enumerate(_params(5)):
        a, b = blit.draw(i, p), full.draw(i, p)
        differing = np.any(a != b, axis=-1)
        assert differing.mean() < 0.002


def test_indexed_params_in_any_order_give_the_same_video(tmp_path):
    ordered = Sine().make_video(tmp_path / "a.mp4", _params(10), fps=10, num_workers=1)
    shuffled = [IndexedFrameParams(i, p) for i, p in enumerate(_params(10))]
    shuffled = [shuffled[i] for i in (3, 0, 9, 1, 2, 8, 4, 7, 6, 5)]
    other = Sine().make_video(tmp_path / "b.mp4", shuffled, fps=10, num_workers=1)
    assert ordered.read_bytes() == other.read_bytes()


def test_generator_params_with_n_frames(tmp_path):
    endless = ({"phase": 0.1 * i} for i in range(10**9))
    path = Sine().make_video(tmp_path / "g.mp4", endless, fps=5, num_workers=1, n_frames=7)
    assert len(_decode(path)) == 7


def test_frame_id_errors(tmp_path):
    gap = [IndexedFrameParams(0, {"phase": 0}), IndexedFrameParams(2, {"phase": 1})]
    with pytest.raises(ValueError, match="frame 1 never arrived"):
        Sine().make_video(tmp_path / "gap.mp4", gap, num_workers=1)
    assert not (tmp_path / "gap.mp4").exists()  # no half-written video
    dup = [IndexedFrameParams(0, {"phase": 0}), IndexedFrameParams(0, {"phase": 1})]
    with pytest.raises(ValueError, match="given twice"):
        Sine().make_video(tmp_path / "dup.mp4", dup, num_workers=1)
    mixed = [IndexedFrameParams(0, {"phase": 0}), {"phase": 1}]
    with pytest.raises(ValueError, match="wrap every item or none"):
        list(indexed_frames(mixed))
    with pytest.raises(ValueError, match="frame_id"):
        list(indexed_frames([IndexedFrameParams(-1, None)]))
    with pytest.raises(ValueError, match="without frames"):
        Sine().make_video(tmp_path / "none.mp4", [], num_workers=1)


def test_setup_must_return_a_figure_and_methods_are_required(tmp_path):
    class NoFigure(Animator):
        def setup(self):
            return None

        def update(self, frame_idx, params):
            return None

    with pytest.raises(TypeError, match="must return a matplotlib Figure"):
        NoFigure().make_video(tmp_path / "x.mp4", [1], num_workers=1)
    with pytest.raises(NotImplementedError, match="setup"):
        Animator().make_video(tmp_path / "y.mp4", [1], num_workers=1)


def test_frame_order_and_worker_counts():
    emitted = []
    order = FrameOrder(emitted.append)
    for i in (2, 0, 1, 3):
        order.push(i, np.full(1, i))
    assert [int(e[0]) for e in emitted] == [0, 1, 2, 3] and order.finish() == 4
    assert resolve_workers(3) == 3 and resolve_workers(-1) >= 1
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="num_workers"):
            resolve_workers(bad)


def test_pyplot_figures_are_rasterised_off_screen():
    import matplotlib.pyplot as plt

    class PyplotSine(Sine):
        def setup(self):
            fig, ax = plt.subplots(figsize=(2, 2), dpi=40)
            self.x = np.linspace(0, 6, 50)
            (self.line,) = ax.plot(self.x, np.sin(self.x))
            return fig

    drawer = FrameDrawer(PyplotSine())
    frame = drawer.draw(0, {"phase": 0.0})
    assert frame.shape == (80, 80, 3)
    drawer.close()
    assert not plt.fignum_exists(drawer.fig.number)
