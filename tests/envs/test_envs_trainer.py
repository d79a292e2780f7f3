"""PPO: advantage bookkeeping under NEXT_STEP autoreset, and solving CartPole."""

from __future__ import annotations

import pytest
import torch

from simfarm.envs import PPOConfig, PPOTrainer, Rollout, evaluate, make


def test_advantages_respect_terminations_truncations_and_reset_steps():
    rollout = Rollout(make("cartpole", 1, device="cpu", dtype=torch.float64), steps_per_iteration=4)
    trainer = PPOTrainer(rollout, PPOConfig(gamma=0.9, gae_lambda=0.5), seed=0)
    # t0 plain, t1 terminates, t2 is the reset step, t3 is truncated (bootstrap from V4).
    trainer._rewards[:, 0] = torch.tensor([1.0, 1.0, 0.0, 1.0], dtype=torch.float64)
    trainer._values[:, 0] = torch.tensor([0.5, 0.4, 9.0, 0.3, 0.7], dtype=torch.float64)
    trainer._terminated[:, 0] = torch.tensor([0.0, 1.0, 0.0, 0.0], dtype=torch.float64)
    trainer._finished[:, 0] = torch.tensor([0.0, 1.0, 0.0, 1.0], dtype=torch.float64)
    trainer._valid[:, 0] = torch.tensor([1.0, 1.0, 0.0, 1.0], dtype=torch.float64)
    advantages = trainer._advantages()[:, 0].tolist()
    a3 = 1.0 + 0.9 * 0.7 - 0.3  # truncated: bootstrapped from the final observation
    a1 = 1.0 - 0.4  # terminated: no bootstrap
    a0 = (1.0 + 0.9 * 0.4 - 0.5) + 0.9 * 0.5 * a1
    assert advantages == pytest.approx([a0, a1, 0.0, a3])


def test_same_seed_same_weights_and_updates():
    def run(seed):
        rollout = Rollout(make("cartpole", 8, device="cpu", seed=seed), steps_per_iteration=32)
        trainer = PPOTrainer(rollout, PPOConfig(hidden=(8,)), seed=seed)
        initial = [p.clone() for p in trainer.model.parameters()]
        trainer.train(2, stop_when_solved=False)
        return initial, list(trainer.model.parameters())

    (init_a, final_a), (init_b, final_b), (init_c, _) = run(1), run(1), run(2)
    assert all(torch.equal(x, y) for x, y in zip(init_a, init_b, strict=True))
    assert all(torch.equal(x, y) for x, y in zip(final_a, final_b, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(init_a, init_c, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(init_a, final_a, strict=True))


def test_ppo_solves_cartpole_within_a_bounded_number_of_iterations():
    # A small, fast config (about 35-60 iterations across seeds); the bound leaves room
    # for platforms whose floating point takes a different path.
    rollout = Rollout(make("cartpole", 32, device="cpu", seed=1), steps_per_iteration=128)
    trainer = PPOTrainer(rollout, PPOConfig(), seed=1)
    history = trainer.train(100)
    final = history[-1][1]
    assert final.moving_average >= 475.0, f"not solved after {len(history)} iterations"
    assert len(history) < 100


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(5))
def test_ppo_solves_cartpole_and_the_greedy_policy_holds_500(seed):
    rollout = Rollout(make("cartpole", 64, device="cpu", seed=seed), steps_per_iteration=128)
    trainer = PPOTrainer(rollout, PPOConfig(), seed=seed)
    history = trainer.train(150)
    assert history[-1][1].moving_average >= 475.0
    greedy = lambda obs, generator: trainer.model.act(obs, generator, greedy=True)  # noqa: E731
    rewards = evaluate(make("cartpole", 100, device="cpu"), greedy, episodes=100, seed=seed + 100)
    assert rewards.mean() >= 475.0
