"""Render tasks: options, builders, outputs and their paths, determinism, no Ray."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import simfarm.render as render_pkg
from simfarm.errors import SpecError
from simfarm.render.paths import check_output_path, safe_component
from simfarm.render.tasks import (
    RenderOptions,
    RenderTask,
    job_tasks,
    options_for_only,
    report_task,
    run_task,
    sweep_tasks,
    trace_tasks,
    validate_render,
)

ROLLOUT_JOB = {"job_id": "rollout-0001", "workload": "rollout", "table": "iterations", "config_id": "c100",
               "config": "rollouts[0] env=boxworld", "seed": 1,
               "params": {"env": "boxworld", "lr": 0.01, "schedule": {"kind": "fixed"}}}
EXPERIMENT_JOB = {"job_id": "experiment-0001", "workload": "experiment", "table": "rounds", "config_id": "c001",
                  "config": "experiments[0] effect_scale=1.0", "seed": 0,
                  "params": {"scenario": "constant", "effect_scale": 1.0}}


def test_validate_render_defaults_and_values():
    assert validate_render({}) == RenderOptions()
    assert validate_render(None) == RenderOptions()
    assert validate_render({"fps": None, "max_frames": None}) == RenderOptions()  # a normalised spec's nulls
    opts = validate_render({"gifs": False, "mp4": True, "fps": 12, "max_frames": 50, "workers": 3})
    assert (opts.gifs, opts.mp4, opts.fps, opts.max_frames, opts.workers) == (False, True, 12.0, 50, 3)


@pytest.mark.parametrize("table, message", [
    ({"worker": 2}, "render: unknown key 'worker'; did you mean 'workers'?"),
    ({"workers": -1}, "render.workers must be an integer from 0 to 1024, got -1"),
    ({"fps": 0}, "render.fps must be a finite number > 0.0 and <= 1000.0, got 0"),
    ({"max_frames": 0}, "render.max_frames must be a positive integer, got 0"),
    ({"gifs": "yes"}, 'render.gifs must be true or false, got "yes"'),
])
def test_validate_render_errors_name_key_value_and_fix(table, message):
    with pytest.raises(SpecError) as err:
        validate_render(table)
    assert str(err.value) == message


def test_options_for_only():
    only = options_for_only(RenderOptions(mp4=False), "gif, mp4")
    assert (only.gifs, only.episode_gifs, only.mp4, only.curves, only.report) == (True, True, True, False, False)
    assert options_for_only(RenderOptions(), None) == RenderOptions()
    with pytest.raises(ValueError, match="--only takes a comma-separated subset of gif, mp4, curves, report"):
        options_for_only(RenderOptions(), "gifs")


def test_trace_tasks_make_gif_json_and_mp4(trace):
    tasks = trace_tasks("rollout-0001", trace, RenderOptions(mp4=True))
    assert [(t.kind, t.key) for t in tasks] == [("episode_gif", "rollout-0001/episode-00007"),
                                              ("episode_mp4", "rollout-0001/episode-00007/mp4")]
    outputs = {}
    for task in tasks:
        outputs.update(run_task(task))
    stem = "artifacts/rollout-0001/boxworld_episode_0007_reward_20"
    assert set(outputs) == {f"{stem}.gif", f"{stem}.json", f"{stem}.mp4"}
    meta = json.loads(outputs[f"{stem}.json"])
    assert meta["job_id"] == "rollout-0001" and meta["gif_frames"] == 20
    assert trace_tasks("j", trace, RenderOptions(episode_gifs=False)) == []


def test_max_frames_and_fps_options_reach_the_episode(trace):
    opts = RenderOptions(fps=5, max_frames=4)
    out = run_task(trace_tasks("j", trace, opts)[0])
    gif = next(v for k, v in out.items() if k.endswith(".gif"))
    with Image.open(io.BytesIO(gif)) as im:
        assert im.n_frames == 4 and im.info["duration"] == 200


def test_job_tasks_for_an_experiment(history, rounds):
    rows = rounds[rounds.job_id == "experiment-0001"]
    tasks = job_tasks(EXPERIMENT_JOB, rows, history, RenderOptions(mp4=True), timing_columns=["step_wall_s"])
    assert [t.key for t in tasks] == ["experiment-0001/evolution", "experiment-0001/curves"]
    assert "step_wall_s" not in tasks[1].inputs["rows"].columns  # timings are not metrics
    assert "effect_scale" not in tasks[1].inputs["rows"].columns  # params neither
    evolution = run_task(tasks[0])
    assert set(evolution) == {"artifacts/experiment-0001/evolution.gif", "artifacts/experiment-0001/evolution.mp4"}
    with Image.open(io.BytesIO(evolution["artifacts/experiment-0001/evolution.gif"])) as im:
        assert im.n_frames == len(history)
    curves = run_task(tasks[1])
    assert set(curves) == {f"artifacts/experiment-0001/curves_experiment.{e}" for e in ("png", "svg", "json")}
    ET.fromstring(curves["artifacts/experiment-0001/curves_experiment.svg"])
    assert job_tasks(EXPERIMENT_JOB, rows.iloc[0:0], [], RenderOptions()) == []


def test_job_tasks_for_rollouts_and_generic_steps(iterations):
    rows = iterations[iterations.job_id == "rollout-0001"]
    (task,) = job_tasks(ROLLOUT_JOB, rows, [], RenderOptions(), timing_columns=["step_wall_s", "steps_per_s"])
    out = run_task(task)
    data = json.loads(out["artifacts/rollout-0001/curves_training.json"])
    assert data["panels"][-1]["title"] == "throughput"  # steps/s is kept from the timings
    generic = {"job_id": "walk-0000", "table": "steps", "params": {"steps": 5}}
    import pandas as pd

    steps = pd.DataFrame({"job_id": "walk-0000", "config_id": "c0", "step": range(5), "seed": 0, "steps": 5,
                          "position": [0.0, 1.0, 0.5, 2.0, 1.5], "flag": [True] * 5})
    (task,) = job_tasks(generic, steps, [], RenderOptions())
    assert task.inputs["metrics"] == ["position"]
    out = run_task(task)
    assert json.loads(out["artifacts/walk-0000/curves_metrics.json"])["panels"][0]["title"] == "position"


def test_sweep_tasks_need_two_jobs_per_table(rounds, iterations):
    manifest = {"name": "demo", "jobs": [EXPERIMENT_JOB, ROLLOUT_JOB], "timing_columns": ["step_wall_s"]}
    tables = {"rounds": rounds, "iterations": iterations[iterations.job_id == "rollout-0000"]}
    (task,) = sweep_tasks(manifest, tables, RenderOptions())
    assert task.key == "sweep/rounds" and task.job_id is None
    assert task.inputs["labels"] == {"c001": "experiments[0] effect_scale=1.0"}
    out = run_task(task)
    assert set(out) == {f"artifacts/sweep/rounds_curves.{e}" for e in ("png", "svg", "json")}
    panels = json.loads(out["artifacts/sweep/rounds_curves.json"])["panels"]
    assert [p["ylabel"] for p in panels] == ["oracle_gap_rpv", "policy_accuracy", "cate_rmse", "coverage_80"]
    assert sweep_tasks(manifest, tables, RenderOptions(curves=False)) == []


def test_report_task_ships_only_final_rows(rounds):
    manifest = {"name": "demo", "status": "done", "jobs": [EXPERIMENT_JOB], "spec": {"seed": 0}}
    task = report_task(manifest, {"rounds": rounds}, ["artifacts/experiment-0001/evolution.gif"], RenderOptions())
    assert len(task.inputs["finals"]["rounds"]) == rounds["job_id"].nunique()
    assert (task.inputs["finals"]["rounds"]["step"] == rounds["step"].max()).all()
    out = run_task(task)
    assert list(out) == ["report.html"]
    assert b'src="artifacts/experiment-0001/evolution.gif"' in out["report.html"]


def test_every_kind_is_byte_identical_on_rerun(history, rounds, iterations, trace):
    opts = RenderOptions(mp4=True)
    manifest = {"name": "demo", "jobs": [EXPERIMENT_JOB, ROLLOUT_JOB]}
    tasks = [*trace_tasks("rollout-0001", trace, opts),
             *job_tasks(EXPERIMENT_JOB, rounds[rounds.job_id == "experiment-0001"], history, opts),
             *job_tasks(ROLLOUT_JOB, iterations[iterations.job_id == "rollout-0001"], [], opts),
             *sweep_tasks(manifest, {"rounds": rounds, "iterations": iterations}, opts),
             report_task(manifest, {"rounds": rounds}, [], opts)]
    assert {t.kind for t in tasks} == {"episode_gif", "episode_mp4", "evolution_gif", "job_curves", "sweep_curves", "report"}
    for task in tasks:
        assert run_task(task) == run_task(task), task.key


def test_output_paths_are_checked_and_sanitised(trace):
    task = trace_tasks("../../evil job", trace, RenderOptions())[0]
    (gif,) = [k for k in run_task(task) if k.endswith(".gif")]
    assert gif.startswith("artifacts/_.._evil_job/")
    for bad in ("../x.gif", "/etc/passwd", "artifacts/x.gif", "artifacts/a/../b.gif", "artifacts/.hidden/x",
                "notes/a/b.txt", "artifacts/a\\b/c.gif", ""):
        with pytest.raises(ValueError, match="not allowed"):
            check_output_path(bad)
    assert check_output_path("report.html") == "report.html"
    assert safe_component("..") == "_" and safe_component("a b/c") == "a_b_c"
    with pytest.raises(SpecError, match="unknown kind 'movie'"):
        run_task(RenderTask("movie", "k", None))


def test_render_failures_raise_for_the_caller_to_record():
    with pytest.raises(ValueError, match="history is empty"):
        run_task(RenderTask("evolution_gif", "j/evolution", "j", {"history": []}))


def test_render_package_never_imports_ray():
    src = Path(render_pkg.__file__).parent
    for path in src.glob("*.py"):
        text = path.read_text()
        assert "import ray" not in text and "from ray" not in text, path.name
    code = ("import sys, simfarm.render as r\n"
            "from simfarm.render import animator, curves, evolution, gif, history, palette, report, rundir, samples, tasks, video\n"
            "assert 'ray' not in sys.modules, 'ray was imported'\n"
            "print('ok')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr


def test_episode_gif_of_a_real_cartpole_trace():
    # Our own envs package: a captured CartPole episode becomes a lossless GIF named after the env.
    workload = pytest.importorskip("simfarm.envs.workload")
    params = workload.validate({"env": "cartpole", "n_envs": 4, "iterations": 2, "steps_per_iteration": 48,
                                "capture": {"episode_indices": [0], "max_frames": 60}}, "rollouts[0]")
    traces = [t for record in workload.build(params, 0) for t in record.traces]
    assert traces, "the capture schedule should have caught episode 0"
    trace = traces[0]
    out = run_task(trace_tasks("rollout-0000", trace, RenderOptions())[0])
    (gif,) = [v for k, v in out.items() if k.endswith(".gif")]
    assert any(k.startswith("artifacts/rollout-0000/cartpole_episode_0000_reward_") for k in out)
    with Image.open(io.BytesIO(gif)) as im:
        first = np.asarray(im.convert("RGB"))
        assert im.n_frames == json.loads(next(v for k, v in out.items() if k.endswith(".json")))["gif_frames"]
    assert np.array_equal(first, trace.frames[0])


def test_stored_trace_tasks_render_the_same_bytes_from_the_file(tmp_path):
    from simfarm.render.samples import sample_trace
    from simfarm.render.tasks import TraceFileUnavailable, stored_trace_tasks, with_trace_loaded
    from simfarm.store import read_trace_meta

    trace = sample_trace(3, n_frames=12, height=24, width=40)
    trace.metadata["env"] = "cartpole"
    path = tmp_path / "episode-00003.npz"
    np.savez(path, **trace.to_npz_arrays())
    opts = RenderOptions(mp4=True)
    in_memory = trace_tasks("rollout-0002", trace, opts)
    stored = stored_trace_tasks("rollout-0002", path, opts)  # reads only the small meta member
    assert read_trace_meta(path)["frame_count"] == 12
    assert [t.key for t in stored] == [t.key for t in in_memory]
    for task in stored:
        assert "trace" not in task.inputs and task.inputs["trace_file"] == str(path.resolve())
        assert task.inputs["trace_file_size"] == path.stat().st_size
    assert [run_task(t) for t in stored] == [run_task(t) for t in in_memory]
    assert any(name.startswith("artifacts/rollout-0002/cartpole_episode_0003") for name in run_task(stored[0]))

    loaded = with_trace_loaded(stored[0])
    np.testing.assert_array_equal(loaded.inputs["trace"].frames, trace.frames)
    assert with_trace_loaded(in_memory[0]) is in_memory[0]

    # A file that changed (or is absent) is refused, never misread.
    np.savez(path, **sample_trace(3, n_frames=5, height=24, width=40).to_npz_arrays())
    with pytest.raises(TraceFileUnavailable, match="the task expects"):
        run_task(stored[0])
    path.unlink()
    with pytest.raises(TraceFileUnavailable, match="not readable in this process"):
        run_task(stored[0])


def test_stored_trace_tasks_skip_mp4_of_an_empty_trace(tmp_path):
    from simfarm.render.samples import sample_trace
    from simfarm.render.tasks import stored_trace_tasks

    trace = sample_trace(0, n_frames=0, height=8, width=8)
    path = tmp_path / "episode-00000.npz"
    np.savez(path, **trace.to_npz_arrays())
    assert [t.kind for t in stored_trace_tasks("j", path, RenderOptions(mp4=True))] == ["episode_gif"]
