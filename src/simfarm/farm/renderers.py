"""Render actors: ``RenderWorker``, the ``RenderPool`` that feeds them,
frame-parallel animation, and batch rendering of a stored run.

The coordinator submits :class:`~simfarm.render.tasks.RenderTask` s to a
:class:`RenderPool` and harvests ``(task, outputs, error)`` triples without
blocking; it writes the returned bytes itself (single writer). A failed
render comes back as error text, to be recorded in the manifest and the
report; it never raises into the run.

Each :class:`RenderWorker` reserves one CPU (by default) and draws with
matplotlib's Agg backend: its ``__init__`` sets ``MPLBACKEND=Agg`` before
anything in the actor imports matplotlib (and switches an already
imported matplotlib to Agg).
"""

from __future__ import annotations

import os
import re
import sys
import time
import traceback
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from itertools import islice
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

if TYPE_CHECKING:  # imported lazily below: pandas would add ~0.25 s to every actor's start
    from simfarm.render.tasks import RenderOptions, RenderTask

__all__ = [
    "RenderPool",
    "RenderResult",
    "RenderWorker",
    "animate_frames",
    "describe_error",
    "ensure_ray",
    "render_run",
]

#: ``(task, outputs or None, error text or None)``: one harvested render.
RenderResult = tuple["RenderTask", "dict[str, bytes] | None", "str | None"]
#: Serialised animators above this size trigger a warning (each actor holds a copy).
ANIMATOR_WARN_BYTES = 64 * 1024 * 1024
_ENV = {"MPLBACKEND": "Agg"}
_TB_LINE = re.compile(r'File "([^"]+)", line (\d+), in (\S+)')


def describe_error(exc: BaseException) -> str:
    """One-paragraph error text for the manifest: type, message and where it was raised.

    For a ``RayTaskError`` the render's own exception and the location in
    the actor's traceback are reported, not Ray's wrapper.
    """
    where = ""
    # A RayTaskError's text carries the actor-side traceback.
    remote_tb = getattr(exc, "traceback_str", None) or (str(exc) if isinstance(exc, ray.exceptions.RayError) else None)
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):  # a RayTaskError wraps the render's own exception
        exc = cause
    frames = traceback.extract_tb(exc.__traceback__) if exc.__traceback__ else []
    if frames:
        where = f"{Path(frames[-1].filename).name}:{frames[-1].lineno} in {frames[-1].name}"
    elif isinstance(remote_tb, str):
        found = _TB_LINE.findall(remote_tb)
        if found:
            file_name, line, func = found[-1]
            where = f"{Path(file_name).name}:{line} in {func}"
    text = f"{type(exc).__name__}: {exc}".strip()
    return f"{text} (at {where})" if where else text


def ensure_ray(num_cpus: int | None = None) -> None:
    """Start a local Ray (quiet, no dashboard, loopback only) unless one is initialised."""
    if not ray.is_initialized():
        from simfarm.farm.local import init_local_ray

        init_local_ray(num_cpus or os.cpu_count() or 1, configure_logging=False, log_to_driver=True)


def _use_agg() -> None:
    os.environ.update(_ENV)
    if "matplotlib" in sys.modules:  # already imported in a reused worker process
        import matplotlib

        matplotlib.use("Agg", force=True)


@ray.remote
class RenderWorker:
    """A render actor: runs render tasks and draws Animator frames.

    Methods return plain data (bytes, numpy arrays) for the caller to write.
    """

    def __init__(self) -> None:
        _use_agg()
        self._drawer: Any = None

    def ping(self) -> int:
        """The actor's process id (used to wait until it is up)."""
        return os.getpid()

    def environment(self) -> dict[str, str]:
        """``MPLBACKEND`` as the actor sees it and matplotlib's active backend."""
        import matplotlib

        return {"MPLBACKEND": os.environ.get("MPLBACKEND", ""), "backend": str(matplotlib.get_backend())}

    def run(self, task: RenderTask) -> dict[str, bytes]:
        """:func:`~simfarm.render.tasks.run_task` in this actor."""
        from simfarm.render.tasks import run_task

        return run_task(task)

    def animator_setup(self, animator_blob: bytes) -> tuple[int, int]:
        """Load a pickled Animator, call its ``setup()`` once; return the frame size ``(H, W)``."""
        from ray import cloudpickle

        from simfarm.render.animator import FrameDrawer

        if self._drawer is not None:
            self._drawer.close()
        self._drawer = FrameDrawer(cloudpickle.loads(animator_blob))
        width, height = self._drawer.canvas.get_width_height()
        return int(height), int(width)

    def animator_draw(self, chunk: list[tuple[int, Any]]) -> tuple[np.ndarray, np.ndarray]:
        """Draw frames ``(frame_id, params)`` reusing the figure; return ``(ids, frames (n, H, W, 3))``."""
        if self._drawer is None:
            raise RuntimeError("animator_draw called before animator_setup")
        frames = [self._drawer.draw(frame_id, params) for frame_id, params in chunk]
        return np.asarray([frame_id for frame_id, _ in chunk], dtype=np.int64), np.stack(frames)

    def animator_close(self) -> None:
        """Drop the animator and its figure."""
        if self._drawer is not None:
            self._drawer.close()
            self._drawer = None


