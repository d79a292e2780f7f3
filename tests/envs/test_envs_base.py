"""The BatchedEnv contract: make, devices, actions, checkpoint state, no host sync in step."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from simfarm.envs import BatchedEnv, CartPole, RayCast, env_options, make, resolve_device


def test_make_builds_registered_envs_with_their_metadata():
    env = make("cartpole", 8, seed=3)
    assert isinstance(env, CartPole) and isinstance(env, BatchedEnv)
    assert env.device == resolve_device("auto")
    assert env.n_envs == 8 and env.n_actions == 2 and env.observation_shape == (4,)
    assert env.single_action_space.n == 2
    assert env.single_observation_space.shape == (4,) and env.single_observation_space.dtype == "float32"
    ray = make("raycast", 2, device="cpu", dtype=torch.float64, task="point-goal", res=16)
    assert isinstance(ray, RayCast) and ray.reset().dtype == torch.float64
    assert ray.single_action_space.names[1] == "forward"
    assert "task" in env_options("raycast") and "compile" in env_options("cartpole")


def test_make_errors_name_the_problem():
    with pytest.raises(ValueError, match="unknown env 'cartpol'; did you mean 'cartpole'"):
        make("cartpol", 2)
    with pytest.raises(ValueError, match="unknown option 'rez' for env 'raycast'; did you mean 'res'"):
        make("raycast", 2, device="cpu", rez=8)
    with pytest.raises(ValueError, match="n_envs must be a positive integer"):
        make("cartpole", 0)
    with pytest.raises(ValueError, match="dtype must be"):
        make("cartpole", 2, dtype=torch.float16)
    with pytest.raises(ValueError, match="device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match='use device="auto"'):
            resolve_device("cuda")


def test_step_checks_its_input():
    env = make("cartpole", 3, device="cpu")
    with pytest.raises(RuntimeError, match="before reset"):
        env.step([0, 1, 0])
    env.reset()
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        env.step([0, 1])
    with pytest.raises(ValueError, match="integers"):
        env.step(torch.zeros(3))
    obs, reward, terminated, truncated, info = env.step(np.array([0, 1, 0]))  # numpy is fine
    assert obs.shape == (3, 4) and reward.shape == (3,)
    assert terminated.dtype == torch.bool and truncated.dtype == torch.bool
    assert info["success"].dtype == torch.bool


@pytest.mark.parametrize("name", ["cartpole", "raycast"])
def test_reset_with_a_seed_is_reproducible(name):
    env = make(name, 5, device="cpu", seed=0)
    first = env.reset(seed=42).clone()
    env.step(torch.zeros(5, dtype=torch.int64))
    assert torch.equal(env.reset(seed=42), first)
    assert not torch.equal(make(name, 5, device="cpu", seed=0).reset(seed=43), first)


@pytest.mark.parametrize("name", ["cartpole", "raycast"])
def test_state_dict_resumes_bit_identically(name):
    def play(env, steps, generator):
        out = []
        for _ in range(steps):
            obs, reward, terminated, truncated, _ = env.step(torch.randint(0, env.n_actions, (env.n_envs,), generator=generator))
            out.append(torch.cat([obs.reshape(env.n_envs, -1), reward[:, None], terminated[:, None], truncated[:, None]], 1))
        return torch.stack(out)

    env = make(name, 16, device="cpu", seed=7, max_episode_steps=12)
    env.reset()
    generator = torch.Generator().manual_seed(1)
    play(env, 10, generator)
    saved, saved_rng = env.state_dict(), generator.get_state()
    straight = play(env, 40, generator)
    # Same params (layouts are rebuilt from them), but a different history.
    other = make(name, 16, device="cpu", seed=7, max_episode_steps=12)
    other.reset(seed=123)
    play(other, 7, torch.Generator().manual_seed(5))
    other.load_state_dict(saved)
    generator.set_state(saved_rng)
    assert torch.equal(play(other, 40, generator), straight)
    with pytest.raises(ValueError, match="shape"):
        make(name, 8, device="cpu").load_state_dict(saved)


@pytest.mark.parametrize("name", ["cartpole", "raycast"])
def test_step_does_not_synchronise_with_the_host(name, monkeypatch):
    # On a GPU, .item(), .tolist(), bool(tensor), nonzero and boolean-mask
    # indexing each wait for the device. Make them fail while stepping.
    env = make(name, 8, device="cpu", seed=1, max_episode_steps=5)
    env.reset()

    def refuse(*args, **kwargs):
        raise AssertionError("host synchronisation inside step()")

    original_getitem = torch.Tensor.__getitem__

    def getitem(self, index):
        parts = index if isinstance(index, tuple) else (index,)
        if any(isinstance(p, torch.Tensor) and p.dtype == torch.bool for p in parts):
            refuse()
        return original_getitem(self, index)

    for attr in ("item", "tolist", "__bool__", "nonzero", "any", "all"):
        monkeypatch.setattr(torch.Tensor, attr, refuse)
    monkeypatch.setattr(torch, "nonzero", refuse)
    monkeypatch.setattr(torch.Tensor, "__getitem__", getitem)
    actions = torch.zeros(8, dtype=torch.int64)
    for _ in range(12):  # crosses truncation and autoreset
        env.step(actions)


def test_envs_import_no_ray():
    code = "import sys, simfarm.envs, simfarm.envs.workload; assert 'ray' not in sys.modules, 'ray imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
