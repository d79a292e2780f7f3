"""Same spec, same tables: 1 worker, 2 workers, workers SIGKILLed mid-run, coordinator killed."""

from __future__ import annotations

import json

import pytest

import simfarm
from farm_helpers import Killer, assert_no_duplicates, assert_same_tables, journal

SPEC = """
name = "det"
seed = 11
seeds = 3
[[jobs]]
workload = "random-walk"
steps = 8
step_seconds = 0.04
[jobs.grid]
dims = [1, 2]
[farm]
num_cpus_per_worker = 0.5
batch_size = 2
flush_seconds = 0.1
max_job_restarts = 20
"""


@pytest.fixture(scope="module")
def reference(ray_local, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref")
    return simfarm.run(SPEC, out=out, workers=1, quiet=True)


def test_reference_run_is_complete(reference):
    assert reference.ok
    assert len(reference.steps) == 6 * 8
    assert list(reference.steps.columns[:4]) == ["job_id", "config_id", "step", "seed"]
    assert {"dims", "steps", "step_seconds", "position", "distance"} <= set(reference.steps.columns)
    assert "step_wall_s" in reference.timing_columns
    assert (reference.run_dir / "steps.parquet").exists()
    assert sorted(p.name for p in (reference.run_dir / "checkpoints").iterdir()) == [
        f"random-walk-{i:04d}.bin" for i in range(6)
    ]
    manifest = json.loads((reference.run_dir / "manifest.json").read_text())
    assert manifest["status"] == "done"
    assert all(job["status"] == "done" and job["steps_done"] == 8 for job in manifest["jobs"])
    assert_no_duplicates(reference.run_dir)
    # open_run reads the same thing back
    again = simfarm.open_run(reference.run_dir)
    assert_same_tables(reference, again)


def test_two_workers_give_identical_tables(reference, tmp_path):
    result = simfarm.run(SPEC, out=tmp_path, workers=2, quiet=True)
    assert result.ok
    assert_same_tables(reference, result)
    assert_no_duplicates(result.run_dir)


def test_sigkilled_workers_resume_and_give_identical_tables(reference, tmp_path):
    killer = Killer(tmp_path, times=3, after=4, gap=0.5, seed=1)
    killer.start()
    result = simfarm.run(SPEC, out=tmp_path, workers=2, quiet=True)
    killer.join(timeout=60)
    assert killer.error is None, killer.error
    assert len(killer.killed) >= 2, "the killer did not kill anything: the test proved nothing"
    assert result.ok, result.failed
    assert result.jobs["attempts"].max() >= 2  # some job really was resumed
    assert_same_tables(reference, result)
    assert_no_duplicates(result.run_dir)


def test_killed_coordinator_is_restarted_and_nothing_is_lost(reference, tmp_path):
    killer = Killer(tmp_path, times=2, after=6, gap=1.0, target="coordinator")
    killer.start()
    result = simfarm.run(SPEC, out=tmp_path, workers=2, quiet=True)
    killer.join(timeout=60)
    assert killer.error is None, killer.error
    assert len(killer.killed) == 2
    assert result.ok, result.failed
    sessions = journal(result.run_dir, "session")
    assert len({s["pid"] for s in sessions}) == 3  # the first coordinator and two restarts
    assert_same_tables(reference, result)
    assert_no_duplicates(result.run_dir)


def test_crash_at_step_kills_the_process_once_and_the_job_completes(ray_local, tmp_path):
    spec = SPEC.replace("step_seconds = 0.04", "step_seconds = 0.0\ncrash_at_step = 3").replace("seeds = 3", "seeds = 1")
    result = simfarm.run(spec, out=tmp_path, workers=2, quiet=True)
    assert result.ok
    assert list(result.jobs["attempts"]) == [2, 2]
    assert len(result.steps) == 2 * 8
    assert_no_duplicates(result.run_dir)