def _new_worker(num_cpus: float) -> Any:
    # MPLBACKEND is set by the actor's __init__ (before anything imports
    # matplotlib there) rather than through runtime_env: an env-var
    # runtime_env cannot use Ray's prestarted worker processes and made
    # every actor start about 0.7 s slower.
    # Preferably on this node (soft): stored traces are read from the run
    # directory here, and drawn frames come back here to be encoded.
    return RenderWorker.options(
        num_cpus=num_cpus,
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=True),
    ).remote()


class RenderPool:
    """A fixed set of :class:`RenderWorker` actors fed from a local queue.

    Args:
        n_workers: Number of actors; 0 runs every task in the calling
            process at :meth:`submit` (no Ray needed). Ray must already be
            initialised when it is > 0.
        num_cpus: CPUs each actor reserves.
        per_worker: Tasks in flight per actor (the rest wait in the pool's
            queue): bounds the object-store memory tasks and results hold.

    The actors are placed on this process's node when it has room (soft
    affinity): tasks built by :func:`~simfarm.render.tasks.stored_trace_tasks`
    name trace files of this node's run directory, which the actors read
    themselves. An actor that cannot read one (it landed on another node)
    fails the task with ``TraceFileUnavailable``; the pool then reads the
    file here and sends the task again with the frames.

    Raises:
        ValueError: When *n_workers* is negative.
        RuntimeError: When *n_workers* > 0 and Ray is not initialised.
    """

    def __init__(self, n_workers: int, *, num_cpus: float = 1.0, per_worker: int = 2) -> None:
        if isinstance(n_workers, bool) or not isinstance(n_workers, int) or n_workers < 0:
            raise ValueError(f"n_workers must be a non-negative integer, got {n_workers!r}")
        if n_workers > 0 and not ray.is_initialized():
            raise RuntimeError("RenderPool needs an initialised Ray when n_workers > 0 (call ray.init() first)")
        self.num_cpus = float(num_cpus)
        self.per_worker = max(1, int(per_worker))
        self._actors = [_new_worker(self.num_cpus) for _ in range(n_workers)]
        self._load = [0] * n_workers
        self._queue: deque[RenderTask] = deque()
        self._in_flight: dict[Any, tuple[RenderTask, int]] = {}
        self._finished: list[RenderResult] = []

    @property
    def n_workers(self) -> int:
        """Number of actors (0: in-process)."""
        return len(self._actors)

    @property
    def actors(self) -> list[Any]:
        """The pool's RenderWorker handles (e.g. for ``Animator.make_video(pool=...)``)."""
        return list(self._actors)

    def submit(self, task: RenderTask) -> None:
        """Queue *task* (in-process pools render it right away)."""
        if not self._actors:
            self._finished.append(self._run_here(task))
            return
        self._queue.append(task)
        self._dispatch()

    @staticmethod
    def _run_here(task: RenderTask) -> RenderResult:
        from simfarm.render.tasks import run_task

        try:
            return task, run_task(task), None
        except Exception as exc:  # recorded, never raised: a render must not fail the run
            return task, None, describe_error(exc)

    def _dispatch(self) -> None:
        while self._queue:
            index = min(range(len(self._actors)), key=lambda i: self._load[i])
            if self._load[index] >= self.per_worker:
                return
            task = self._queue.popleft()
            ref = self._actors[index].run.remote(task)
            self._in_flight[ref] = (task, index)
            self._load[index] += 1

    def pending(self) -> int:
        """Tasks submitted and not yet returned by :meth:`ready` / :meth:`drain`."""
        return len(self._queue) + len(self._in_flight) + len(self._finished)

    def ready(self, timeout: float | None = 0.0) -> list[RenderResult]:
        """Harvest finished tasks, waiting at most *timeout* seconds for the first one.

        Returns:
            ``(task, outputs, None)`` for successes, ``(task, None, error
            text)`` for failures (also when an actor died; it is replaced).
        """
        results, self._finished = self._finished, []
        if not self._in_flight:
            return results
        refs = list(self._in_flight)
        first, _ = ray.wait(refs, num_returns=1, timeout=timeout)
        if first:
            done, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
            for ref in done:
                task, index = self._in_flight.pop(ref)
                self._load[index] -= 1
                try:
                    results.append((task, ray.get(ref), None))
                except ray.exceptions.RayTaskError as exc:
                    retry = self._with_frames(task, exc)
                    if retry is not None:
                        self._queue.appendleft(retry)
                    else:
                        results.append((task, None, describe_error(exc)))
                except ray.exceptions.RayActorError as exc:
                    results.append((task, None, f"render worker died: {describe_error(exc)}"))
                    self._replace(index)
                except ray.exceptions.RayError as exc:  # lost objects, out of memory, ...
                    results.append((task, None, describe_error(exc)))
        self._dispatch()
        return results

    @staticmethod
    def _with_frames(task: RenderTask, exc: BaseException) -> RenderTask | None:
        """The task again with its trace's frames, when an actor could not read the stored file.

        An actor placed on another node (no shared file system) cannot open
        a trace file of this node's run directory; this process can.
        """
        from simfarm.render.tasks import TraceFileUnavailable, with_trace_loaded

        unreadable = isinstance(exc, TraceFileUnavailable) or isinstance(getattr(exc, "cause", None), TraceFileUnavailable)
        if not unreadable or "trace" in task.inputs:
            return None
        try:
            return with_trace_loaded(task)
        except OSError:
            return None  # unreadable here too: report the actor's error

    def _replace(self, index: int) -> None:
        ray.kill(self._actors[index], no_restart=True)
        self._actors[index] = _new_worker(self.num_cpus)

    def drain(self, timeout_per_wait: float = 1.0) -> list[RenderResult]:
        """Wait for every submitted task; return all results not yet harvested."""
        results: list[RenderResult] = []
        while self.pending():
            results += self.ready(timeout=timeout_per_wait)
        return results

    def shutdown(self) -> None:
        """Kill the actors; queued and in-flight tasks are dropped."""
        for actor in self._actors:
            ray.kill(actor, no_restart=True)
        self._actors, self._load = [], []
        self._queue.clear()
        self._in_flight.clear()

    def __enter__(self) -> RenderPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


