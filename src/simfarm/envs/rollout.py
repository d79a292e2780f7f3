"""Rollouts: step a policy through a batched env, one iteration at a time.

:class:`Rollout` owns the env, the running episode statistics and (when a
:class:`~simfarm.envs.capture.CaptureSchedule` asks for traces) the capture
log. Stepping never synchronises with the device; at the end of an
iteration :meth:`Rollout.end_iteration` does, once, to read the finished
episodes in completion order, update the moving averages and build the
selected :class:`~simfarm.records.EpisodeTrace` objects.

Random streams: the env draws from its own generator; whatever a policy or
trainer draws in iteration ``k`` comes from :func:`step_generator` seeded by
``(seed, k, stream)``, so a run is fixed by its seed and resumes exactly
from a checkpoint.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from simfarm.envs.base import BatchedEnv, StepResult
from simfarm.envs.capture import CaptureSchedule
from simfarm.envs.steplog import StepLog
from simfarm.records import EpisodeTrace
from simfarm.seeding import torch_seed

__all__ = [
    "ACTION_STREAM",
    "EpisodeTracker",
    "FinishedEpisodes",
    "IterationSummary",
    "Rollout",
    "SHUFFLE_STREAM",
    "evaluate",
    "step_generator",
]

#: Stream numbers of :func:`step_generator`.
ACTION_STREAM, SHUFFLE_STREAM, INIT_STREAM = 0, 1, 2
#: Step-log rows the episode tracker writes per step.
TRACKER_FEATURES = 4


def step_generator(seed: int, step: int, stream: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator on ``device`` seeded from ``(seed, step, stream)``.

    Args:
        seed: The job seed.
        step: Iteration index.
        stream: Which use (:data:`ACTION_STREAM`, :data:`SHUFFLE_STREAM`, ...),
            so different uses within one step never share numbers.
    """
    generator = torch.Generator(device=device)
    generator.manual_seed(torch_seed(torch_seed(seed, step), stream))
    return generator


@dataclass
class FinishedEpisodes:
    """Episodes that ended within one iteration, in completion order (host arrays).

    Attributes:
        index: Episode index within the run.
        env_id: Env that played it.
        end: Capture-log position of its last step.
        reward: Episode reward.
        length: Steps in the episode.
        success: The env's success flag for it.
        moving_average: Mean reward of the last ``window`` episodes up to and
            including this one.
    """

    index: np.ndarray
    env_id: np.ndarray
    end: np.ndarray
    reward: np.ndarray
    length: np.ndarray
    success: np.ndarray
    moving_average: np.ndarray

    def __len__(self) -> int:
        return len(self.index)


