"""CartPole parity with gymnasium, autoreset semantics, the reset-pool bound, rendering."""

from __future__ import annotations

import itertools

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.envs.classic_control.cartpole import CartPoleEnv, CartPoleVectorEnv

from simfarm.envs import CartPole, CartPolePD, make
from simfarm.envs.cartpole import MIN_EPISODE_STEPS, cartpole_kernel


def test_next_state_matches_gymnasium_over_random_states_and_actions():
    rng = np.random.default_rng(0)
    n = 2000
    # Spread well beyond the thresholds so both flag values occur often.
    states = rng.uniform([-3.0, -3.0, -0.3, -3.0], [3.0, 3.0, 0.3, 3.0], size=(n, 4))
    actions = rng.integers(0, 2, size=n)
    env = CartPole(n, device="cpu", dtype=torch.float64)
    env.state = torch.from_numpy(states)
    _, reward, terminated, truncated, _ = env.step(torch.from_numpy(actions))
    ours = env.state.numpy()

    reference = CartPoleEnv()
    reference.reset(seed=0)
    expected = np.empty_like(states)
    expected_terminated = np.empty(n, dtype=bool)
    for i in range(n):  # gymnasium's single env is the reference, one state at a time
        reference.state = states[i].copy()
        reference.steps_beyond_terminated = None
        reference.step(int(actions[i]))
        expected[i] = reference.state
        expected_terminated[i] = bool(
            abs(reference.state[0]) > reference.x_threshold
            or abs(reference.state[2]) > reference.theta_threshold_radians
        )
    np.testing.assert_allclose(ours, expected, atol=1e-5, rtol=0)
    assert np.abs(ours - expected).max() < 1e-12  # in float64 only rounding separates them
    np.testing.assert_array_equal(terminated.numpy(), expected_terminated)
    assert 200 < expected_terminated.sum() < n - 200
    assert not truncated.any()
    assert torch.all(reward == 1.0)


def test_full_episodes_match_gymnasium_including_truncation_at_500():
    # Open-loop, rounding differences of 1e-16 grow exponentially (the
    # inverted pendulum is unstable), so each step starts from gymnasium's
    # state; our own step counter, flags, rewards and autoreset run freely.
    policy = CartPolePD()
    env = CartPole(1, device="cpu", dtype=torch.float64)
    env.reset()
    for seed, noisy in [(3, False), (11, True)]:
        reference = gym.make("CartPole-v1")
        reference.reset(seed=seed)
        rng = np.random.default_rng(seed)
        steps = 0
        while True:
            env.state = torch.from_numpy(reference.unwrapped.state.copy()).view(1, 4)
            # The controller keeps the pole up; noisy episodes add random pushes to fall earlier.
            action = int(policy.act(env.state, None)[0])
            if noisy and rng.random() < 0.9:
                action = int(rng.integers(0, 2))
            obs, reward, terminated, truncated, _ = reference.step(action)
            mine = env.step(torch.tensor([action]))
            steps += 1
            np.testing.assert_allclose(mine[0][0].numpy(), reference.unwrapped.state, atol=1e-5, rtol=0)
            assert float(mine[1][0]) == reward
            assert bool(mine[2][0]) == terminated
            assert bool(mine[3][0]) == truncated
            if terminated or truncated:
                break
        if not noisy:
            assert steps == 500 and truncated and not terminated
        else:
            assert steps < 500 and terminated
        # NEXT_STEP autoreset: the following step resets, ignores the action, pays 0.
        obs_reset, reward_reset, term_reset, trunc_reset, _ = env.step(torch.tensor([1]))
        assert float(reward_reset[0]) == 0.0 and not term_reset[0] and not trunc_reset[0]
        assert torch.all(obs_reset.abs() < 0.05)
        assert int(env.episode_steps[0]) == 0


def test_open_loop_trajectories_agree_closely_for_a_while():
    reference = gym.make("CartPole-v1")
    reference.reset(seed=7)
    env = CartPole(1, device="cpu", dtype=torch.float64)
    env.reset()
    env.state = torch.from_numpy(reference.unwrapped.state.copy()).view(1, 4)
    actions = np.random.default_rng(7).integers(0, 2, size=60)
    for action in actions:
        _, _, terminated, _, _ = reference.step(int(action))
        env.step(torch.tensor([int(action)]))
        np.testing.assert_allclose(env.state[0].numpy(), reference.unwrapped.state, atol=1e-9, rtol=0)
        if terminated:
            break


def test_autoreset_flags_and_rewards_match_gymnasiums_vector_env():
    n, steps = 64, 300
    reference = CartPoleVectorEnv(num_envs=n)
    reference.reset(seed=5)
    env = CartPole(n, device="cpu", dtype=torch.float64)
    env.reset()
    rng = np.random.default_rng(5)
    resets_seen = 0
    for _ in range(steps):
        # Start every step from gymnasium's state and episode counters, compare what follows.
        env.state = torch.from_numpy(reference.state.T.copy())
        env.set_episode_progress(torch.from_numpy(reference.steps.copy()), torch.from_numpy(reference.prev_done.copy()))
        resetting = reference.prev_done.copy()
        actions = rng.integers(0, 2, size=n)
        obs, reward, terminated, truncated, _ = reference.step(actions)
        mine = env.step(torch.from_numpy(actions))
        np.testing.assert_array_equal(mine[1].numpy(), reward)
        np.testing.assert_array_equal(mine[2].numpy(), terminated)
        np.testing.assert_array_equal(mine[3].numpy(), truncated)
        moving = ~resetting
        np.testing.assert_allclose(mine[0].numpy()[moving], obs[moving], atol=1e-5)
        assert np.all(np.abs(mine[0].numpy()[resetting]) < 0.05)
        resets_seen += int(resetting.sum())
    assert resets_seen > 100


