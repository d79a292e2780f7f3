"""A driver SIGKILLed mid-run is finished by `simfarm run --resume`; a local run listens on loopback only.

The drivers here are real `simfarm` processes, each starting its own local Ray.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import simfarm
from farm_helpers import assert_no_duplicates, committed_records, journal
from simfarm.store import is_live
from simfarm.workloads import get

SPEC = """
name = "resumable"
seed = 4
seeds = 3
[[jobs]]
workload = "random-walk"
steps = 10
step_seconds = 0.08
[jobs.grid]
dims = [1, 2]
[farm]
workers = 2
batch_size = 1
"""


def _descendants(root: int) -> set[int]:
    rows = subprocess.run(["ps", "-eo", "pid,ppid"], capture_output=True, text=True).stdout.split("\n")[1:]
    children: dict[int, list[int]] = {}
    for row in rows:
        if row.strip():
            pid, ppid = map(int, row.split())
            children.setdefault(ppid, []).append(pid)
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        found.add(pid)
        todo.extend(children.get(pid, []))
    return found


def _listening(pids: set[int]) -> list[str]:
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True).stdout
    return sorted(
        line.split()[3] for line in out.splitlines() if set(map(int, re.findall(r"pid=(\d+)", line))) & pids
    )


def _serial_metrics(job: dict) -> list[dict]:
    """The job's metrics computed in this process, without Ray: what the farm must reproduce."""
    workload = get(job["workload"]).build(dict(job["params"]), job["job_seed"])
    return [record.metrics for record in workload]


@pytest.mark.skipif(not Path("/usr/bin/ss").exists() and not Path("/bin/ss").exists(), reason="needs ss (iproute2)")
def test_killed_driver_is_finished_by_resume(tmp_path):
    spec_path = tmp_path / "spec.toml"
    spec_path.write_text(SPEC)
    out = tmp_path / "out"
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    driver = subprocess.Popen(
        [sys.executable, "-m", "simfarm", "run", str(spec_path), "--out", str(out), "--quiet"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    run_dir = out / "resumable"
    tree: set[int] = set()
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and (not run_dir.exists() or committed_records(run_dir) < 12):
            assert driver.poll() is None, driver.stderr.read().decode()
            time.sleep(0.05)
        assert committed_records(run_dir) >= 12
        tree = _descendants(driver.pid)
        addresses = _listening(tree)
        assert addresses, "found no listening sockets of the local Ray: the check proved nothing"
        public = [a for a in addresses if not re.match(r"^(127\.0\.0\.1|\[::ffff:127\.0\.0\.1\]|\[::1\]):", a)]
        assert not public, f"a local run listens beyond loopback: {public}"
        before = committed_records(run_dir)
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        if driver.poll() is None:
            driver.kill()
    # The orphaned coordinator exits on its own once its raylet is gone; until
    # then it holds the run's lock and a resume would be refused.
    deadline = time.monotonic() + 60
    while is_live(run_dir) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not is_live(run_dir)
    manifest = simfarm.open_run(run_dir)
    assert manifest.status == "running"  # as the dead driver left it
    assert 0 < len(manifest.steps) < 60
    resumed = subprocess.run(
        [sys.executable, "-m", "simfarm", "run", "--resume", str(run_dir), "--quiet"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    for pid in tree:  # leave no stray process behind, whatever happened above
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.strip().splitlines()[-1] == str(run_dir)
    result = simfarm.open_run(run_dir)
    assert result.ok
    assert len(result.steps) == 6 * 10
    assert_no_duplicates(run_dir)
    sessions = {e["session"] for e in journal(run_dir, "session")}
    assert len(sessions) == 2
    assert committed_records(run_dir) == 60 >= before
    # every table value equals a plain serial run of the same jobs
    timing = result.timing_columns
    for job in result.manifest["jobs"]:
        rows = result.steps[result.steps.job_id == job["job_id"]].drop(columns=timing)
        expected = _serial_metrics(job)
        assert list(rows["step"]) == list(range(10))
        for column in ("position", "increment", "distance", "max_distance"):
            np.testing.assert_array_equal(rows[column].to_numpy(), [m[column] for m in expected])


def test_resume_refuses_a_live_or_foreign_directory(tmp_path, capsys):
    import fcntl
    import json

    from simfarm.cli import main

    assert main(["run", "--resume", str(tmp_path)]) == 2
    assert "has no manifest.json" in capsys.readouterr().err
    (tmp_path / "manifest.json").write_text('{"schema": "something-else"}')
    assert main(["run", "--resume", str(tmp_path)]) == 2
    assert "is not a simfarm manifest" in capsys.readouterr().err
    (tmp_path / "manifest.json").write_text(json.dumps({"schema": "simfarm.manifest/1", "spec": {}, "jobs": []}))
    with open(tmp_path / ".lock", "a+") as lock:  # what a live coordinator holds
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert main(["run", "--resume", str(tmp_path)]) == 2
    assert "still in use by a live coordinator" in capsys.readouterr().err


def test_ctrl_c_marks_the_run_interrupted_and_resume_finishes_it(tmp_path):
    spec_path = tmp_path / "spec.toml"
    spec_path.write_text(SPEC.replace("seeds = 3", "seeds = 2"))
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    driver = subprocess.Popen(
        [sys.executable, "-m", "simfarm", "run", str(spec_path), "--out", str(tmp_path / "out")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    run_dir = tmp_path / "out" / "resumable"
    tree: set[int] = set()
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and (not run_dir.exists() or committed_records(run_dir) < 6):
            time.sleep(0.05)
        tree = _descendants(driver.pid)
        driver.send_signal(signal.SIGINT)
        _, stderr = driver.communicate(timeout=90)
    finally:
        if driver.poll() is None:
            driver.kill()
        for pid in tree - {driver.pid}:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert driver.returncode == 130
    assert f"resume with: simfarm run --resume {run_dir}" in stderr
    interrupted = simfarm.open_run(run_dir)
    assert interrupted.status == "interrupted"
    assert 0 < len(interrupted.steps) < 40
    resumed = subprocess.run(
        [sys.executable, "-m", "simfarm", "run", "--resume", str(run_dir), "--quiet"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    result = simfarm.open_run(run_dir)
    assert result.ok and len(result.steps) == 40
    assert_no_duplicates(run_dir)
