"""Capture schedule, episode numbering, the episode recorder, and the traces a Rollout delivers."""

from __future__ import annotations

import functools
import io
import json

import numpy as np
import pytest
import torch

from simfarm.envs import CaptureSchedule, EpisodeTrace, RandomPolicy, Rollout, heuristic_policy, make
from simfarm.envs.rollout import ACTION_STREAM, step_generator
from simfarm.envs.steplog import StepLog
from simfarm.records import EpisodeTrace as RecordsEpisodeTrace


def test_episode_trace_is_the_records_type():
    assert EpisodeTrace is RecordsEpisodeTrace


def test_schedule_rules_combine():
    schedule = CaptureSchedule(episode_indices=(3, 7), every_n_episodes=10, last_n_episodes=2)
    episodes = np.arange(25)
    assert list(np.flatnonzero(schedule.select(episodes))) == [0, 3, 7, 10, 20]
    assert schedule.selected_in(0, 25).tolist() == [0, 3, 7, 10, 20]
    assert schedule.selected_in(4, 20).tolist() == [7, 10] and schedule.selected_in(9, 9).size == 0
    assert schedule.selects(7) and not schedule.selects(8)
    # Windows of 5 ids hold at most the explicit 3 and 7 plus one multiple of 10.
    assert schedule.most_selected_in_window(5) == 3
    assert all(len(schedule.selected_in(a, a + 5)) <= 3 for a in range(30))
    assert not CaptureSchedule().enabled
    assert CaptureSchedule(max_frames=5).enabled is False
    assert CaptureSchedule(last_n_episodes=1).enabled
    assert CaptureSchedule(episode_indices=(4,)).may_select_from(4)
    assert not CaptureSchedule(episode_indices=(4,)).may_select_from(5)
    assert not CaptureSchedule(last_n_episodes=3).may_select_from(0)  # not an id rule
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
    block = log.read(7, 11)  # wraps around the ring
    assert block.shape == (5, 4, 3)
    assert block[:, 0, 1].tolist() == [7, 8, 9, 10, 11]
    assert block[:, 2, 1].tolist() == [1, 0, 1, 0, 1] and block[:, 3, 1].tolist() == [70, 80, 90, 100, 110]
    assert log.read(10, 11, slice(0, 2)).shape == (2, 2, 3)
    with pytest.raises(ValueError, match="not in the step log"):
        log.read(6, 11)
    with pytest.raises(ValueError, match="not in the step log"):
        log.read(11, 12)


@functools.cache
def _reference_episodes(env_name: str, n_envs: int, steps: int, seed: int, max_episode_steps: int) -> list[dict]:
    """Play the same rollout by hand, one env and one step at a time (cached: treat as read-only).

    Episodes get ids as gymnasium numbers them: when their env resets, the
    first reset giving env i episode i, and envs that reset on the same step
    numbered in env-id order. Returns the finished episodes in completion
    order, each with its id, env, first and last position, frames, actions
    and rewards.
    """
    env = make(env_name, n_envs, device="cpu", seed=seed, max_episode_steps=max_episode_steps)
    obs = env.reset()
    ids, next_id, starts = list(range(n_envs)), n_envs, [0] * n_envs
    frames = [[env.render([e])[0]] for e in range(n_envs)]
    actions_so_far: list[list[int]] = [[] for _ in range(n_envs)]
    rewards_so_far: list[list[float]] = [[] for _ in range(n_envs)]
    policy = RandomPolicy(env.n_actions)
    generator = step_generator(seed, 0, ACTION_STREAM)
    finished = []
    pending_reset = torch.zeros(n_envs, dtype=torch.bool)
    for position in range(1, steps + 1):
        actions = policy.act(obs, generator)
        obs, reward, terminated, truncated, _ = env.step(actions)
        done = terminated | truncated
        for e in range(n_envs):
            if pending_reset[e]:  # the reset step opens a new episode: the next id
                ids[e], next_id, starts[e] = next_id, next_id + 1, position
                frames[e] = [env.render([e])[0]]
                actions_so_far[e], rewards_so_far[e] = [], []
                continue
            frames[e].append(env.render([e])[0])
            actions_so_far[e].append(int(actions[e]))
            rewards_so_far[e].append(float(reward[e]))
            if done[e]:
                finished.append(
                    {
                        "id": ids[e],
                        "env": e,
                        "start": starts[e],
                        "end": position,
                        "frames": torch.stack(frames[e]),
                        "actions": actions_so_far[e][:],
                        "rewards": rewards_so_far[e][:],
                    }
                )
        pending_reset = done
    return finished


