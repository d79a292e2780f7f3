"""Rollouts: step a policy through a batched env, one iteration at a time.

:class:`Rollout` owns the env, the running episode statistics and (when a
:class:`~simfarm.envs.capture.CaptureSchedule` asks for traces) an
:class:`~simfarm.envs.recorder.EpisodeRecorder`. Stepping never synchronises
with the device; at the end of an iteration :meth:`Rollout.end_iteration`
does, once, to read the finished episodes in completion order, update the
moving averages, and draw the recorded episodes that ended as
:class:`~simfarm.records.EpisodeTrace` objects.

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
from simfarm.envs.recorder import EpisodeRecorder, RecordedEpisode
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
#: Step-log rows the episode tracker writes per step, and the row of the finished flags.
TRACKER_FEATURES, FINISHED_FEATURE = 4, 2


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
        index: Completion rank within the run (0-based; ties by env id).
            The episode that its env starts next has id ``n_envs + index``.
        env_id: Env that played it.
        end: Position of its last step (0 is the batch right after the reset).
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
        #: ``bool (n_envs,)``: the envs whose episode ended on the latest step.
        self.done = torch.zeros(n_envs, dtype=torch.bool, device=device)
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
        self.done = terminated | truncated
        self.finished_last_step = self.done.to(keep.dtype)
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
        where = torch.nonzero((rows[:, FINISHED_FEATURE] > 0.5).reshape(-1)).squeeze(1)
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


class Rollout:
    """An env, a reset, and everything needed to turn steps into iteration records.

    Args:
        env: The batched env (reset here).
        steps_per_iteration: Most steps between two :meth:`end_iteration` calls.
        capture: Which episodes become traces (none by default).
        window: Episodes in the moving averages (100 as in CartPole's
            "solved" rule).
        metadata: Extra JSON-able entries for every trace's metadata.
        capture_detect: How the recorder finds the env of a scheduled episode:
            ``"auto"`` (``"host"`` on the CPU, ``"device"`` elsewhere),
            ``"host"`` or ``"device"``; see :mod:`simfarm.envs.recorder`.
            Every mode gives the same traces.
        iterations: The run's planned number of iterations, when known. With
            ``last_n_episodes`` the watched envs are then recorded only over
            the final stretch of the run that can hold those episodes (end
            the run with ``end_iteration(final=True)`` on iteration
            ``iterations - 1``); without it they are recorded throughout.

    Raises:
        ValueError: For a non-positive ``steps_per_iteration`` or ``window``,
            an unknown ``capture_detect``, or a capture schedule too dense
            to follow (see :class:`~simfarm.envs.recorder.EpisodeRecorder`).
    """

    def __init__(
        self,
        env: BatchedEnv,
        *,
        steps_per_iteration: int,
        capture: CaptureSchedule | None = None,
        window: int = 100,
        metadata: dict[str, Any] | None = None,
        capture_detect: str = "auto",
        iterations: int | None = None,
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
        self.log = StepLog(env.n_envs, TRACKER_FEATURES, self.steps_per_iteration, env.device, env.dtype)
        # Position 0: the batch right after the reset.
        self.log.write([torch.zeros(TRACKER_FEATURES, env.n_envs, dtype=env.dtype, device=env.device)], position=0)
        self.recorder: EpisodeRecorder | None = None
        if self.schedule.enabled:
            self.recorder = EpisodeRecorder(
                env,
                self.schedule,
                self.steps_per_iteration,
                self._finished_flags,
                detect=capture_detect,
                iterations=iterations,
            )

    @property
    def position(self) -> int:
        """Position of the latest step (0 right after the reset)."""
        return self.log.position

    def _finished_flags(self, first: int, last: int) -> torch.Tensor:
        """``(last - first + 1, n_envs)`` 0/1: which envs finished at positions ``first..last`` (the step log)."""
        return self.log.read(first, last, slice(FINISHED_FEATURE, FINISHED_FEATURE + 1))[:, 0]

    # -- stepping ---------------------------------------------------------------
    def step(self, actions: torch.Tensor) -> StepResult:
        """Step the env and account the step: one step-log row, no host synchronisation.

        With a capture schedule, the recorder also gathers the followed envs'
        rows (see :mod:`simfarm.envs.recorder`; its ``"host"`` detection,
        the CPU default, reads the step's finished count).

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
        self.log.write(self.tracker.update(reward, terminated, truncated, info["success"]))
        recorder = self.recorder
        if recorder is not None and self.steps_this_iteration >= recorder.idle_until:
            recorder.step(self.steps_this_iteration, actions, reward, self.tracker.done)
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
        """Close the iteration: episode statistics and the traces of recorded episodes that ended.

        Args:
            final: This is the run's last iteration: also deliver the
                ``last_n_episodes`` traces.

        Returns:
            The iteration's :class:`IterationSummary`.
        """
        steps = self.steps_this_iteration
        first = self.position - steps + 1
        finished = self.tracker.finish(self.log.read(first, self.position), first)
        self.steps_this_iteration = 0
        traces: list[EpisodeTrace] = []
        if self.recorder is not None:
            recorded = self.recorder.end_iteration(finished, first, steps, self.iteration)
            if final:
                recorded += self.recorder.take_last_n()
            traces = sorted((self._trace(e) for e in recorded), key=lambda trace: trace.episode)
            if not self.recorder.active:
                self.recorder = None  # nothing left to capture: stop paying for it
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

    def _trace(self, episode: RecordedEpisode) -> EpisodeTrace:
        """Draw an episode's frames on the device and move everything to the CPU once."""
        limit = self.schedule.max_frames
        states = episode.states if limit is None else episode.states[:limit]
        frames = self.env.draw_episode(episode.env_id, states)
        return EpisodeTrace(
            episode=episode.episode,
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

        The capture part holds only the rows of the recorded episodes still
        running and the ``last_n`` candidates: a few hundred rows per
        followed env, whatever ``n_envs``.

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
            "capture": None,
        }
        if self.recorder is not None:
            tensors["capture"], values["capture"] = self.recorder.state_dict()
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
        self.log.position = int(values["position"])
        if values["capture"] is None:
            self.recorder = None
        elif self.recorder is None:
            raise ValueError("checkpoint holds recorded episodes but this rollout captures nothing")
        else:
            self.recorder.load_state_dict(
                tensors["capture"], values["capture"], self.tracker.total, self.position + 1, self.iteration
            )


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