# ---------------------------------------------------------------------------
# Animator frames on actors
# ---------------------------------------------------------------------------
def animate_frames(animator: Any, items: Iterable[tuple[int, Any]], num_workers: int, *, chunk_size: int = 8,
                   num_cpus: float = 1.0, local_draw: Callable[[int, Any], np.ndarray] | None = None,
                   actors: list[Any] | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """Draw Animator frames on render actors; yield ``(frame_id, frame)`` as they finish.

    The animator is serialised once into the object store; each actor
    calls its ``setup()`` once and then draws chunks of *chunk_size*
    frames, handed out dynamically (at most two per actor in flight), so
    *items* may be a lazy generator. Frames come back in completion order.

    Without *actors*, *num_workers* RenderWorker actors are started for
    this call and killed at its end; with *actors* (e.g. a
    :class:`RenderPool`'s), those are used and left running.

    With *local_draw*, the calling process draws single frames itself
    whenever no actor result is waiting -- most usefully while the actors
    start, which would otherwise be idle time.

    Raises:
        Exception: What ``setup``/``update`` raised inside an actor (or locally).
    """
    from ray import cloudpickle

    ensure_ray()
    blob = cloudpickle.dumps(animator)
    if len(blob) > ANIMATOR_WARN_BYTES:
        warnings.warn(
            f"{type(animator).__name__} serialises to {len(blob) / 2**20:.0f} MiB and every render actor holds a "
            "copy: pass heavy data through param_by_frame or load it in setup()",
            stacklevel=3,
        )
    blob_ref = ray.put(blob)
    own_actors = actors is None
    actors = [_new_worker(num_cpus) for _ in range(num_workers)] if actors is None else list(actors)
    if not actors:
        raise ValueError("animate_frames needs at least one render actor")
    try:
        # Not awaited: an actor runs its calls in order, so draws queue behind setup.
        setups = [a.animator_setup.remote(blob_ref) for a in actors]
        source = iter(items)
        load = [0] * len(actors)
        in_flight: dict[Any, int] = {}
        exhausted = False
        while True:
            while not exhausted and min(load) < 2:
                chunk = list(islice(source, chunk_size))
                if not chunk:
                    exhausted = True
                    break
                index = load.index(min(load))
                in_flight[actors[index].animator_draw.remote(chunk)] = index
                load[index] += 1
            if not in_flight:
                return
            drawing_here = local_draw is not None and not exhausted
            done, _ = ray.wait(list(in_flight), num_returns=1, timeout=0 if drawing_here else None)
            if not done:
                item = next(source, None)
                if item is None:
                    exhausted = True
                else:
                    yield item[0], local_draw(*item)  # type: ignore[misc]
                continue
            for ref in done:
                load[in_flight.pop(ref)] -= 1
                try:
                    ids, frames = ray.get(ref)
                except ray.exceptions.RayTaskError:
                    ray.get(setups)  # a failed setup() explains a failed draw best
                    raise
                for frame_id, frame in zip(ids.tolist(), frames, strict=True):
                    yield frame_id, frame
    finally:
        for actor in actors:
            if own_actors:
                ray.kill(actor, no_restart=True)
            else:
                actor.animator_close.remote()  # runs after its queued draws; frees the figure


# ---------------------------------------------------------------------------
# Batch rendering of a stored run (`simfarm render`)
# ---------------------------------------------------------------------------
class _Progress:
    """A one-line progress display on a terminal (silent when *stream* is None)."""

    def __init__(self, stream: IO[str] | None) -> None:
        self.stream = stream
        self.start = time.perf_counter()
        self.done = self.failed = self.submitted = 0
        self._last = 0.0

    def show(self, final: bool = False) -> None:
        if self.stream is None:
            return
        now = time.perf_counter()
        if not final and now - self._last < 0.2:
            return
        self._last = now
        elapsed = now - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        left = self.submitted - self.done
        eta = f"{left / rate:.0f}s" if rate > 0 and left else "-"
        failed = f", {self.failed} failed" if self.failed else ""
        line = f"render {self.done}/{self.submitted} tasks{failed} · {rate:.1f}/s · ETA {eta}"
        end = "\n" if final else ""
        self.stream.write(f"\r{line:<70}{end}")
        self.stream.flush()


def render_run(run_dir: str | Path, *, only: Iterable[str] | str | None = None, workers: int | None = None,
               options: RenderOptions | None = None, progress: IO[str] | None = sys.stderr) -> list[dict[str, Any]]:
    """Regenerate a stored run's artifacts in parallel (``simfarm render``).

    Reads the run directory, renders every task (episode GIFs/MP4s,
    evolution GIFs, job and sweep curves) on a :class:`RenderPool`, writes
    the outputs atomically, then renders ``report.html`` last so that it
    links every artifact present. Idempotent: unchanged files are not
    rewritten.

    Args:
        run_dir: The run directory.
        only: Artifact families to (re)make: ``gif``, ``mp4``, ``curves``, ``report``.
        workers: RenderWorker actors (None: the spec's ``[render] workers``;
            0: in this process). A local Ray is started when needed.
        options: Render options (None: read from the manifest's spec).
        progress: Stream for the progress line (None: quiet).

    Returns:
        Render entries in the manifest's ``renders`` format (key, kind,
        job_id, status, error, outputs); the caller merges them into the
        manifest (see :func:`simfarm.render.rundir.merge_renders`).

    Raises:
        RunDirError: When *run_dir* has no readable manifest.
        SpecError / ValueError: Bad ``[render]`` table or ``only`` value.
    """
    from simfarm.render.rundir import list_artifacts, merge_renders, read_manifest, read_tables, run_dir_tasks, write_outputs
    from simfarm.render.tasks import options_for_only, report_task, validate_render

    root = Path(run_dir)
    manifest = read_manifest(root)
    if options is None:
        spec = manifest.get("spec") or {}
        options = validate_render(spec.get("render") if isinstance(spec, Mapping) else None, "render")
    options = options_for_only(options, only)
    n_workers = options.workers if workers is None else int(workers)
    if n_workers > 0:
        ensure_ray()
    tables = read_tables(root)
    bar = _Progress(progress)
    entries: list[dict[str, Any]] = []

    def harvest(results: list[RenderResult]) -> None:
        for task, outputs, error in results:
            written: list[str] = []
            if outputs is not None:
                try:
                    written = write_outputs(root, outputs)
                except (OSError, ValueError) as exc:
                    error = describe_error(exc)
            entries.append({"key": task.key, "kind": task.kind, "job_id": task.job_id,
                            "status": "failed" if error else "done", "error": error, "outputs": written})
            bar.done += 1
            bar.failed += bool(error)
        bar.show()

    pool = RenderPool(n_workers)
    try:
        limit = 2 * max(n_workers, 1)
        for task in run_dir_tasks(root, options, manifest=manifest, tables=tables):
            pool.submit(task)
            bar.submitted += 1
            while pool.pending() >= limit:  # backpressure: traces are read lazily
                harvest(pool.ready(timeout=0.5))
        harvest(pool.drain())
        if options.report:
            shown = {**manifest, "renders": merge_renders(manifest.get("renders", []), entries)}
            pool.submit(report_task(shown, tables, list_artifacts(root), options))
            bar.submitted += 1
            harvest(pool.drain())
    finally:
        pool.shutdown()
        bar.show(final=True)
    return entries