def _run(rollout: Rollout, seed: int, iterations: int) -> list[list]:
    """Step ``rollout`` by hand with one action stream (as the reference does); traces per iteration."""
    policy = RandomPolicy(rollout.env.n_actions)
    generator = step_generator(seed, 0, ACTION_STREAM)
    out = []
    for k in range(iterations):
        for _ in range(rollout.steps_per_iteration):
            rollout.step(policy.act(rollout.obs, generator))
        out.append(rollout.end_iteration(final=k == iterations - 1).traces)
    return out


def _assert_trace_is(trace, expected: dict, env, max_frames: int | None = None) -> None:
    assert trace.episode == expected["id"] and trace.env_id == expected["env"]
    assert trace.step_count == len(expected["actions"]) and trace.actions.tolist() == expected["actions"]
    np.testing.assert_allclose(trace.rewards, expected["rewards"])
    assert trace.episode_reward == pytest.approx(sum(expected["rewards"]))
    assert trace.frames.dtype == np.uint8 and trace.frames.shape[1:] == (*env.render_shape, 3)
    frames = expected["frames"] if max_frames is None else expected["frames"][:max_frames]
    assert len(trace.frames) == len(frames)  # the reset frame + one per step, capped
    np.testing.assert_array_equal(trace.frames, frames.numpy())
    assert trace.fps == env.render_fps


