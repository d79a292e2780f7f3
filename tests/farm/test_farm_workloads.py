"""Every workload through the farm: identical tables and artifacts whatever the worker count;
`simfarm render` / `simfarm report` from disk; a failing render never fails the run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

import simfarm
from farm_helpers import assert_no_duplicates, assert_same_tables
from simfarm.cli import main

SPEC = """
name = "mixed"
seed = 3
seeds = 2
[[experiments]]
scenario = "reversal"
treatments = ["control", "a", "b"]
rounds = 2
visitors_per_round = 1500
n_draws = 300
n_bootstrap = 5
[[rollouts]]
env = "cartpole"
n_envs = 32
policy = "mlp-train"
iterations = 2
steps_per_iteration = 64
capture = { episode_indices = [0], max_frames = 30 }
[[jobs]]
workload = "random-walk"
steps = 5
[render]
workers = 1
[farm]
num_cpus_per_worker = 0.4
"""


@pytest.fixture(scope="module")
def runs(ray_local, tmp_path_factory):
    out = tmp_path_factory.mktemp("mixed")
    one = simfarm.run(SPEC, out=out / "one", workers=1, quiet=True)
    two = simfarm.run(SPEC, out=out / "two", workers=2, quiet=True)
    return one, two


def test_every_workload_gives_identical_tables_with_1_and_2_workers(runs):
    one, two = runs
    assert one.ok and two.ok, (one.failed, two.failed)
    assert len(one.rounds) == 2 * 2 and len(one.iterations) == 2 * 2 and len(one.steps) == 2 * 5
    assert len(one.episodes) >= 2
    assert_same_tables(one, two)
    assert_no_duplicates(two.run_dir)


def test_artifacts_are_complete_readable_and_byte_identical(runs):
    one, two = runs
    rel_one = {p.relative_to(one.run_dir).as_posix() for p in one.artifacts}
    rel_two = {p.relative_to(two.run_dir).as_posix() for p in two.artifacts}
    assert rel_one == rel_two
    gifs = sorted(r for r in rel_one if r.endswith(".gif"))
    assert any(r.endswith("evolution.gif") for r in gifs)
    assert any("episode" in r for r in gifs)
    assert any(r.startswith("artifacts/sweep/") and r.endswith(".svg") for r in rel_one)
    assert "report.html" in rel_one
    for rel in gifs:  # rendering is deterministic: the same input gives the same bytes
        assert (one.run_dir / rel).read_bytes() == (two.run_dir / rel).read_bytes(), rel
    evolution = next(r for r in gifs if r.endswith("evolution.gif"))
    with Image.open(one.run_dir / evolution) as image:
        assert image.n_frames == 2  # one frame per round
    renders = one.manifest["renders"]
    assert renders and all(r["status"] == "done" for r in renders), [r for r in renders if r["status"] != "done"]


def test_render_and_report_commands_regenerate_from_disk(runs, capsys):
    one, _ = runs
    gif = next(p for p in one.artifacts if p.name == "evolution.gif")
    before = (gif.read_bytes(), gif.stat().st_mtime_ns)
    gif.unlink()
    assert main(["render", str(one.run_dir), "--only", "gif", "--workers", "1", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1] == str(one.run_dir)
    assert gif.read_bytes() == before[0]  # regenerated, byte for byte
    report = one.run_dir / "report.html"
    report.unlink()
    assert main(["report", str(one.run_dir)]) == 0
    assert report.exists() and "evolution.gif" in report.read_text()
    manifest = json.loads((one.run_dir / "manifest.json").read_text())
    assert any(r["kind"] == "report" and r["status"] == "done" for r in manifest["renders"])
    assert main(["render", str(one.run_dir), "--only", "gifs"]) == 2  # a typo is bad input
    assert "--only" in capsys.readouterr().err


def test_a_failing_render_is_recorded_and_the_run_still_succeeds(ray_local, tmp_path):
    spec = f"""
    name = "bad-render"
    [[jobs]]
    workload = "tests_support_workloads:build_bad_snapshots"
    inner.size = 2
    [render]
    curves = false
    report = true
    [farm]
    num_cpus_per_worker = 0.5
    [farm.runtime_env]
    env_vars = {{ PYTHONPATH = "{Path(__file__).parent}" }}
    """
    result = simfarm.run(spec, out=tmp_path, workers=1, quiet=True)
    assert result.ok and len(result.rounds) == 2
    failed = [r for r in result.manifest["renders"] if r["status"] == "failed"]
    assert failed and failed[0]["job_id"] == "job-0000" and failed[0]["error"]
    report = (result.run_dir / "report.html").read_text()
    assert "failed" in report and "job-0000" in report
