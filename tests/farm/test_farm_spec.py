"""Spec parsing, grid x seeds expansion, overrides, and the CLI's answer to bad specs."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from simfarm.cli import main
from simfarm.errors import SpecError
from simfarm.seeding import job_seed
from simfarm.spec import apply_overrides, load_spec, parse_spec

BASE = """
name = "t"
seed = 5
seeds = 3
[[jobs]]
workload = "random-walk"
steps = 4
[jobs.grid]
dims = [1, 2]
step_seconds = [0.0, 0.01]
"""


def test_grid_times_seeds_expands_in_a_stable_order():
    spec = load_spec(BASE)
    assert len(spec.jobs) == 2 * 2 * 3
    assert [j.job_id for j in spec.jobs[:4]] == [f"random-walk-{i:04d}" for i in range(4)]
    # cartesian product in key order, then seeds innermost
    first_config = spec.jobs[:3]
    assert {j.config_id for j in first_config} == {"c000"}
    assert [j.seed for j in first_config] == [0, 1, 2]
    assert [(j.params["dims"], j.params["step_seconds"]) for j in spec.jobs[::3]] == [
        (1, 0.0), (1, 0.01), (2, 0.0), (2, 0.01)
    ]
    assert spec.jobs[0].config == "jobs[0] dims=1 step_seconds=0.0"
    # validated params carry defaults
    assert spec.jobs[0].params["crash_at_step"] is None
    assert spec.jobs[0].n_steps == 4
    # job seeds derive from (root seed, replicate seed) only: configs are paired
    assert spec.jobs[0].job_seed == job_seed(5, 0) == spec.jobs[3].job_seed
    assert spec.jobs[0].job_seed != spec.jobs[1].job_seed
    assert load_spec(BASE).jobs == spec.jobs


def test_seed_list_and_nested_grid_keys():
    spec = load_spec(BASE.replace("seeds = 3", "seeds = [7, 11]"))
    assert [j.seed for j in spec.jobs[:2]] == [7, 11]
    text = """
    [[jobs]]
    workload = "tests_support_workloads:build_nested"
    [jobs.grid]
    inner.size = [1, 2, 3]
    """
    spec = load_spec(textwrap.dedent(text))
    assert [j.params["inner"]["size"] for j in spec.jobs] == [1, 2, 3]
    assert spec.jobs[0].job_id == "job-0000"
    assert spec.jobs[0].table == "steps"


def test_overrides_set_nested_keys_and_parse_toml_values():
    raw = {"name": "a", "jobs": [{"workload": "random-walk", "steps": 3}]}
    out = apply_overrides(raw, ["farm.workers=4", "jobs[0].steps=9", "name=b", "seeds=[1, 2]"])
    assert out["farm"] == {"workers": 4}
    assert out["jobs"][0]["steps"] == 9
    assert out["name"] == "b" and out["seeds"] == [1, 2]
    assert raw["jobs"][0]["steps"] == 3  # the input is not modified
    with pytest.raises(SpecError, match=r"jobs has 1 item\(s\), so \[3\] does not exist"):
        apply_overrides(raw, ["jobs[3].steps=1"])
    with pytest.raises(SpecError, match="must look like key=value"):
        apply_overrides(raw, ["novalue"])


def test_farm_and_render_alias():
    spec = load_spec(BASE + "\n[farm]\nworkers = 3\nnum_cpus_per_worker = 0.5\nrender_workers = 2\n")
    assert spec.farm.workers == 3 and spec.farm.num_cpus_per_worker == 0.5
    assert spec.render.workers == 2
    with pytest.raises(SpecError, match="disagree"):
        load_spec(BASE + "\n[farm]\nrender_workers = 2\n[render]\nworkers = 1\n")


def test_the_quickstart_is_valid_and_printed(capsys):
    spec = load_spec(None)
    assert spec.name == "quickstart" and spec.jobs
    assert main(["run", "--show-quickstart"]) == 0
    assert 'name = "quickstart"' in capsys.readouterr().out


# Each malformed spec -> (TOML text, a fragment the one-line message must contain).
MALFORMED = [
    ("seeds = 0\n[[jobs]]\nworkload = 'random-walk'", "seeds must be a positive count"),
    ("seeds = [1, 1]\n[[jobs]]\nworkload = 'random-walk'", "seeds must be a list without duplicates"),
    ("seed = -1\n[[jobs]]\nworkload = 'random-walk'", "seed must be an integer from 0"),
    ("seed = 'x'\n[[jobs]]\nworkload = 'random-walk'", "seed must be an integer"),
    ("[[jobs]]\nworkload = 'random-walk'\nsteps = -3", "jobs[0].steps must be a positive integer, got -3"),
    ("[[jobs]]\nworkload = 'random-walk'\nsteps = 2.5", "jobs[0].steps must be a positive integer, got 2.5"),
    ("[[jobs]]\nworkload = 'random-walk'\nstepz = 3", "jobs[0]: unknown key 'stepz'; did you mean 'steps'?"),
    ("[[jobs]]\nsteps = 3", "jobs[0].workload is required"),
    ("[[jobs]]\nworkload = 'random-wlak'", "unknown workload 'random-wlak'; did you mean 'random-walk'?"),
    ("[[jobs]]\nworkload = 'no_such_module_x:build'", "cannot import module 'no_such_module_x'"),
    ("[[jobs]]\nworkload = 'random-walk'\n[jobs.grid]\nsteps = []", "jobs[0].grid.steps must be a non-empty list"),
    ("[[jobs]]\nworkload = 'random-walk'\n[jobs.grid]\nsteps = 3", "jobs[0].grid.steps must be a non-empty list"),
    ("[[jobs]]\nworkload = 'random-walk'\nsteps = 2\n[jobs.grid]\nsteps = [1]", "jobs[0].steps is set both"),
    ("[[jobs]]\nworkload = 'random-walk'\n[jobs.grid]\nsteps = [1, -2]", "(grid point steps=-2)"),
    ("name = 'a/../b'\n[[jobs]]\nworkload = 'random-walk'", "name must be 1-100 characters"),
    ("nmae = 'x'\n[[jobs]]\nworkload = 'random-walk'", "spec: unknown key 'nmae'; did you mean 'name'?"),
    ("name = 'x'", "the spec has no work"),
    ("jobs = []", "jobs is an empty array"),
    ("jobs = 3", "jobs must be an array of tables"),
    ("[farm]\nworkers = 0\n[[jobs]]\nworkload = 'random-walk'", "farm.workers must be an integer from 1"),
    ("[farm]\nnum_cpus_per_worker = 0\n[[jobs]]\nworkload = 'random-walk'", "farm.num_cpus_per_worker must be a finite number > 0.0"),
    ("[farm]\nwrokers = 2\n[[jobs]]\nworkload = 'random-walk'", "farm: unknown key 'wrokers'; did you mean 'workers'?"),
    ("[[experiments]]\nworkload = 'random-walk'", "experiments[0].workload is not allowed"),
    ("[[jobs]]\nworkload = 'random-walk'\nsteps = 3\n[[jobs]]", "jobs[1].workload is required"),
    ("[[jobs]\nworkload = 'x'", "is not valid TOML"),
]


@pytest.mark.parametrize("text, fragment", MALFORMED, ids=[f"spec{i}" for i in range(len(MALFORMED))])
def test_malformed_specs_exit_2_with_one_line_naming_the_key(tmp_path, capsys, text, fragment):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    assert main(["run", str(path), "--out", str(tmp_path / "out")]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("simfarm: error: ")
    assert fragment in lines[0], lines[0]
    assert captured.out == ""
    assert not (tmp_path / "out").exists()  # nothing written for a bad spec


def test_bad_set_and_bad_flags_exit_2(tmp_path, capsys):
    path = tmp_path / "ok.toml"
    path.write_text(BASE)
    assert main(["run", str(path), "--set", "jobs[0].steps=-1"]) == 2
    assert "jobs[0].steps must be a positive integer, got -1" in capsys.readouterr().err
    assert main(["run", str(path), "--workers", "0"]) == 2
    assert "--workers must be a positive integer" in capsys.readouterr().err
    assert main(["run", "--resume", str(tmp_path)]) == 2
    assert "has no manifest.json" in capsys.readouterr().err
    assert main(["inspect", str(tmp_path / "nope")]) == 2
    assert "is not a directory" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["run", "--no-such-flag"])
    assert exc.value.code == 2


def test_cli_process_prints_no_traceback_for_bad_input(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[[jobs]]\nworkload = 'random-walk'\nsteps = -3\n")
    proc = subprocess.run(
        [sys.executable, "-m", "simfarm", "run", str(path)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == "simfarm: error: jobs[0].steps must be a positive integer, got -3"
    assert "Traceback" not in proc.stderr


def test_parse_spec_rejects_non_json_params():
    class Weird:
        pass

    with pytest.raises(SpecError):
        parse_spec({"jobs": [{"workload": "tests_support_workloads:build_nested", "inner": {"size": Weird()}}]})
