"""Render benchmarks: ours against a peer, side by side in one process run.

    python scripts/bench_render.py            # all four comparisons
    python scripts/bench_render.py --only a,d --repeats 5

(a) evolution GIF of a 12-round history: the naive way (clear the figure,
    re-create the axes and redraw everything per frame, then Pillow's
    default GIF save, as pytyche's ``experiment_evolution_gif`` does) vs
    ``simfarm.render.experiment_evolution_gif``;
(b) a 200-frame Animator video: ``num_workers=1`` (this process) vs two
    drawing processes, cold (``num_workers=2``: this process and one new
    render actor, started and killed by the call, start-up included) and
    warm (``pool=`` a running RenderPool of 2 actors, as in (c));
(c) 32 episode GIFs from traces stored as ``.npz`` (as the farm stores
    them): ``run_task`` one after the other in this process (each reads its
    file) vs a ``RenderPool`` of 2 render actors that read the files
    themselves (started before timing: in the farm the pool lives as long
    as the run; its start-up is printed apart);
(c') the same 32 GIFs from traces in memory, whose frames the pool ships
    to its actors through Ray's object store;
(d) GIF encoding alone: Pillow's default save of RGB frames vs
    ``simfarm.render.gif.encode_gif`` (shared palette, merged duplicates).

Timings are medians over --repeats runs, taken alternately (peer, ours,
peer, ours, ...) so that background load hits both; the ratio of the best
(fastest) runs is printed too. The ratios are what to read, the absolute
times depend on the machine. Before (b) and (c) the script measures how
much two processes gain over one on a pure CPU loop at that moment: on a
machine shared with other work that is the ceiling for (b) and (c).
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
from collections.abc import Callable

# One BLAS/OpenMP thread, as Ray gives its workers: otherwise the serial peer
# would quietly use the second core through a multi-threaded BLAS.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# Ray starts its workers at nice 15; the serial peer runs in this process at
# nice 0. On a machine busy with other work that would handicap the actors,
# so they get the same priority as the peer here.
os.environ.setdefault("RAY_worker_niceness", "0")

from matplotlib.figure import Figure  # noqa: E402
from matplotlib.text import Text  # noqa: E402
from matplotlib.transforms import IdentityTransform  # noqa: E402
from PIL import Image  # noqa: E402

from simfarm.render.animator import Animator  # noqa: E402
from simfarm.render.evolution import EvolutionPainter  # noqa: E402
from simfarm.render.figures import style  # noqa: E402
from simfarm.render.gif import encode_gif, evolution_gif_bytes  # noqa: E402
from simfarm.render.samples import sample_history, sample_trace  # noqa: E402
from simfarm.render.tasks import RenderOptions, run_task, stored_trace_tasks, trace_tasks  # noqa: E402


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def compare(name: str, peer: tuple[str, Callable[[], object]], ours: tuple[str, Callable[[], object]],
            repeats: int) -> dict[str, float]:
    """Times of each side over *repeats* alternating runs; prints the medians,
    their ratio, and the ratio of the best runs (least disturbed by other load)."""
    peer_times, our_times = [], []
    for _ in range(repeats):
        peer_times.append(timed(peer[1]))
        our_times.append(timed(ours[1]))
    p, o = statistics.median(peer_times), statistics.median(our_times)
    best = min(peer_times) / min(our_times)
    print(f"{name:<4} {peer[0]:<44} {p:8.3f} s   {ours[0]:<40} {o:8.3f} s   ratio {p / o:5.2f}x"
          f"   (best runs {best:5.2f}x)", flush=True)
    return {"peer": p, "ours": o, "ratio": p / o, "best_ratio": best}


# -- how much 2-way parallelism the machine offers right now ----------------------
def _burn(n: int = 12_000_000) -> None:
    total = 0
    for i in range(n):
        total += i


def two_process_speedup(target: Callable[..., None], halves: tuple[tuple, tuple], whole: tuple) -> float:
    """Time of ``target(*whole)`` in this process over the time of two forked
    processes running ``target(*halves[0])`` and ``target(*halves[1])``."""
    import multiprocessing as mp

    serial = timed(lambda: target(*whole))
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=target, args=half) for half in halves]

    def both() -> None:
        for p in procs:
            p.start()
        for p in procs:
            p.join()

    return serial / timed(both)


def parallel_headroom() -> float:
    """Speed-up of two processes over one on a pure-Python loop: the ceiling
    for (b) and (c) at this moment (2.0 on two idle cores)."""
    n = 12_000_000
    return two_process_speedup(_burn, ((n,), (n,)), (2 * n,))


# -- (a) evolution GIF ------------------------------------------------------------
class NaiveEvolution(EvolutionPainter):
    """The same pictures drawn the naive way: clear the figure and rebuild
    every axis, tick and legend for each frame, draw every text with
    matplotlib's Text artists, and redraw everything."""

    def frame(self, i: int) -> np.ndarray:
        self.fig.clear()
        self._tree_artists, self._tree_labels, self._shown_tree = [], [], "unset"
        with style():
            self._build_static(self.fig.get_figwidth() - 4.2, self.fig.get_figheight())
        self._background = None  # full draw of everything, every frame
        return super().frame(i)

    def _add_label(self, artists, labels, lines, x, y, *, ha="center", va="center", box=None, pad=3.0):
        text = Text(x, self.size[1] - y, "\n".join(line.text for line in lines), ha=ha, va=va,
                    fontsize=lines[0].size, fontweight=lines[0].weight, color=lines[0].color,
                    transform=IdentityTransform(), linespacing=1.25,
                    bbox=None if box is None else {"boxstyle": f"round,pad={pad / 10}", **box})
        text.set_figure(self.fig)
        artists.append(text)


