"""Capture schedule, capture log, and traces produced by a Rollout."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from simfarm.envs import CaptureSchedule, EpisodeTrace, RandomPolicy, Rollout, make
from simfarm.envs.steplog import StepLog
from simfarm.records import EpisodeTrace as RecordsEpisodeTrace


def test_episode_trace_is_the_records_type():
    assert EpisodeTrace is RecordsEpisodeTrace


def test_schedule_rules_combine():
    schedule = CaptureSchedule(episode_indices=(3, 7), every_n_episodes=10, last_n_episodes=2)
    episodes = np.arange(25)
    assert list(np.flatnonzero(schedule.select(episodes))) == [0, 3, 7, 10, 20]
    assert list(np.flatnonzero(schedule.select(episodes, total_episodes=25))) == [0, 3, 7, 10, 20, 23, 24]
    assert schedule.selects(7) and not schedule.selects(8)
    assert not CaptureSchedule().enabled
    assert CaptureSchedule(max_frames=5).enabled is False
    assert CaptureSchedule(episode_indices=(4,)).may_select_from(4)
    assert not CaptureSchedule(episode_indices=(4,)).may_select_from(5)
    assert CaptureSchedule(every_n_episodes=3).may_select_from(10**9)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"episode_indices": (-1,)}, "episode_indices"),
        ({"every_n_episodes": 0}, "every_n_episodes"),
        ({"last_n_episodes": -2}, "last_n_episodes"),
        ({"max_frames": 0}, "max_frames"),
    ],
)
def test_schedule_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CaptureSchedule(**kwargs)


def test_step_log_wraps_around_and_refuses_what_it_lost():
    log = StepLog(n_envs=3, n_features=4, capacity=5, device=torch.device("cpu"), dtype=torch.float32)
    log.write([torch.zeros(4, 3)], position=0)
    for p in range(1, 12):  # positions 1..11, written over a 5-row ring
        state = torch.full((2, 3), float(p))
        log.write([state, torch.full((1, 3), p % 2), torch.full((1, 3), 10.0 * p)])
    block = log.read_env(env_id=1, first=7, last=11)
    assert block[:, 0].tolist() == [7, 8, 9, 10, 11]
    assert block[:, 2].tolist() == [1, 0, 1, 0, 1] and block[:, 3].tolist() == [70, 80, 90, 100, 110]
    assert log.read(10, 11).shape == (2, 4, 3)
    with pytest.raises(ValueError, match="not in the step log"):
        log.read_env(env_id=0, first=6, last=11)
    with pytest.raises(ValueError, match="not in the step log"):
        log.read(11, 12)
    kept = log.state_dict(keep=3)
    other = StepLog(3, 4, 5, torch.device("cpu"), torch.float32)
    other.load_state_dict(kept)
    assert torch.equal(other.read(9, 11), log.read(9, 11))
    with pytest.raises(ValueError, match="shape"):
        StepLog(3, 5, 5, torch.device("cpu"), torch.float32).load_state_dict(kept)


def _reference_episodes(env_name: str, n_envs: int, steps: int, seed: int, **kwargs):
    """Play the same rollout by hand, one step at a time, and list finished episodes in order."""
    env = make(env_name, n_envs, device="cpu", seed=seed, **kwargs)
    obs = env.reset()
    frames = [[env.render([e])[0]] for e in range(n_envs)]
    actions_so_far = [[] for _ in range(n_envs)]
    rewards_so_far = [[] for _ in range(n_envs)]
    policy = RandomPolicy(env.n_actions)
    from simfarm.envs.rollout import ACTION_STREAM, step_generator

    generator = step_generator(seed, 0, ACTION_STREAM)
    finished = []
    pending_reset = torch.zeros(n_envs, dtype=torch.bool)
    for _ in range(steps):
        actions = policy.act(obs, generator)
        obs, reward, terminated, truncated, _ = env.step(actions)
        done = terminated | truncated
        for e in range(n_envs):
            if pending_reset[e]:  # the reset step opens a new episode
                frames[e] = [env.render([e])[0]]
                actions_so_far[e], rewards_so_far[e] = [], []
                continue
            frames[e].append(env.render([e])[0])
            actions_so_far[e].append(int(actions[e]))
            rewards_so_far[e].append(float(reward[e]))
            if done[e]:
                finished.append((e, torch.stack(frames[e]), actions_so_far[e][:], rewards_so_far[e][:]))
        pending_reset = done
    return finished


@pytest.mark.parametrize("env_name", ["cartpole", "raycast"])
def test_traces_are_the_scheduled_episodes_in_completion_order(env_name):
    n_envs, steps = 6, 60
    kwargs = {"max_episode_steps": 9} if env_name == "raycast" else {}
    expected = _reference_episodes(env_name, n_envs, steps, seed=4, **kwargs)
    env = make(env_name, n_envs, device="cpu", seed=4, **kwargs)
    schedule = CaptureSchedule(episode_indices=(0, 2), every_n_episodes=5, max_frames=6)
    rollout = Rollout(env, steps_per_iteration=steps // 2, capture=schedule, metadata={"run": "t"})
    policy = RandomPolicy(env.n_actions)
    traces = []
    from simfarm.envs.rollout import step_generator

    # One stream for both halves, as the reference used: run the steps by hand.
    generator = step_generator(4, 0, 0)
    for _ in range(2):
        for _ in range(steps // 2):
            rollout.step(policy.act(rollout.obs, generator))
        traces += rollout.end_iteration().traces
    wanted = [i for i in range(len(expected)) if schedule.selects(i)]
    assert [t.episode for t in traces] == wanted and len(wanted) >= 3
    for trace in traces:
        env_id, frames, actions, rewards = expected[trace.episode]
        assert trace.env_id == env_id
        assert trace.step_count == len(actions) and trace.actions.tolist() == actions
        np.testing.assert_allclose(trace.rewards, rewards)
        assert trace.episode_reward == pytest.approx(sum(rewards))
        assert trace.frames.dtype == np.uint8 and trace.frames.shape[1:] == (*env.render_shape, 3)
        assert len(trace.frames) == min(6, len(actions) + 1)  # initial frame + one per step, capped
        np.testing.assert_array_equal(trace.frames, frames[:6].numpy())
        assert trace.metadata["run"] == "t" and trace.metadata["env"] == env_name
        assert trace.fps == env.render_fps


def test_last_n_episodes_arrive_with_the_final_iteration_and_survive_npz(tmp_path):
    env = make("cartpole", 8, device="cpu", seed=1, max_episode_steps=15)
    rollout = Rollout(env, steps_per_iteration=40, capture=CaptureSchedule(episode_indices=(1,), last_n_episodes=3))
    policy = RandomPolicy(2)
    rollout.run(policy.act)
    early = rollout.end_iteration()
    rollout.run(policy.act)
    final = rollout.end_iteration(final=True)
    total = final.episodes_total
    assert [t.episode for t in early.traces] == [1]
    assert [t.episode for t in final.traces] == [total - 3, total - 2, total - 1]
    trace = final.traces[-1]
    path = tmp_path / "episode.npz"
    np.savez(path, **trace.to_npz_arrays())
    with np.load(path, allow_pickle=False) as data:
        back = EpisodeTrace.from_npz_arrays(data)
    np.testing.assert_array_equal(back.frames, trace.frames)
    np.testing.assert_array_equal(back.actions, trace.actions)
    assert back.episode == trace.episode and back.avg_reward == pytest.approx(trace.avg_reward)
    assert back.metadata["iteration"] == 1


def test_episode_statistics_match_a_hand_count():
    env = make("cartpole", 16, device="cpu", seed=2)
    rollout = Rollout(env, steps_per_iteration=100, window=10)
    policy = RandomPolicy(2)
    returns = []
    current = torch.zeros(16)
    pending = torch.zeros(16, dtype=torch.bool)
    from simfarm.envs.rollout import step_generator

    generator = step_generator(2, 0, 0)
    for _ in range(100):
        obs, reward, terminated, truncated, _ = rollout.step(policy.act(rollout.obs, generator))
        current = torch.where(pending, torch.zeros_like(current), current) + reward
        done = terminated | truncated
        returns += current[done].tolist()
        pending = done
    summary = rollout.end_iteration()
    assert summary.episodes == len(returns) == summary.episodes_total
    assert summary.reward_mean == pytest.approx(np.mean(returns))
    assert summary.reward_min == min(returns) and summary.reward_max == max(returns)
    assert summary.moving_average == pytest.approx(np.mean(returns[-10:]))
    empty = Rollout(make("cartpole", 2, device="cpu"), steps_per_iteration=3)
    empty.run(RandomPolicy(2).act)
    quiet = empty.end_iteration()
    assert quiet.episodes == 0 and np.isnan(quiet.reward_mean) and np.isnan(quiet.moving_average)
