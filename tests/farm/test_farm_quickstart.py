"""`simfarm run` with no arguments: the README's demo, as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from PIL import Image

import simfarm


def test_the_demo_runs_every_workload_and_renders_everything(tmp_path):
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    proc = subprocess.run(
        [sys.executable, "-m", "simfarm", "run"], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = tmp_path / proc.stdout.strip().splitlines()[-1]
    assert run_dir == tmp_path / "simfarm-runs" / "quickstart"
    assert "quickstart: jobs 10/10" in proc.stderr  # the progress line
    result = simfarm.open_run(run_dir)
    assert result.ok
    assert set(result.jobs["workload"]) == {"experiment", "rollout", "random-walk"}
    assert len(result.rounds) and len(result.iterations) and len(result.steps) and len(result.episodes)
    names = {p.relative_to(run_dir).as_posix() for p in result.artifacts}
    for suffix in (".gif", ".mp4", ".png", ".svg", ".json"):
        assert any(n.endswith(suffix) for n in names), suffix
    assert "report.html" in names
    assert all(r["status"] == "done" for r in result.manifest["renders"])
    with Image.open(next(p for p in result.artifacts if p.name == "evolution.gif")) as gif:
        assert gif.n_frames == 4  # one frame per round of the quickstart's experiments
    # nothing was written outside the output folder
    assert sorted(p.name for p in Path(tmp_path).iterdir()) == ["simfarm-runs"]