class EpisodeTracker:
    """Running episode return and length per env, and the moving averages.

    Each step :meth:`update` returns the block of rows the rollout writes to
    its :class:`~simfarm.envs.steplog.StepLog` (:data:`TRACKER_FEATURES`
    rows: return so far, length so far, finished, success);
    :meth:`finish` reads an iteration's rows back once.

    Args:
        n_envs: Batch size.
        window: Episodes in the moving averages.
        device, dtype: Where and how the running sums live.
    """

    def __init__(self, n_envs: int, window: int, device: torch.device, dtype: torch.dtype) -> None:
        self.n_envs, self.window = n_envs, window
        self.episode_return = torch.zeros(n_envs, dtype=dtype, device=device)
        self.episode_length = torch.zeros(n_envs, dtype=dtype, device=device)
        self.finished_last_step = torch.zeros(n_envs, dtype=dtype, device=device)
        self.total = 0
        self.recent_rewards: deque[float] = deque(maxlen=window)
        self.recent_success: deque[float] = deque(maxlen=window)

    def update(
        self, reward: torch.Tensor, terminated: torch.Tensor, truncated: torch.Tensor, success: torch.Tensor
    ) -> list[torch.Tensor]:
        """Account one step (no host synchronisation); return its ``(1, n)`` rows."""
        # A step after a finished one is the reset step: it starts from zero.
        keep = 1.0 - self.finished_last_step
        self.episode_return = torch.addcmul(reward, self.episode_return, keep)
        self.episode_length = (self.episode_length + 1.0).mul_(keep)
        self.finished_last_step = (terminated | truncated).to(keep.dtype)
        return [
            self.episode_return.unsqueeze(0),
            self.episode_length.unsqueeze(0),
            self.finished_last_step.unsqueeze(0),
            success.unsqueeze(0),
        ]

    def finish(self, rows: torch.Tensor, first_position: int) -> FinishedEpisodes:
        """Read an iteration's finished episodes (one synchronisation).

        Args:
            rows: ``(steps, TRACKER_FEATURES, n_envs)`` as written by the rollout.
            first_position: Step-log position of the iteration's first step.
        """
        # (step, env) order, flattened: completion order, ties by env id.
        where = torch.nonzero((rows[:, 2] > 0.5).reshape(-1)).squeeze(1)
        values = rows[where // self.n_envs, :, where % self.n_envs].double().cpu().numpy()
        flat = where.cpu().numpy()
        rewards = values[:, 0]
        history = np.concatenate([np.asarray(self.recent_rewards, dtype=np.float64), rewards])
        # Moving average at each new episode, from a running sum over history.
        sums = np.concatenate([[0.0], np.cumsum(history)])
        ends = np.arange(len(self.recent_rewards), len(history)) + 1
        starts = np.maximum(ends - self.window, 0)
        moving = (sums[ends] - sums[starts]) / np.maximum(ends - starts, 1)
        out = FinishedEpisodes(
            index=self.total + np.arange(len(flat), dtype=np.int64),
            env_id=flat % self.n_envs,
            end=first_position + flat // self.n_envs,
            reward=rewards,
            length=values[:, 1].round().astype(np.int64),
            success=values[:, 3] > 0.5,
            moving_average=moving,
        )
        self.total += len(flat)
        self.recent_rewards.extend(rewards.tolist())
        self.recent_success.extend(out.success.astype(float).tolist())
        return out

    def moving_average(self) -> float:
        """Mean reward of the recent window (NaN before any episode)."""
        return float(np.mean(self.recent_rewards)) if self.recent_rewards else math.nan

    def success_rate(self) -> float:
        """Fraction of successes in the recent window (NaN before any episode)."""
        return float(np.mean(self.recent_success)) if self.recent_success else math.nan

    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """(tensors, JSON-able values) for a checkpoint between iterations."""
        tensors = {
            "episode_return": self.episode_return.cpu(),
            "episode_length": self.episode_length.cpu(),
            "finished_last_step": self.finished_last_step.cpu(),
            "recent": torch.tensor([list(self.recent_rewards), list(self.recent_success)], dtype=torch.float64),
        }
        return tensors, {"total": self.total}

    def load_state_dict(self, tensors: dict[str, torch.Tensor], values: dict[str, Any]) -> None:
        """Inverse of :meth:`state_dict`."""
        for name in ("episode_return", "episode_length", "finished_last_step"):
            getattr(self, name).copy_(tensors[name])
        recent = tensors["recent"].tolist()
        self.recent_rewards = deque(recent[0], maxlen=self.window)
        self.recent_success = deque(recent[1], maxlen=self.window)
        self.total = int(values["total"])


@dataclass
class IterationSummary:
    """What one iteration produced (host values only).

    Attributes:
        episodes: Episodes finished in the iteration.
        episodes_total: Episodes finished since the start.
        reward_mean, reward_min, reward_max: Over this iteration's episodes
            (NaN when none finished).
        length_mean: Mean episode length (NaN when none finished).
        success_rate: Fraction of this iteration's episodes flagged success.
        moving_average: Mean reward of the last ``window`` episodes.
        window_success_rate: Success fraction over the same window.
        traces: Captured episodes, in episode order.
    """

    episodes: int
    episodes_total: int
    reward_mean: float
    reward_min: float
    reward_max: float
    length_mean: float
    success_rate: float
    moving_average: float
    window_success_rate: float
    traces: list[EpisodeTrace] = field(default_factory=list)


@dataclass
class _PendingEpisode:
    """A candidate for ``last_n_episodes``: raw data, drawn only if chosen."""

    index: int
    env_id: int
    states: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    reward: float
    success: bool
    moving_average: float
    iteration: int
    emitted: bool


class Rollout:
    """An env, a reset, and everything needed to turn steps into iteration records.

    Args:
        env: The batched env (reset here).
        steps_per_iteration: Most steps between two :meth:`end_iteration` calls.
        capture: Which episodes become traces (none by default).
        window: Episodes in the moving averages (100 as in CartPole's
            "solved" rule).
        metadata: Extra JSON-able entries for every trace's metadata.

    Raises:
        ValueError: For a non-positive ``steps_per_iteration`` or ``window``.
    """

    def __init__(
        self,
        env: BatchedEnv,
        *,
        steps_per_iteration: int,
        capture: CaptureSchedule | None = None,
        window: int = 100,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        if steps_per_iteration < 1:
            raise ValueError(f"steps_per_iteration must be a positive integer, got {steps_per_iteration!r}")
        if window < 1:
            raise ValueError(f"window must be a positive integer, got {window!r}")
        self.env = env
        self.steps_per_iteration = int(steps_per_iteration)
        self.schedule = capture or CaptureSchedule()
        self.metadata = dict(metadata or {})
        self.tracker = EpisodeTracker(env.n_envs, window, env.device, env.dtype)
        self.obs = env.reset()
        self.iteration = 0
        self.steps_this_iteration = 0
        self.pending: list[_PendingEpisode] = []
        self.capture_dim = env.capture_state().shape[1]
        self.capturing = self.schedule.enabled
        self.log = self._new_log()
        # Position 0: the batch right after reset (the first frame of every first episode).
        zeros = torch.zeros(TRACKER_FEATURES, env.n_envs, dtype=env.dtype, device=env.device)
        first = [zeros]
        if self.capturing:
            first += [env.capture_state().T, zeros[:2]]
        self.log.write(first, position=0)

    def _new_log(self) -> StepLog:
        """The step log: tracker rows, plus capture rows while capturing.

        Capturing needs any episode that ends within an iteration, so it keeps
        ``steps_per_iteration + max_episode_steps + 1`` steps; statistics alone
        need one iteration.
        """
        env = self.env
        features, capacity = TRACKER_FEATURES, self.steps_per_iteration
        if self.capturing:
            features += self.capture_dim + 2
            capacity += env.max_episode_steps + 1
        return StepLog(env.n_envs, features, capacity, env.device, env.dtype)

    @property
    def position(self) -> int:
        """Step-log position of the latest step (0 right after the reset)."""
        return self.log.position

    # -- stepping ---------------------------------------------------------------
    def step(self, actions: torch.Tensor) -> StepResult:
        """Step the env and account the step: one row of the step log, no host synchronisation.

        Args:
            actions: As for :meth:`BatchedEnv.step`.

        Returns:
            What the env's ``step`` returned.

        Raises:
            RuntimeError: When the iteration already has ``steps_per_iteration`` steps.
            ValueError: For malformed actions.
        """
        if self.steps_this_iteration >= self.steps_per_iteration:
            raise RuntimeError(
                f"iteration already has {self.steps_per_iteration} steps; call end_iteration() first"
            )
        actions = self.env.as_actions(actions)
        obs, reward, terminated, truncated, info = self.env.step(actions)
        columns = self.tracker.update(reward, terminated, truncated, info["success"])
        if self.capturing:
            columns += [self.env.capture_state().T, actions.unsqueeze(0), reward.unsqueeze(0)]
        self.log.write(columns)
        self.steps_this_iteration += 1
        self.obs = obs
        return obs, reward, terminated, truncated, info

    def run(self, act: Callable[[torch.Tensor, torch.Generator], torch.Tensor], steps: int | None = None) -> None:
        """Step ``steps`` times (default: a whole iteration) with ``act(obs, generator)``.

        The generator is this iteration's action stream (see :func:`step_generator`).
        """
        generator = step_generator(self.env.seed, self.iteration, ACTION_STREAM, self.env.device)
        for _ in range(self.steps_per_iteration if steps is None else steps):
            self.step(act(self.obs, generator))

    # -- iteration boundary -------------------------------------------------------
    def end_iteration(self, *, final: bool = False) -> IterationSummary:
        """Close the iteration: episode statistics and the selected traces.

        Args:
            final: This is the run's last iteration, so ``last_n_episodes``
                can be resolved.

        Returns:
            The iteration's :class:`IterationSummary`.
        """
        first = self.position - self.steps_this_iteration + 1
        rows = self.log.read(first, self.position, slice(0, TRACKER_FEATURES))
        finished = self.tracker.finish(rows, first)
        self.steps_this_iteration = 0
        traces = self._traces(finished, final)
        if self.capturing and not self.schedule.may_select_from(self.tracker.total):
            # Nothing left to capture: stop paying for the capture rows.
            self._stop_capturing()
        self.iteration += 1
        rewards = finished.reward
        return IterationSummary(
            episodes=len(finished),
            episodes_total=self.tracker.total,
            reward_mean=float(rewards.mean()) if len(rewards) else math.nan,
            reward_min=float(rewards.min()) if len(rewards) else math.nan,
            reward_max=float(rewards.max()) if len(rewards) else math.nan,
            length_mean=float(finished.length.mean()) if len(rewards) else math.nan,
            success_rate=float(finished.success.mean()) if len(rewards) else math.nan,
            moving_average=self.tracker.moving_average(),
            window_success_rate=self.tracker.success_rate(),
            traces=traces,
        )

    def _stop_capturing(self) -> None:
        position = self.position
        self.capturing = False
        self.log = self._new_log()
        self.log.position = position

    def _episode(self, env_id: int, end: int, length: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One env's episode from the step log: states ``(length + 1, d)``, actions, rewards."""
        block = self.log.read_env(env_id, end - length, end)
        first, d = TRACKER_FEATURES, self.capture_dim
        return block[:, first : first + d], block[1:, first + d].round().to(torch.int64), block[1:, first + d + 1]

    def _traces(self, finished: FinishedEpisodes, final: bool) -> list[EpisodeTrace]:
        if not self.capturing or not len(finished):
            return self._final_last_n() if final else []
        chosen = self.schedule.select(finished.index)
        keep_last = self.schedule.last_n_episodes
        candidates = np.flatnonzero(chosen)
        if keep_last:
            tail = np.arange(max(0, len(finished) - keep_last), len(finished))
            candidates = np.union1d(candidates, tail)
        traces = []
        for row in candidates:
            states, actions, rewards = self._episode(
                int(finished.env_id[row]), int(finished.end[row]), int(finished.length[row])
            )
            episode = _PendingEpisode(
                index=int(finished.index[row]),
                env_id=int(finished.env_id[row]),
                states=states,
                actions=actions,
                rewards=rewards,
                reward=float(finished.reward[row]),
                success=bool(finished.success[row]),
                moving_average=float(finished.moving_average[row]),
                iteration=self.iteration,
                emitted=bool(chosen[row]),
            )
            if episode.emitted:
                traces.append(self._trace(episode))
            if keep_last:
                self.pending.append(episode)
        if keep_last:
            self.pending = self.pending[-keep_last:]
        if final:
            traces += self._final_last_n()
            traces.sort(key=lambda trace: trace.episode)
        return traces

    def _final_last_n(self) -> list[EpisodeTrace]:
        out = [self._trace(p) for p in self.pending if not p.emitted]
        for p in self.pending:
            p.emitted = True
        return out

    def _trace(self, episode: _PendingEpisode) -> EpisodeTrace:
        """Draw an episode's frames on the device and move everything to the CPU once."""
        limit = self.schedule.max_frames
        states = episode.states if limit is None else episode.states[:limit]
        frames = self.env.draw_episode(episode.env_id, states.to(self.env.device))
        return EpisodeTrace(
            episode=episode.index,
            env_id=episode.env_id,
            frames=frames.cpu().numpy(),
            actions=episode.actions.cpu().numpy().astype(np.int64),
            rewards=episode.rewards.cpu().numpy().astype(np.float32),
            episode_reward=episode.reward,
            step_count=int(episode.actions.shape[0]),
            solved=episode.success,
            avg_reward=episode.moving_average,
            fps=float(self.env.render_fps),
            metadata={**self.env.describe(), **self.metadata, "iteration": episode.iteration},
        )

    # -- checkpoint ---------------------------------------------------------------
    def state_dict(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """(tensors, JSON-able values) to resume after the last :meth:`end_iteration`.

        Raises:
            RuntimeError: In the middle of an iteration.
        """
        if self.steps_this_iteration:
            raise RuntimeError("Rollout.state_dict() must be taken between iterations")
        tracker_tensors, tracker_values = self.tracker.state_dict()
        tensors: dict[str, Any] = {"env": self.env.state_dict(), "tracker": tracker_tensors}
        values: dict[str, Any] = {
            "tracker": tracker_values,
            "position": self.position,
            "iteration": self.iteration,
            "capturing": self.capturing,
            "pending": [
                {k: getattr(p, k) for k in ("index", "env_id", "reward", "success", "moving_average", "iteration", "emitted")}
                for p in self.pending
            ],
        }
        if self.capturing:
            # Only the rows that an unfinished episode may still need.
            keep = int(self.tracker.episode_length.max().item()) + 1
            tensors["log"] = self.log.state_dict(keep, first_feature=TRACKER_FEATURES)
        tensors["pending"] = [
            {"states": p.states.cpu(), "actions": p.actions.cpu(), "rewards": p.rewards.cpu()} for p in self.pending
        ]
        return tensors, values

    def load_state_dict(self, tensors: dict[str, Any], values: dict[str, Any]) -> None:
        """Inverse of :meth:`state_dict` on a rollout built with the same arguments.

        Raises:
            ValueError: When the checkpoint does not match this rollout.
        """
        self.env.load_state_dict(tensors["env"])
        self.obs = self.env.observe()
        self.tracker.load_state_dict(tensors["tracker"], values["tracker"])
        self.iteration = int(values["iteration"])
        self.steps_this_iteration = 0
        if values["capturing"]:
            if not self.capturing:
                raise ValueError("checkpoint holds capture rows but this rollout captures nothing")
            self.log.load_state_dict(tensors["log"])
        else:
            if self.capturing:
                self._stop_capturing()
            self.log.position = int(values["position"])
        device = self.env.device
        self.pending = [
            _PendingEpisode(
                states=raw["states"].to(device),
                actions=raw["actions"].to(device),
                rewards=raw["rewards"].to(device),
                **meta,
            )
            for meta, raw in zip(values["pending"], tensors["pending"], strict=True)
        ]


def evaluate(
    env: BatchedEnv,
    act: Callable[[torch.Tensor, torch.Generator], torch.Tensor],
    episodes: int,
    *,
    seed: int = 0,
    max_steps: int = 100_000,
) -> np.ndarray:
    """Rewards of the first ``episodes`` episodes ``act`` plays from a fresh reset.

    Args:
        env: The env (reset with ``seed``; its state is overwritten).
        act: ``act(obs, generator) -> actions``.
        episodes: How many finished episodes to collect (completion order).
        seed: Seeds the reset and the action stream.
        max_steps: Give up after this many batch steps.

    Returns:
        ``float64 (episodes,)`` episode rewards.

    Raises:
        RuntimeError: When ``max_steps`` pass before enough episodes finish.
    """
    obs = env.reset(seed=seed)
    generator = step_generator(seed, 0, ACTION_STREAM, env.device)
    running = torch.zeros(env.n_envs, dtype=torch.float64, device=env.device)
    pending = torch.zeros(env.n_envs, dtype=torch.bool, device=env.device)
    done_count = torch.zeros((), dtype=torch.int64, device=env.device)
    finished: list[torch.Tensor] = []
    for step in range(max_steps):
        obs, reward, terminated, truncated, _ = env.step(act(obs, generator))
        running = torch.where(pending, torch.zeros_like(running), running) + reward.double()
        pending = terminated | truncated
        done_count += pending.sum()
        finished.append(torch.where(pending, running, torch.full_like(running, math.nan)))
        # Reading the count synchronises, so look only every 64 steps.
        if step % 64 == 63 and int(done_count) >= episodes:
            break
    flat = torch.stack(finished).reshape(-1).cpu().numpy()
    values = flat[np.isfinite(flat)]
    if len(values) < episodes:
        raise RuntimeError(f"only {len(values)} of {episodes} episodes finished within {max_steps} steps")
    return values[:episodes]
