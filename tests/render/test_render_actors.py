"""Render actors on a real local Ray: RenderPool, Agg backend, failures, parallel Animator."""

from __future__ import annotations

import json

import numpy as np
import pytest
from matplotlib.figure import Figure

from simfarm.farm.renderers import RenderPool, RenderWorker, render_run
from simfarm.render.animator import Animator, IndexedFrameParams
from simfarm.render.samples import sample_run_dir, sample_trace
from simfarm.render.tasks import RenderOptions, RenderTask, run_task, trace_tasks


class Bars(Animator):
    """Bars growing frame by frame (update returns its artists: blitted)."""

    def setup(self) -> Figure:
        fig = Figure(figsize=(3.2, 2.4), dpi=50)
        ax = fig.add_subplot()
        ax.set_ylim(0, 10)
        self.bars = ax.bar(range(5), np.zeros(5))
        return fig

    def update(self, frame_idx, params):
        for bar, h in zip(self.bars, params, strict=True):
            bar.set_height(h)
        return list(self.bars)


class Failing(Bars):
    def update(self, frame_idx, params):
        if frame_idx == 7:
            raise RuntimeError("frame 7 cannot be drawn")
        return super().update(frame_idx, params)


def _heights(n):
    return [tuple((i * k) % 10 for k in range(1, 6)) for i in range(n)]


def test_pool_renders_and_returns_bytes(ray_local):
    traces = [sample_trace(e, n_frames=10, height=32, width=48) for e in range(5)]
    tasks = [t for tr in traces for t in trace_tasks("rollout-0003", tr, RenderOptions(mp4=True))]
    with RenderPool(2, per_worker=1) as pool:
        env = ray_local.get(pool._actors[0].environment.remote())
        assert env["MPLBACKEND"] == "Agg" and env["backend"].lower() == "agg"
        for task in tasks:
            pool.submit(task)
        assert pool.pending() == len(tasks)
        results = pool.ready(timeout=30.0)  # waits for the first, returns every finished one
        assert results and all(error is None for _, _, error in results)
        results += pool.drain()
        assert pool.pending() == 0
    assert sorted(t.key for t, _, _ in results) == sorted(t.key for t in tasks)
    for task, outputs, _ in results:
        assert outputs == run_task(task)  # the same bytes as in this process


def test_failures_come_back_as_text_and_do_not_stop_the_pool(ray_local):
    good = trace_tasks("j", sample_trace(1, n_frames=4, height=16, width=16), RenderOptions())[0]
    bad = RenderTask("evolution_gif", "j/evolution", "j", {"history": []}, RenderOptions())
    with RenderPool(1) as pool:
        pool.submit(bad)
        pool.submit(good)
        results = {t.key: (out, err) for t, out, err in pool.drain()}
    out, err = results["j/evolution"]
    assert out is None and err.startswith("ValueError: history is empty") and "history.py" in err
    assert results[good.key][1] is None and results[good.key][0]


def test_in_process_pool_needs_no_ray_and_catches_errors():
    bad = RenderTask("nope", "k", None)
    pool = RenderPool(0)
    pool.submit(bad)
    ((task, out, err),) = pool.ready()
    assert task is bad and out is None and "unknown kind 'nope'" in err
    with pytest.raises(ValueError, match="n_workers"):
        RenderPool(-1)


def test_parallel_animator_matches_serial(ray_local, tmp_path, monkeypatch):
    import simfarm.farm.renderers as renderers

    started = []
    real_new_worker = renderers._new_worker
    monkeypatch.setattr(renderers, "_new_worker", lambda num_cpus: started.append(num_cpus) or real_new_worker(num_cpus))
    serial = Bars().make_video(tmp_path / "serial.mp4", _heights(40), fps=20, num_workers=1)
    assert started == []  # one drawing process: this one, no Ray
    parallel = Bars().make_video(tmp_path / "parallel.mp4", _heights(40), fps=20, num_workers=3, chunk_size=3)
    assert len(started) == 2  # three drawing processes: this one and two actors
    assert parallel.read_bytes() == serial.read_bytes()
    shuffled = [IndexedFrameParams(i, h) for i, h in reversed(list(enumerate(_heights(40))))]
    again = Bars().make_video(tmp_path / "shuffled.mp4", iter(shuffled), fps=20, num_workers=2)
    assert again.read_bytes() == serial.read_bytes()


