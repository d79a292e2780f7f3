"""Random, heuristic and MLP policies."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from simfarm.envs import CartPolePD, MLPPolicy, RandomPolicy, RayCastHeuristic, evaluate, heuristic_policy, make


def test_random_policy_is_uniform_and_seeded():
    policy = RandomPolicy(7)
    obs = torch.zeros(70000, 3)
    a = policy.act(obs, torch.Generator().manual_seed(0))
    b = policy.act(obs, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.dtype == torch.int64
    counts = torch.bincount(a, minlength=7).double()
    assert torch.all((counts - 10000).abs() < 400)  # ~4 standard deviations


def test_cartpole_pd_holds_the_pole_for_every_episode():
    env = make("cartpole", 32, device="cpu")
    rewards = evaluate(env, CartPolePD().act, episodes=64, seed=3)
    assert np.all(rewards == 500.0)
    random_rewards = evaluate(env, RandomPolicy(2).act, episodes=64, seed=3)
    assert random_rewards.mean() < 40


@pytest.mark.parametrize("task", ["explore", "point-goal"])
def test_raycast_heuristic_beats_random(task):
    def score(policy):
        env = make("raycast", 64, device="cpu", task=task, layout="rooms", seed=5, max_episode_steps=120)
        return evaluate(env, policy.act, episodes=64, seed=5).mean()

    env = make("raycast", 2, device="cpu", task=task)
    assert isinstance(heuristic_policy(env), RayCastHeuristic)
    assert score(RayCastHeuristic(env)) > score(RandomPolicy(7)) + 1.0


def test_heuristic_policy_lookup_and_errors():
    assert isinstance(heuristic_policy(make("cartpole", 1, device="cpu")), CartPolePD)
    with pytest.raises(TypeError, match="raycast"):
        RayCastHeuristic(make("cartpole", 1, device="cpu"))
    with pytest.raises(ValueError, match="gains"):
        CartPolePD((1.0, 2.0))


def test_mlp_policy_is_built_from_its_generator_and_samples_reproducibly():
    a = MLPPolicy(4, 2, (16, 16), generator=torch.Generator().manual_seed(3))
    b = MLPPolicy(4, 2, (16, 16), generator=torch.Generator().manual_seed(3))
    c = MLPPolicy(4, 2, (16, 16), generator=torch.Generator().manual_seed(4))
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))
    assert not torch.equal(a.actor[0].weight, c.actor[0].weight)
    obs = torch.randn(5000, 4, generator=torch.Generator().manual_seed(0))
    logits, value = a(obs)
    assert logits.shape == (5000, 2) and value.shape == (5000,)
    actions, log_prob, _ = a.sample(obs, torch.Generator().manual_seed(1))
    again, _, _ = a.sample(obs, torch.Generator().manual_seed(1))
    assert torch.equal(actions, again)
    torch.testing.assert_close(log_prob, torch.log_softmax(logits, -1).gather(1, actions[:, None]).squeeze(1))
    # A near-uniform start: both actions drawn about equally.
    assert 0.4 < actions.double().mean() < 0.6
    assert torch.equal(a.act(obs, None, greedy=True), logits.argmax(-1))
    with pytest.raises(ValueError, match="hidden"):
        MLPPolicy(4, 2, (), generator=torch.Generator())