def naive_evolution_gif(history: list) -> bytes:
    painter = NaiveEvolution(history)
    frames = [Image.fromarray(painter.frame(i)).convert("RGB") for i in range(len(history))]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=5000, loop=0)
    return buf.getvalue()


def bench_evolution(repeats: int) -> dict[str, float]:
    history = sample_history(12, seed=1, max_leaves=6)
    naive, ours = naive_evolution_gif(history), evolution_gif_bytes(history)[0]
    with Image.open(io.BytesIO(naive)) as a, Image.open(io.BytesIO(ours)) as b:
        assert a.n_frames == b.n_frames == 12 and a.size == b.size
    return compare("(a)", ("naive: cleared figure + Pillow default", lambda: naive_evolution_gif(history)),
                   ("ours: experiment_evolution_gif", lambda: evolution_gif_bytes(history)), repeats)


# -- (b) Animator ----------------------------------------------------------------
class Orbits(Animator):
    """A dense scientific frame: an image, a scatter, a trail and a zooming
    camera (axis limits change, so every frame is a full redraw)."""

    blit = False

    def setup(self) -> Figure:
        fig = Figure(figsize=(8, 4.5), dpi=100)
        self.ax_map, self.ax_line = fig.subplots(1, 2)
        y, x = np.mgrid[-2:2:160j, -2:2:160j]
        self.field = self.ax_map.imshow(np.sin(3 * x) * np.cos(3 * y), extent=(-2, 2, -2, 2), cmap="viridis")
        rng = np.random.default_rng(0)
        self.base = rng.normal(size=(600, 2))
        self.points = self.ax_map.scatter(self.base[:, 0], self.base[:, 1], s=6, c=rng.random(600), cmap="magma")
        self.t = np.linspace(0, 20, 4000)
        (self.trail,) = self.ax_line.plot(self.t, np.sin(self.t), linewidth=0.8)
        self.label = self.ax_line.set_title("")
        fig.colorbar(self.field, ax=self.ax_map)
        fig.subplots_adjust(left=0.06, right=0.97, bottom=0.1, top=0.9, wspace=0.3)
        return fig

    def update(self, frame_idx, params):
        phase = params
        angle = np.array([[np.cos(phase), -np.sin(phase)], [np.sin(phase), np.cos(phase)]])
        self.points.set_offsets(self.base @ angle)
        self.trail.set_ydata(np.sin(self.t + phase) * np.exp(-0.05 * self.t))
        zoom = 2.0 - 0.9 * np.sin(phase / 4) ** 2
        self.ax_map.set_xlim(-zoom, zoom)
        self.ax_map.set_ylim(-zoom, zoom)
        self.ax_line.set_xlim(phase, phase + 10)
        self.label.set_text(f"frame {frame_idx}, phase {phase:.2f}")
        return None


def bench_animator(repeats: int, n_frames: int, tmp: str) -> list[dict[str, float]]:
    from simfarm.farm.renderers import RenderPool

    params = [0.05 * i for i in range(n_frames)]

    def run(workers: int, pool: object = None) -> None:
        Orbits().make_video(os.path.join(tmp, f"orbits_{workers}.mp4"), params, fps=30, num_workers=workers, pool=pool)

    # Cold: make_video draws here and on one new actor, killed at the end (start-up included).
    cold = compare("(b)", (f"Animator {n_frames} frames, num_workers=1", lambda: run(1)),
                   ("num_workers=2: here + 1 new actor", lambda: run(2)), repeats)
    # Warm: the actors of a running RenderPool draw (as (c) measures the pool).
    start = time.perf_counter()
    pool = RenderPool(2)
    # Warm-up: the actors import matplotlib once per process.
    Orbits().make_video(os.path.join(tmp, "warm.mp4"), params[:4], fps=30, pool=pool)
    print(f"     (render pool of 2 actors started and warmed up in {time.perf_counter() - start:.2f} s, "
          "not counted below)")
    try:
        warm = compare("(b)", (f"Animator {n_frames} frames, num_workers=1", lambda: run(1)),
                       ("pool=RenderPool(2): 2 running actors", lambda: run(2, pool)), repeats)
    finally:
        pool.shutdown()
    return [cold, warm]


# -- (c) episode GIFs on the render pool ------------------------------------------
def _run_all(tasks: list) -> None:
    for task in tasks:
        run_task(task)


def _plain_two_process(tasks: list) -> float:
    return two_process_speedup(_run_all, ((tasks[0::2],), (tasks[1::2],)), (tasks,))