def test_animator_on_a_running_pool_leaves_it_running(ray_local, tmp_path):
    serial = Bars().make_video(tmp_path / "serial.mp4", _heights(24), fps=12, num_workers=1)
    with RenderPool(2) as pool:
        pooled = Bars().make_video(tmp_path / "pooled.mp4", _heights(24), fps=12, pool=pool)
        assert pooled.read_bytes() == serial.read_bytes()
        again = Bars().make_video(tmp_path / "again.mp4", _heights(24), fps=12, pool=pool)
        assert again.read_bytes() == serial.read_bytes()
        # The actors are still there and still render tasks.
        pool.submit(trace_tasks("j", sample_trace(2, n_frames=3, height=8, width=8), RenderOptions())[0])
        ((_, outputs, error),) = pool.drain()
        assert error is None and outputs


def test_parallel_animator_errors_reach_the_caller(ray_local, tmp_path):
    with pytest.raises(RuntimeError, match="frame 7 cannot be drawn"):
        Failing().make_video(tmp_path / "fail.mp4", _heights(20), fps=10, num_workers=2, chunk_size=2)


def test_render_run_with_actors(ray_local, tmp_path):
    run = sample_run_dir(tmp_path, n_seeds=2, n_rounds=2, n_iterations=6, n_episodes=1)
    entries = render_run(run, workers=2, progress=None)
    assert entries and all(e["status"] == "done" for e in entries), [e["error"] for e in entries]
    assert {e["kind"] for e in entries} == {"episode_gif", "evolution_gif", "job_curves", "sweep_curves", "report"}
    report = (run / "report.html").read_text()
    for entry in entries:
        for path in entry["outputs"]:
            assert (run / path).is_file()
            if path.startswith("artifacts/"):
                assert path in report
    meta = json.loads((run / "artifacts" / "rollout-0000" / "boxworld_episode_0000_reward_16.json").read_text())
    assert meta["gif_frames"] == 16
    assert RenderWorker is not None


def test_pool_actors_read_stored_traces_and_fall_back_to_frames(ray_local, tmp_path):
    from simfarm.render.tasks import TraceFileUnavailable, stored_trace_tasks

    traces = [sample_trace(e, n_frames=8, height=24, width=32) for e in range(4)]
    tasks = []
    for tr in traces:
        path = tmp_path / f"episode-{tr.episode:05d}.npz"
        np.savez(path, **tr.to_npz_arrays())
        tasks += stored_trace_tasks("rollout-0001", path, RenderOptions(mp4=True))
    with RenderPool(2) as pool:
        for task in tasks:
            pool.submit(task)
        results = pool.drain()
    assert all(error is None for _, _, error in results)
    by_key = {task.key: outputs for task, outputs, _ in results}
    for tr in traces:  # the actors read the files: same bytes as from the frames here
        for task in trace_tasks("rollout-0001", tr, RenderOptions(mp4=True)):
            assert by_key[task.key] == run_task(task)

    # An actor that cannot read the file (as on another node) gets the frames instead.
    retry = RenderPool._with_frames(tasks[0], TraceFileUnavailable("not on this node"))
    assert retry is not None and retry.key == tasks[0].key
    np.testing.assert_array_equal(retry.inputs["trace"].frames, traces[0].frames)
    assert RenderPool._with_frames(tasks[0], RuntimeError("a drawing bug")) is None

    # A file gone for everyone is a recorded failure, not a retry loop.
    gone = stored_trace_tasks("rollout-0001", tmp_path / "episode-00001.npz", RenderOptions())[0]
    (tmp_path / "episode-00001.npz").unlink()
    with RenderPool(1) as pool:
        pool.submit(gone)
        [(task, outputs, error)] = pool.drain()
    assert outputs is None and "TraceFileUnavailable" in error and "not readable" in error