@pytest.mark.parametrize("detect", ["host", "device"])
@pytest.mark.parametrize("env_name", ["cartpole", "raycast"])
def test_traces_are_the_scheduled_episodes_numbered_in_start_order(env_name, detect):
    n_envs, steps = 6, 60
    kwargs = {"max_episode_steps": 9 if env_name == "raycast" else 500}
    expected = _reference_episodes(env_name, n_envs, steps, 4, **kwargs)
    env = make(env_name, n_envs, device="cpu", seed=4, **kwargs)
    schedule = CaptureSchedule(episode_indices=(0, 2, 9), every_n_episodes=5, max_frames=6)
    rollout = Rollout(
        env, steps_per_iteration=steps // 2, capture=schedule, metadata={"run": "t"}, capture_detect=detect
    )
    per_iteration = _run(rollout, seed=4, iterations=2)
    traces = [t for ts in per_iteration for t in ts]
    by_id = {e["id"]: e for e in expected}
    wanted = sorted(i for i in by_id if schedule.selects(i))
    assert [t.episode for t in traces] == wanted and len(wanted) >= 4
    if env_name == "cartpole":
        # Start order differs from completion order here, and a captured
        # episode runs across the iteration boundary (its rows were carried).
        assert [e["id"] for e in expected] != sorted(by_id)
        assert any(by_id[i]["start"] <= steps // 2 < by_id[i]["end"] for i in wanted)
    for trace in traces:
        _assert_trace_is(trace, by_id[trace.episode], env, max_frames=6)
        assert trace.metadata["run"] == "t" and trace.metadata["env"] == env_name
        ended_in = 0 if by_id[trace.episode]["end"] <= steps // 2 else 1
        assert trace.metadata["iteration"] == ended_in and trace in per_iteration[ended_in]


@pytest.mark.parametrize("detect", ["host", "device"])
def test_last_n_episodes_are_the_last_to_finish_on_the_watched_envs(tmp_path, detect):
    steps, n_envs = 80, 8
    expected = _reference_episodes("cartpole", n_envs, steps, 1, max_episode_steps=15)
    env = make("cartpole", n_envs, device="cpu", seed=1, max_episode_steps=15)
    schedule = CaptureSchedule(episode_indices=(1,), last_n_episodes=3)
    rollout = Rollout(env, steps_per_iteration=steps // 2, capture=schedule, capture_detect=detect)
    early, final = _run(rollout, seed=1, iterations=2)
    watched = [e for e in expected if e["env"] < 3][-3:]  # completion order: the last three
    assert [t.episode for t in early] == [1]
    assert [t.episode for t in final] == sorted(e["id"] for e in watched)
    by_id = {e["id"]: e for e in expected}
    for trace in final:
        _assert_trace_is(trace, by_id[trace.episode], env)
    # A final trace is not delivered twice, and survives the npz round trip.
    assert rollout.end_iteration(final=True).traces == []
    trace = final[-1]
    path = tmp_path / "episode.npz"
    np.savez(path, **trace.to_npz_arrays())
    with np.load(path, allow_pickle=False) as data:
        back = EpisodeTrace.from_npz_arrays(data)
    np.testing.assert_array_equal(back.frames, trace.frames)
    np.testing.assert_array_equal(back.actions, trace.actions)
    assert back.episode == trace.episode and back.avg_reward == pytest.approx(trace.avg_reward)
    assert back.metadata["iteration"] == 1


def test_last_n_gives_no_trace_when_the_watched_envs_never_finish():
    env = make("cartpole", 2, device="cpu", seed=0)
    rollout = Rollout(env, steps_per_iteration=50, capture=CaptureSchedule(last_n_episodes=2))
    rollout.run(heuristic_policy(env).act)  # the controller holds the pole far beyond 50 steps
    assert rollout.end_iteration(final=True).traces == []


@pytest.mark.parametrize("detect", ["host", "device"])
def test_restored_rollout_records_the_same_traces(detect):
    def build() -> Rollout:
        schedule = CaptureSchedule(episode_indices=(1, 17), every_n_episodes=6, last_n_episodes=2)
        env = make("cartpole", 8, device="cpu", seed=5)
        return Rollout(env, steps_per_iteration=25, capture=schedule, capture_detect=detect)

    policy = RandomPolicy(2)

    def iterate(rollout: Rollout, k: int, final: bool) -> list:
        rollout.run(policy.act)
        return rollout.end_iteration(final=final).traces

    straight = build()
    expected = [iterate(straight, k, k == 4) for k in range(5)]
    first = build()
    head = [iterate(first, k, False) for k in range(2)]
    tensors, values = first.state_dict()
    tensors = torch.load(_saved(tensors), weights_only=True)
    resumed = build()
    resumed.load_state_dict(tensors, json.loads(json.dumps(values)))
    tail = [iterate(resumed, k, k == 4) for k in range(2, 5)]
    got = head + tail
    assert sum(len(ts) for ts in expected) >= 5
    for mine, theirs in zip(got, expected, strict=True):
        assert [t.episode for t in mine] == [t.episode for t in theirs]
        for a, b in zip(mine, theirs, strict=True):
            for name, array in a.to_npz_arrays().items():
                np.testing.assert_array_equal(array, b.to_npz_arrays()[name])


def _saved(tensors) -> io.BytesIO:
    buffer = io.BytesIO()
    torch.save(tensors, buffer)
    buffer.seek(0)
    return buffer


@pytest.mark.parametrize("n_envs", [16, 1024])
def test_checkpoint_holds_only_the_followed_envs_rows(n_envs):
    env = make("cartpole", n_envs, device="cpu", seed=2)
    schedule = CaptureSchedule(episode_indices=(3, n_envs + 40), every_n_episodes=50_000, last_n_episodes=2)
    rollout = Rollout(env, steps_per_iteration=64, capture=schedule)
    policy = heuristic_policy(env)  # long episodes: the followed ones are still running
    for _ in range(2):
        rollout.run(policy.act)
        rollout.end_iteration()
    tensors, values = rollout.state_dict()
    located = [s for s in values["capture"]["slots"] if s["env"] >= 0]
    rows = sum(t.numel() for group in tensors["capture"].values() for raw in group for t in raw.values())
    # Watched envs 0 and 1, and episodes 0 (every_n) and 3 run since the
    # reset: 129 rows of (4 state + action + reward) numbers each.
    assert sorted(s["env"] for s in located) == [0, 0, 1, 3]
    assert rows == 4 * 129 * 6
    assert "log" not in tensors  # no per-env step history at all


def test_recorder_costs_nothing_once_the_schedule_is_exhausted():
    env = make("cartpole", 4, device="cpu", seed=0, max_episode_steps=20)
    rollout = Rollout(env, steps_per_iteration=30, capture=CaptureSchedule(episode_indices=(0, 5)))
    far_ahead = CaptureSchedule(episode_indices=(10**9,))
    far = Rollout(make("cartpole", 4, device="cpu"), steps_per_iteration=30, capture=far_ahead)
    assert far.recorder is not None and far.recorder.slots == []  # nothing within reach: no per-step work
    seen = []
    for _ in range(3):
        rollout.run(RandomPolicy(2).act)
        seen += [t.episode for t in rollout.end_iteration().traces]
    assert seen == [0, 5] and rollout.recorder is None


def test_too_dense_a_schedule_is_refused_with_the_fix():
    env = make("cartpole", 4096, device="cpu")
    with pytest.raises(ValueError, match="raise every_n_episodes"):
        Rollout(env, steps_per_iteration=128, capture=CaptureSchedule(every_n_episodes=1))
    with pytest.raises(ValueError, match="detect must be one of 'auto', 'host', 'device', got 'gpu'"):
        schedule = CaptureSchedule(last_n_episodes=1)
        Rollout(make("cartpole", 2, device="cpu"), steps_per_iteration=4, capture=schedule, capture_detect="gpu")


def test_episode_statistics_match_a_hand_count():
    env = make("cartpole", 16, device="cpu", seed=2)
    rollout = Rollout(env, steps_per_iteration=100, window=10)
    policy = RandomPolicy(2)
    returns = []
    current = torch.zeros(16)
    pending = torch.zeros(16, dtype=torch.bool)
    generator = step_generator(2, 0, ACTION_STREAM)
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


@pytest.mark.parametrize("detect", ["host", "device"])
def test_sparse_schedules_skip_steps_and_still_find_their_episodes(detect):
    """Ids far ahead of the finished count let the recorder skip steps; it must still find them."""
    steps, n_envs = 200, 8
    expected = _reference_episodes("cartpole", n_envs, steps, 7, max_episode_steps=500)
    by_id = {e["id"]: e for e in expected}
    wanted = [i for i in (30, 45, 60) if i in by_id]
    # They start inside an iteration, after steps the recorder skipped as out of reach.
    assert wanted == [30, 45, 60] and all((by_id[i]["start"] - 1) % (steps // 2) > 0 for i in wanted)
    env = make("cartpole", n_envs, device="cpu", seed=7)
    schedule = CaptureSchedule(episode_indices=tuple(wanted), last_n_episodes=1)  # env 0 recorded throughout
    rollout = Rollout(env, steps_per_iteration=steps // 2, capture=schedule, capture_detect=detect)
    assert rollout.recorder._check_at >= env.reset_pool_steps
    traces = [t for ts in _run(rollout, seed=7, iterations=2) for t in ts]
    assert [t.episode for t in traces if t.episode in wanted] == wanted
    for trace in traces:
        _assert_trace_is(trace, by_id[trace.episode], env)


@pytest.mark.parametrize("detect", ["host", "device"])
def test_a_planned_length_lets_last_n_watch_only_the_final_stretch(detect):
    iterations, steps = 12, 20

    def build(planned: int | None) -> Rollout:
        env = make("cartpole", 8, device="cpu", seed=3, max_episode_steps=30)
        schedule = CaptureSchedule(last_n_episodes=3)
        return Rollout(env, steps_per_iteration=steps, capture=schedule, capture_detect=detect, iterations=planned)

    def play(rollout: Rollout, ks: range) -> tuple[list[bool], list]:
        watching, traces = [], []
        for k in ks:
            watching.append(any(s.watch for s in rollout.recorder.slots))
            rollout.run(RandomPolicy(2).act)
            traces += rollout.end_iteration(final=k == iterations - 1).traces
        return watching, traces

    always, full = play(build(None), range(iterations))
    late_rollout = build(iterations)
    # Every env finishes within any 31 steps, so the last 3 episodes on envs
    # 0..2 start in the last 2 * 31 steps: watching starts at (240 - 62) // 20.
    assert late_rollout.recorder.watch_from == 8
    watching, late = play(late_rollout, range(iterations))
    assert all(always) and watching == [k >= 8 for k in range(iterations)]
    assert len(full) == 3 and [t.episode for t in late] == [t.episode for t in full]
    for a, b in zip(late, full, strict=True):
        for name, array in a.to_npz_arrays().items():
            np.testing.assert_array_equal(array, b.to_npz_arrays()[name])
    # A checkpoint taken just before watching starts resumes to the same traces.
    first = build(iterations)
    play(first, range(8))
    tensors, values = first.state_dict()
    resumed = build(iterations)
    resumed.load_state_dict(torch.load(_saved(tensors), weights_only=True), json.loads(json.dumps(values)))
    _, tail = play(resumed, range(8, iterations))
    assert [t.episode for t in tail] == [t.episode for t in full]
    np.testing.assert_array_equal(tail[0].frames, full[0].frames)
