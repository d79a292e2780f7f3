"""The coordinator's bookkeeping in-process (no Ray needed): lease order and manifest pacing."""

from __future__ import annotations

import json

import pytest

import simfarm.farm.coordinator as coordinator_module
from simfarm.farm.coordinator import Coordinator
from simfarm.spec import load_spec
from simfarm.workloads.random_walk import build

RENDER_OFF = {"gifs": False, "episode_gifs": False, "curves": False, "report": False}
SPEC = """
name = "books"
seeds = 3
[[jobs]]
workload = "random-walk"
steps = 2
[[experiments]]
scenario = "constant"
rounds = 2
visitors_per_round = 500
[[jobs]]
workload = "random-walk"
steps = 3
"""


def _coordinator(tmp_path):
    spec = load_spec(SPEC)
    coordinator = Coordinator(str(tmp_path / "run"), "session-1", {"render": RENDER_OFF})
    coordinator.start(spec.raw, [job.to_json() for job in spec.jobs])
    return spec, coordinator


def _finish_job(coordinator, lease, worker):
    workload = build(dict(lease["params"]), int(lease["job_seed"]))
    records = list(workload)
    for record in records:
        record.job_id = lease["job_id"]
    reply = coordinator.commit({
        "job_id": lease["job_id"], "worker": worker, "records": records, "checkpoint": workload.checkpoint(),
        "checkpoint_step": records[-1].step, "done": True, "steps_total": len(records), "error": None,
        "traceback": None,
    })
    assert reply["committed"] == len(records) and not reply["stale"]


def test_leases_follow_spec_order_per_kind_and_a_released_job_comes_first(tmp_path):
    spec, coordinator = _coordinator(tmp_path)
    generic = [j.job_id for j in spec.jobs if j.worker == "generic"]
    experiments = [j.job_id for j in spec.jobs if j.worker == "experiment"]
    assert len(generic) == 6 and len(experiments) == 3

    first = coordinator.lease("w0", "generic", 1)
    second = coordinator.lease("w1", "generic", 2)
    assert [first["job_id"], second["job_id"]] == generic[:2]
    assert coordinator.lease("w2", "experiment", 3)["job_id"] == experiments[0]

    coordinator.release("w0")  # its worker is gone for good: the job is pending again, ahead of the rest
    assert coordinator.lease("w3", "generic", 4)["job_id"] == generic[0]
    _finish_job(coordinator, second, "w1")
    assert coordinator.lease("w1", "generic", 2)["job_id"] == generic[2]  # w1 finished its job: the next one

    seen = []
    while (lease := coordinator.lease("w1", "generic", 2)) is not None:
        seen.append(lease["job_id"])
        _finish_job(coordinator, lease, "w1")
    assert seen == [generic[2], *generic[3:]]  # the job w1 held first, then the rest in order
    assert coordinator.lease("w9", "generic", 9) is None
    assert coordinator.lease("w9", "experiment", 9)["job_id"] == experiments[1]
    assert coordinator.lease("w10", "rollout", 10) is None


def test_manifest_rewrites_are_paced_and_the_settled_one_is_complete(tmp_path, monkeypatch):
    spec, coordinator = _coordinator(tmp_path)
    manifest_path = tmp_path / "run" / "manifest.json"

    def statuses():
        return [job["status"] for job in json.loads(manifest_path.read_text())["jobs"]]

    assert statuses() == ["pending"] * len(spec.jobs)
    monkeypatch.setattr(coordinator_module, "MANIFEST_INTERVAL", 3600.0)
    coordinator.poll()  # the first poll may write; the next ones wait an hour
    lease = coordinator.lease("w0", "generic", 1)
    _finish_job(coordinator, lease, "w0")
    assert coordinator.poll()["done"] == 1  # the figures are live ...
    assert "done" not in statuses()  # ... the file is not rewritten yet (the journal has the commit)

    coordinator._manifest_due = 0.0
    coordinator.poll()
    assert statuses().count("done") == 1
    text = manifest_path.read_text()
    assert "\n" not in text.strip()  # running rewrites are compact

    coordinator.finish(interrupted=True)
    settled = manifest_path.read_text()
    assert settled.startswith("{\n") and json.loads(settled)["status"] == "interrupted"


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_manifest_stays_strict_json_with_non_finite_params(tmp_path, value):
    spec = load_spec('name = "nf"\n[[jobs]]\nworkload = "random-walk"\nsteps = 1\n')
    raw = json.loads(json.dumps(spec.raw))
    jobs = [job.to_json() for job in spec.jobs]
    jobs[0]["params"] = {**jobs[0]["params"], "scale": float(value)}  # as a user's workload params may hold
    coordinator = Coordinator(str(tmp_path / "run"), "s", {"render": RENDER_OFF})
    coordinator.start(raw, jobs)
    coordinator.poll()
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text(), parse_constant=pytest.fail)
    assert manifest["jobs"][0]["params"]["scale"] is None
