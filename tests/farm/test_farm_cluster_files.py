"""The cluster launcher YAMLs follow Ray's schema and keep the dashboard on loopback; the submit entry."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
YAMLS = sorted((ROOT / "cluster").glob("*.yaml"))


@pytest.mark.parametrize("path", YAMLS, ids=[p.name for p in YAMLS])
def test_cluster_yaml_is_valid_for_the_ray_launcher(path):
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(yaml.safe_load(path.read_text()))  # what `ray up` does first
    validate_config(config)
    head = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head
    assert "simfarm" in " ".join(config["setup_commands"])


def test_there_are_cluster_yamls():
    assert {p.name for p in YAMLS} >= {"local.yaml", "aws.yaml"}


def test_submit_entry_attaches_to_the_cluster():
    spec = importlib.util.spec_from_file_location("submit_run", ROOT / "scripts" / "submit_run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    args = module.submit_args(["sweep.toml", "--set", "seeds=3"])
    assert args[:4] == ["run", "sweep.toml", "--set", "seeds=3"]
    assert args[args.index("--address") + 1] == "auto"
    assert args[args.index("--out") + 1].endswith("simfarm-runs")
    assert "--out" not in module.submit_args(["--resume", "x"])
