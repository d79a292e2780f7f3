"""A two-node Ray cluster: jobs spread over both nodes, one node removed mid-run, same tables."""

from __future__ import annotations

import time

import pytest
import ray
from ray.cluster_utils import Cluster

import simfarm
from farm_helpers import assert_no_duplicates, assert_same_tables, committed_records, journal

SPEC = """
name = "multi"
seed = 2
seeds = 4
[[jobs]]
workload = "random-walk"
steps = 10
step_seconds = 0.1
[jobs.grid]
dims = [1, 2]
[farm]
workers = 4
num_cpus_per_worker = 0.5
batch_size = 1
max_job_restarts = 10
"""


@pytest.fixture(scope="module")
def cluster():
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    ray.init(address=cluster.address, log_to_driver=False)
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def test_node_removed_mid_run_and_tables_match_the_single_node_run(cluster, tmp_path):
    single = simfarm.run(SPEC, out=tmp_path / "single", quiet=True)
    assert single.ok
    assert len({e["node"] for e in journal(single.run_dir, "lease")}) == 1

    extra = cluster.add_node(num_cpus=2)
    cluster.wait_for_nodes()
    assert len([n for n in ray.nodes() if n["Alive"]]) == 2
    head_id = ray.get_runtime_context().get_node_id()

    import threading

    removed: list[str] = []

    def remove_when_busy() -> None:
        out = tmp_path / "multi"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            runs = [p for p in out.glob("*") if (p / "journal.jsonl").exists()]
            if runs and committed_records(runs[0]) >= 15:
                nodes = {e["node"] for e in journal(runs[0], "lease")}
                if len(nodes) == 2:
                    cluster.remove_node(extra)
                    removed.append(extra.node_id)
                    return
            time.sleep(0.05)

    thread = threading.Thread(target=remove_when_busy, daemon=True)
    thread.start()
    multi = simfarm.run(SPEC, out=tmp_path / "multi", quiet=True)
    thread.join(timeout=30)
    assert removed, "the second node was never removed mid-run: the test proved nothing"
    assert multi.ok, multi.failed
    leases = journal(multi.run_dir, "lease")
    assert {e["node"] for e in leases} == {head_id, removed[0]}  # jobs ran on both nodes
    assert multi.jobs["attempts"].max() >= 2  # jobs of the removed node were resumed elsewhere
    assert_same_tables(single, multi)
    assert_no_duplicates(multi.run_dir)
