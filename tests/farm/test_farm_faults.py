"""A failing job is reported and the rest of the run goes on; user workloads by import path."""

from __future__ import annotations

import json
from pathlib import Path

import simfarm
from farm_helpers import assert_no_duplicates
from simfarm.cli import main

SPEC = """
name = "faults"
seeds = 2
[[jobs]]
workload = "random-walk"
steps = 6
[[jobs]]
workload = "random-walk"
steps = 6
raise_at_step = 2
[[jobs]]
workload = "tests_support_workloads:build_nested"
inner.size = 4
[farm]
num_cpus_per_worker = 0.5
batch_size = 1
[farm.runtime_env]
env_vars = { PYTHONPATH = "%s" }
""" % Path(__file__).parent


def test_a_raising_job_fails_with_its_message_and_the_others_complete(ray_local, tmp_path, capsys):
    spec_path = tmp_path / "faults.toml"
    spec_path.write_text(SPEC)
    code = main(["run", str(spec_path), "--out", str(tmp_path / "out"), "--workers", "2"])
    captured = capsys.readouterr()
    assert code == 1
    run_dir = captured.out.strip().splitlines()[-1]
    assert run_dir.endswith("faults")  # the last line printed is the run directory
    result = simfarm.open_run(run_dir)
    assert result.status == "failed"
    assert sorted(result.failed) == ["random-walk-0002", "random-walk-0003"]
    for error in result.failed.values():
        assert error == "RuntimeError: random-walk: injected failure at step 2 (raise_at_step)"
    assert "failed random-walk-0002: RuntimeError" in captured.out
    # steps before the failure are committed; the other jobs are complete
    per_job = result.steps.groupby("job_id")["step"].apply(list).to_dict()
    assert per_job["random-walk-0000"] == list(range(6))
    assert per_job["random-walk-0002"] == [0, 1]
    assert per_job["job-0000"] == [0, 1, 2, 3]
    assert set(result.jobs.set_index("job_id")["status"]) == {"done", "failed"}
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    failed = [j for j in manifest["jobs"] if j["status"] == "failed"][0]
    assert "raise_at_step" in failed["traceback"] and "Traceback" in failed["traceback"]
    assert_no_duplicates(result.run_dir)


def test_user_workload_by_import_path_runs_on_workers(ray_local, tmp_path):
    result = simfarm.run(SPEC.replace("raise_at_step = 2", ""), out=tmp_path, workers=2, quiet=True)
    assert result.ok
    rows = result.steps[result.steps.job_id == "job-0001"]
    job = next(j for j in result.manifest["jobs"] if j["job_id"] == "job-0001")
    assert list(rows["value"]) == [job["job_seed"] % 1000 + step for step in range(4)]
    assert list(rows["inner.size"]) == [4] * 4  # nested params become dotted columns
    assert list(rows["step"]) == [0, 1, 2, 3]


def test_inspect_reports_a_run(ray_local, tmp_path, capsys):
    result = simfarm.run(SPEC, out=tmp_path, workers=1, quiet=True)
    assert main(["inspect", str(result.run_dir)]) == 0
    text = capsys.readouterr().out
    assert "status: failed" in text and "2 failed" in text and "steps 24 rows" in text
    assert main(["inspect", str(result.run_dir), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["jobs"]["by_status"] == {"done": 4, "failed": 2}
    assert summary["tables"]["steps"] == 24
    assert summary["stale"] is False


def test_workers_cap_their_blas_threads_to_the_cpu_reservation(ray_local, tmp_path):
    import ray

    from simfarm.farm.coordinator import Coordinator
    from simfarm.farm.workers import WORKER_CLASSES

    coordinator = ray.remote(Coordinator).options(name="caps-test", namespace="simfarm", num_cpus=0).remote(
        str(tmp_path / "run"), "s", {}
    )
    worker = ray.remote(WORKER_CLASSES["generic"]).options(num_cpus=1).remote("caps-test", "w0", 1.0)
    caps = ray.get(worker.thread_caps.remote())
    assert ("openblas", 1) in caps["pools"]  # numpy's BLAS is loaded and capped
    assert all(n == 1 for _, n in caps["pools"])
    assert set(caps["env"].values()) == {"1"}
    assert ray.get(worker.pid.remote()) != ray.get(coordinator.pid.remote())
    ray.kill(worker)
    ray.kill(coordinator)