def episode_tasks(n_traces: int, folder: str) -> tuple[list, list]:
    """Render tasks of *n_traces* 150-frame 300 x 400 episodes with a noisy band
    (thousands of colours, so the quantising path runs), twice: carrying the
    frames, and naming the traces stored as ``.npz`` in *folder* (as the
    coordinator stores them and hands them to its render actors)."""
    traces = [sample_trace(e, n_frames=150, height=300, width=400, seed=e) for e in range(n_traces)]
    rng = np.random.default_rng(0)
    stored = []
    for tr in traces:
        tr.frames[:, 100:180, 50:350] = rng.integers(0, 256, size=(1, 80, 300, 3), dtype=np.uint8)
        path = os.path.join(folder, f"episode-{tr.episode:05d}.npz")
        np.savez(path, **tr.to_npz_arrays())
        stored += stored_trace_tasks(f"rollout-{tr.episode:04d}", path, RenderOptions())
    in_memory = [trace_tasks(f"rollout-{e:04d}", tr, RenderOptions())[0] for e, tr in enumerate(traces)]
    return in_memory, stored


def bench_episode_pool(repeats: int, tasks: list, label: str) -> dict[str, float]:
    from simfarm.farm.renderers import RenderPool

    n_traces = len(tasks)
    start = time.perf_counter()
    pool = RenderPool(2)
    for task in tasks[:2]:  # warm-up: the actors import the render modules once per process
        pool.submit(task)
    pool.drain()
    print(f"     (render pool of 2 actors started and warmed up in {time.perf_counter() - start:.2f} s, "
          "not counted below)")

    def serial() -> None:
        _run_all(tasks)

    def pooled() -> None:
        for task in tasks:
            pool.submit(task)
        results = pool.drain(timeout_per_wait=0.05)
        assert all(err is None for _, _, err in results) and len(results) == len(tasks)

    try:
        return compare(label, (f"{n_traces} episode GIFs, serial run_task", serial),
                       ("RenderPool(2).submit/drain", pooled), repeats)
    finally:
        pool.shutdown()


# -- (d) GIF encoding ---------------------------------------------------------------
def pillow_default(frames: np.ndarray, duration: int) -> bytes:
    images = [Image.fromarray(f) for f in frames]
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], duration=duration, loop=0)
    return buf.getvalue()


def bench_gif_encoding(repeats: int) -> list[dict[str, float]]:
    episode = sample_trace(0, n_frames=200, height=400, width=600).frames
    evolution = np.stack(list(EvolutionPainter(sample_history(12, seed=1, max_leaves=6)).frames()))
    out = []
    for label, frames, fps in (("episode 200x400x600, few colours", episode, 30),
                               ("evolution 12 frames, many colours", evolution, 0.2)):
        peer_bytes = pillow_default(frames, int(1000 / fps))
        ours_bytes = encode_gif(frames, fps)[0]
        print(f"     {label}: Pillow default {len(peer_bytes) / 1024:.0f} KiB, ours {len(ours_bytes) / 1024:.0f} KiB")
        out.append(compare("(d)", (f"Pillow default: {label}", lambda f=frames, d=int(1000 / fps): pillow_default(f, d)),
                           ("ours: encode_gif", lambda f=frames, r=fps: encode_gif(f, r)), repeats))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="a,b,c,d", help="comma-separated subset of a,b,c,d")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--frames", type=int, default=200, help="Animator frames for (b)")
    parser.add_argument("--traces", type=int, default=32, help="episode traces for (c)")
    args = parser.parse_args(argv)
    only = set(args.only.split(","))
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, median of {args.repeats} alternating runs, "
          f"load average before: {os.getloadavg()[0]:.2f}")
    if "a" in only:
        bench_evolution(args.repeats)
    import tempfile

    trace_folder = tempfile.TemporaryDirectory()
    tasks_c, stored_c = episode_tasks(args.traces, trace_folder.name) if "c" in only else ([], [])
    if tasks_c:  # before Ray starts: forking a process with Ray's threads is not safe
        print(f"     (c)'s GIFs in two plain processes (fork, no Ray) vs one: {_plain_two_process(tasks_c):.2f}x "
              "(what this machine allows that workload right now)")
    if only & {"b", "c"}:
        import ray

        print(f"     two processes vs one on a CPU loop right now: {parallel_headroom():.2f}x "
              "(the ceiling for (b) and (c); 2.0 on two idle cores)")

        ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    if "b" in only:
        with tempfile.TemporaryDirectory() as tmp:
            bench_animator(args.repeats, args.frames, tmp)
        print(f"     two processes vs one after (b): {parallel_headroom():.2f}x")
    if "c" in only:
        bench_episode_pool(args.repeats, stored_c, "(c)")
        print(f"     two processes vs one after (c): {parallel_headroom():.2f}x")
        bench_episode_pool(args.repeats, tasks_c, "(c')")
        print(f"     two processes vs one after (c'): {parallel_headroom():.2f}x")
    trace_folder.cleanup()
    if "d" in only:
        bench_gif_encoding(args.repeats)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