def test_truncation_uses_max_episode_steps():
    env = CartPole(4, device="cpu", max_episode_steps=20)
    env.reset(seed=1)
    policy = CartPolePD()
    lengths = []
    for t in range(1, 45):
        _, _, terminated, truncated, info = env.step(policy.act(env.state, None))
        if truncated.any():
            lengths.append(t)
            assert torch.equal(info["success"], truncated & ~terminated)
    assert lengths == [20, 41]  # 20 steps, a reset step, 20 steps


def test_no_episode_from_the_reset_box_ends_before_min_episode_steps():
    # The reset pool lives MIN_EPISODE_STEPS + 1 steps; that is only safe if
    # no episode started from the reset box can be shorter. Try the corners
    # of the box (the extremes) and random interior points under pushes in
    # either direction and pushes that make the pole fall fastest.
    corners = torch.tensor(list(itertools.product([-0.05, 0.05], repeat=4)), dtype=torch.float64)
    inside = torch.empty(20000, 4, dtype=torch.float64).uniform_(-0.05, 0.05, generator=torch.Generator().manual_seed(0))
    start = torch.cat([corners, inside]).T.contiguous()
    n = start.shape[1]
    zeros = torch.zeros(n, dtype=torch.float64)
    for rule in ("left", "right", "fall"):
        state = start.clone()
        for step in range(1, MIN_EPISODE_STEPS):
            actions = {"left": zeros, "right": zeros + 1, "fall": (state[2] < 0).double()}[rule]
            state, _, _, _, terminated, _, _ = cartpole_kernel(state, zeros, zeros, actions, state, 500.0)
            assert not terminated.any(), f"episode ended after {step} steps under {rule!r} pushes"
    env = CartPole(8, device="cpu", max_episode_steps=3)
    assert env.reset_pool_steps == 4  # truncation shorter than the bound wins


def test_reset_pool_never_repeats_an_initial_state_in_an_env():
    env = CartPole(32, device="cpu", max_episode_steps=1, seed=4)
    env.reset()
    starts = []
    for _ in range(40):
        obs, *_ = env.step(torch.zeros(32, dtype=torch.int64))
        starts.append(obs.clone())
    resets = torch.stack(starts[1::2])  # every other step is a reset step here
    flat = resets.transpose(0, 1).reshape(32, -1, 4)
    for env_id in range(32):
        assert torch.unique(flat[env_id], dim=0).shape[0] == flat.shape[1]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.compile's own internals
def test_compiled_step_matches_eager_in_float64():
    eager = make("cartpole", 64, device="cpu", dtype=torch.float64, seed=2)
    compiled = make("cartpole", 64, device="cpu", dtype=torch.float64, seed=2, compile=True)
    eager.reset()
    compiled.reset()
    generator = torch.Generator().manual_seed(0)
    for _ in range(120):
        actions = torch.randint(0, 2, (64,), generator=generator)
        a, b = eager.step(actions), compiled.step(actions)
        torch.testing.assert_close(a[0], b[0], atol=1e-10, rtol=0)
        for x, y in zip(a[1:4], b[1:4], strict=True):
            assert torch.equal(x, y)


def test_render_draws_the_cart_where_the_state_puts_it():
    env = CartPole(3, device="cpu")
    env.reset()
    env.state = torch.tensor([[-1.5, 0.0, 0.0, 0.0], [0.0, 0.0, 0.1, 0.0], [1.5, 0.0, -0.1, 0.0]])
    frames = env.render([0, 1, 2])
    height, width = env.render_shape
    assert frames.shape == (3, height, width, 3) and frames.dtype == torch.uint8
    cart = torch.tensor([45, 45, 55], dtype=torch.uint8)
    columns = [torch.nonzero((frames[i] == cart).all(-1).any(0)).float().mean().item() for i in range(3)]
    scale = width / 4.8
    for column, x in zip(columns, (-1.5, 0.0, 1.5), strict=True):
        assert abs(column - (width / 2 + x * scale)) < 2.0
    # The same state gives the same picture through draw_episode.
    assert torch.equal(env.draw_episode(1, env.state[1:2]), frames[1:2])
    with pytest.raises(ValueError, match="env_ids"):
        env.render([3])


def test_drawing_only_the_swept_box_gives_the_full_frame_pixels():
    """Frames drawn in the box the cart and pole cover equal frames drawn pixel by pixel everywhere."""
    env = CartPole(1, device="cpu", render_size=(60, 90))
    env.reset()
    generator = torch.Generator().manual_seed(0)
    height, width = env.render_shape
    cases = [
        (torch.rand(40, generator=generator) * 0.4 - 0.2, torch.rand(40, generator=generator) * 0.4 - 0.2),
        (torch.rand(40, generator=generator) * 6 - 3, torch.rand(40, generator=generator) * 7 - 3.5),  # off track, any angle
        (torch.tensor([2.55, -2.55, 0.0]), torch.tensor([1.57, -1.57, 3.14])),  # at the frame's edges, pole down
        (torch.tensor([0.0, float("nan")]), torch.tensor([float("nan"), 0.0])),
    ]
    for x, theta in cases:
        boxed = env._draw(x, theta)
        cx = width / 2 + x * env._shape["scale"]
        everywhere = env._draw_box(cx, theta, slice(0, height), slice(0, width))
        assert torch.equal(boxed, everywhere)
    moving = env._draw(torch.tensor([0.0, 0.1]), torch.tensor([0.0, 0.05]))
    assert not torch.equal(moving[0], moving[1])
