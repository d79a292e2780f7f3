"""The farm's `rollout` workload: params, records, checkpoint/restore, registry."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from simfarm.envs.workload import build, steps_for, validate
from simfarm.errors import SpecError
from simfarm.records import check_metrics
from simfarm.workloads import JobContext, get, job_context, params_steps

TRAIN = {
    "env": "cartpole",
    "n_envs": 16,
    "policy": "mlp-train",
    "iterations": 5,
    "steps_per_iteration": 48,
    "hidden": [16, 16],
    "capture": {"episode_indices": [0, 5], "every_n_episodes": 25, "last_n_episodes": 2, "max_frames": 30},
}


def test_validate_fills_defaults_and_is_idempotent():
    out = validate({}, "rollouts[0]")
    assert out["env"] == "cartpole" and out["policy"] == "random" and out["n_envs"] == 64
    assert out["max_episode_steps"] == 500 and "capture" not in out and "lr" not in out
    ray = validate({"env": "raycast", "task": "point-goal", "policy": "mlp-train"}, "r")
    assert ray["layout"] == "rooms" and ray["res"] == 64 and ray["hidden"] == [64, 64] and ray["lr"] > 0
    for params in (out, ray, TRAIN):
        once = validate(dict(params), "r")
        assert validate(dict(once), "r") == once


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"n_env": 4}, "rollouts[0]: unknown key 'n_env'; did you mean 'n_envs'?"),
        ({"policy": "heuristics"}, "rollouts[0].policy must be one of"),
        ({"iterations": -3}, "rollouts[0].iterations must be a positive integer, got -3"),
        ({"lr": 0.1}, 'rollouts[0].lr only applies to policy = "mlp-train", got policy = "random"'),
        ({"res": 32}, 'rollouts[0].res is an option of env "raycast", not of env "cartpole"'),
        ({"env": "raycast", "n_walls": 8, "layout": "rooms"}, "rollouts[0].n_walls must be an integer >= 12"),
        ({"env": "raycast", "task": "fetch"}, "rollouts[0].task must be one of"),
        ({"capture": {"every_n": 3}}, "rollouts[0].capture: unknown key 'every_n'"),
        ({"capture": {"episode_indices": [0, -1]}}, "rollouts[0].capture.episode_indices must be a non-negative integer, got -1"),
        ({"capture": {"max_frames": 0}}, "rollouts[0].capture.max_frames must be a positive integer, got 0"),
        ({"policy": "mlp-train", "hidden": []}, "rollouts[0].hidden must be a non-empty list"),
        ({"device": "gpu"}, 'rollouts[0].device must be one of "auto", "cpu", "cuda"'),
    ],
)
def test_validate_errors_name_key_value_and_fix(params, message):
    with pytest.raises(SpecError) as err:
        validate(params, "rollouts[0]")
    assert message in str(err.value)


def test_registry_and_steps_for():
    info = get("rollout")
    assert info.table == "iterations" and info.worker == "rollout"
    assert info.validate({"iterations": 3}, "x")["iterations"] == 3
    assert steps_for({"iterations": 7}) == 7
    assert params_steps(info, {"iterations": 4}) == 4


def _same(a, b) -> bool:
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


def _assert_records_equal(left, right):
    for a, b in zip(left, right, strict=True):
        assert a.step == b.step
        assert a.metrics.keys() == b.metrics.keys()
        for key in a.metrics:
            assert _same(a.metrics[key], b.metrics[key]), (a.step, key, a.metrics[key], b.metrics[key])
        assert [t.episode for t in a.traces] == [t.episode for t in b.traces]
        for ta, tb in zip(a.traces, b.traces, strict=True):
            for name, array in ta.to_npz_arrays().items():
                np.testing.assert_array_equal(array, tb.to_npz_arrays()[name])


@pytest.mark.parametrize(
    "params",
    [
        TRAIN,
        {
            "env": "raycast",
            "n_envs": 8,
            "policy": "heuristic",
            "task": "point-goal",
            "iterations": 4,
            "steps_per_iteration": 30,
            "max_episode_steps": 40,
            "capture": {"every_n_episodes": 3, "last_n_episodes": 1},
        },
    ],
    ids=["cartpole-train", "raycast-heuristic"],
)
def test_checkpoint_restore_continues_bit_identically(params):
    n, k = params["iterations"], 2
    straight = list(build(params, seed=11))
    assert len(straight) == n
    first = build(params, seed=11)
    head = [next(first) for _ in range(k)]
    blob = first.checkpoint()
    assert isinstance(blob, bytes)
    resumed = build(params, seed=11)
    resumed.restore(blob)
    tail = list(resumed)
    _assert_records_equal(head + tail, straight)
    assert sum(len(r.traces) for r in straight) >= 3
    # Capture adds only the followed episodes' rows, not a history of every env.
    plain = build({k: v for k, v in params.items() if k != "capture"}, seed=11)
    for _ in range(k):
        next(plain)
    assert len(blob) - len(plain.checkpoint()) < 20_000


def test_records_carry_deterministic_metrics_and_timings():
    records = list(build(TRAIN, seed=3))
    for i, record in enumerate(records):
        check_metrics(record.metrics, where="test")
        assert record.metrics["iteration"] == i
        assert record.metrics["env_steps"] == 16 * 48 * (i + 1)
        assert set(record.timings) == {"steps_per_s", "iteration_wall_s"}
        assert record.metrics["entropy"] > 0 and not math.isnan(record.metrics["value_loss"])
    assert records[-1].metrics["episodes_total"] == sum(r.metrics["episodes"] for r in records)
    random_run = list(build({"iterations": 2, "n_envs": 4, "steps_per_iteration": 10}, seed=0))
    assert random_run[0].metrics["entropy"] == pytest.approx(math.log(2))
    assert math.isnan(random_run[0].metrics["policy_loss"])
    again = list(build(TRAIN, seed=3))
    _assert_records_equal(records, again)
    other_seed = list(build(TRAIN, seed=4))
    assert other_seed[0].metrics["episode_reward_mean"] != records[0].metrics["episode_reward_mean"]


def test_restore_rejects_foreign_state():
    job = build(TRAIN, seed=1)
    with pytest.raises(ValueError, match="not a rollout checkpoint"):
        job.restore(b"garbage")
    other = build({**TRAIN, "n_envs": 8}, seed=1)
    with pytest.raises(ValueError, match="other params"):
        other.restore(job.checkpoint())


def test_job_context_sets_threads_and_keeps_cpu_without_a_reserved_gpu():
    with job_context(JobContext(job_id="j", num_cpus=1.0, num_gpus=0.0)):
        job = build({"n_envs": 4, "iterations": 1, "steps_per_iteration": 5}, seed=0)
    assert torch.get_num_threads() == 1
    assert job.env.device.type == "cpu"
    heuristic = build({"policy": "heuristic", "n_envs": 4, "iterations": 1, "steps_per_iteration": 600}, seed=0)
    record = next(heuristic)
    assert record.metrics["episodes"] == 4 and record.metrics["episode_reward_mean"] == 500.0
    assert record.metrics["solved"] is True
