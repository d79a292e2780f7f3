"""Recording the scheduled episodes while they play: :class:`EpisodeRecorder`.

The recorder follows a few *slots*, each bound to one env of the batch:

- a *target* slot waits for one scheduled episode id to start, follows the
  env that plays it, and is freed when that episode ends;
- a *watch* slot (``last_n_episodes``) follows one fixed env, from the run's
  start or -- when the rollout knows the run's planned length -- over the
  final stretch that can hold the last n episodes.

On the steps where some slot's episode is playing, the env's
:meth:`~simfarm.envs.base.BatchedEnv.capture_state`, the action and the
reward of all slots at once are gathered into this iteration's buffer: three
``index_select`` calls over ``K`` rows, no host synchronisation. On other
steps the recorder does nothing. Nothing is drawn and nothing leaves the
device until an episode has ended.

**Finding a scheduled episode.** Ids count episodes in start order, and under
``NEXT_STEP`` autoreset an env starts a new episode on the step after its
previous one ended, so episode ``X >= n_envs`` starts right after the episode
that finishes ``(X - n_envs)``-th (completion order, ties by env id). A
waiting slot therefore looks for the env whose finish has that completion
rank, and follows that env from the next step on.

Most steps need no looking at all: an env finishes at most once every
:attr:`~simfarm.envs.base.BatchedEnv.reset_pool_steps` steps, so from an exact
count of finished episodes the host knows for how many steps the next
waiting rank is out of reach (``reset_pool_steps * (distance // n_envs)``),
and skips them. When the rank comes within reach, the finishes of the steps
skipped are read back once from the rollout's step log, and then:

- ``"host"`` detection (the default on the CPU, where a tensor *is* host
  memory and reading it drains no device queue) counts each step's
  finishes, lists the finished envs only on the step that reaches a waiting
  rank, and skips ahead again after it. It also sees when the followed
  episodes end, and stops gathering then;
- ``"device"`` detection (the default elsewhere) never synchronises: a
  cumulative sum of the step's finished flags, one ``searchsorted`` for the
  ranks of all waiting slots and a few element-wise updates -- six small
  operations per step from the first step where a waiting rank may be
  reached to the end of the iteration (the device cannot tell the host it
  is done). Gathering for the waiting slots starts at that step too.

Which ids can start during an iteration is bounded the same way: at most
``n_envs * ceil(steps_per_iteration / reset_pool_steps)`` episodes end per
iteration. At each iteration boundary the recorder arms a slot for every
scheduled id within that reach.

**At the end of an iteration** the rollout has synchronised once to list
the finished episodes (env, completion rank, last position, length). From
them alone the recorder knows where every slot's episode started and ended:
it cuts the finished ones out of its buffers, carries each unfinished one
over as just its own rows, and arms the next ids. Its checkpoint is those
carried rows plus the ``last_n`` candidates -- a few rows per slot,
independent of ``n_envs``.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from simfarm.envs.base import BatchedEnv
from simfarm.envs.capture import CaptureSchedule

if TYPE_CHECKING:  # the rollout imports this module; only the type is needed here
    from simfarm.envs.rollout import FinishedEpisodes

__all__ = ["DETECTION_MODES", "MAX_WAITING_SLOTS", "EpisodeRecorder", "RecordedEpisode"]

#: Values of ``detect``: ``"auto"`` is ``"host"`` on the CPU and ``"device"`` elsewhere.
DETECTION_MODES = ("auto", "host", "device")
#: Most scheduled ids that may wait for their start at once (each holds a slot).
MAX_WAITING_SLOTS = 4096
#: Rank query of a slot that waits for nothing; never reached by any run.
_NEVER = 1 << 62
_EPISODE_META = ("episode", "env_id", "completion", "reward", "success", "moving_average", "iteration", "emitted")


@dataclass
class RecordedEpisode:
    """One finished episode's raw capture rows (on the env's device), not drawn yet.

    Attributes:
        episode: Episode id (start order).
        env_id: Env that played it.
        completion: Its rank in completion order within the run.
        states: ``(T + 1, d)`` capture states, from the reset to the last step.
        actions: ``(T,)`` int64 actions.
        rewards: ``(T,)`` rewards.
        reward: Episode reward.
        success: The env's success flag for it.
        moving_average: Moving average of episode rewards when it ended.
        iteration: Iteration in which it ended.
        emitted: Already delivered as a trace (``last_n`` bookkeeping).
    """

    episode: int
    env_id: int
    completion: int
    states: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    reward: float
    success: bool
    moving_average: float
    iteration: int
    emitted: bool = False


@dataclass
class _Slot:
    """One followed env: a scheduled episode (target) or a fixed env (watch).

    ``env`` and ``start`` are -1 while a target waits for its episode to
    start. The row tensors hold the episode from ``start`` up to the last
    closed iteration; the action and reward of the first row are
    placeholders (the reset step ignores its action and pays nothing).
    """

    episode: int
    env: int
    start: int
    watch: bool
    states: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor


@dataclass
class _Buffers:
    """This iteration's gathered rows: states ``(steps, d, K)``, actions and rewards ``(steps, K)``."""

    states: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    views: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None]

    def row(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Step ``index``'s three rows as ``out=`` views, made on first use and kept."""
        views = self.views[index]
        if views is None:
            views = self.views[index] = (self.states[index], self.actions[index], self.rewards[index])
        return views


class EpisodeRecorder:
    """Records the episodes a :class:`CaptureSchedule` picks, as they play.

    Used by :class:`~simfarm.envs.rollout.Rollout`: build it right after the
    env's reset, call :meth:`step` after every env step from
    :attr:`idle_until` on, and :meth:`end_iteration` at every iteration
    boundary.

    Args:
        env: The batched env, just reset (position 0 is recorded here).
        schedule: What to capture (must be :attr:`~CaptureSchedule.enabled`).
        steps_per_iteration: Most steps between two :meth:`end_iteration` calls.
        finished_flags: ``finished_flags(first, last)`` returns the
            ``(last - first + 1, n_envs)`` 0/1 flags of the envs whose
            episode ended at each position ``first..last`` of the current
            iteration (the rollout's step log); read once per skip.
        detect: How a waiting slot finds its env: ``"auto"``, ``"host"`` or
            ``"device"`` (see the module docstring). All give the same traces.
        iterations: The run's planned length in iterations, when known: the
            watched envs (``last_n_episodes``) are then followed only over
            the final stretch that can hold the last n episodes, instead of
            the whole run (see :attr:`watch_from`).

    Raises:
        ValueError: For an unknown ``detect``, or a schedule so dense that
            more than :data:`MAX_WAITING_SLOTS` ids could start within one
            iteration.

    Attributes:
        slots: The followed envs (targets waiting or playing, watched envs).
        pending: The ``last_n`` candidates so far, in completion order.
        cursor: Scheduled ids below it have been armed.
        watch_from: First iteration in which the watched envs are followed.
        idle_until: Step of the current iteration before which :meth:`step`
            has nothing to do.
    """

    def __init__(
        self,
        env: BatchedEnv,
        schedule: CaptureSchedule,
        steps_per_iteration: int,
        finished_flags: Callable[[int, int], torch.Tensor],
        *,
        detect: str = "auto",
        iterations: int | None = None,
    ) -> None:
        if detect not in DETECTION_MODES:
            raise ValueError(f"detect must be one of {', '.join(map(repr, DETECTION_MODES))}, got {detect!r}")
        self.env, self.schedule, self.finished_flags = env, schedule, finished_flags
        self.n, self.steps = env.n_envs, int(steps_per_iteration)
        self.gap = int(env.reset_pool_steps)  # an env finishes at most once per `gap` steps
        self.on_host = detect == "host" or (detect == "auto" and env.device.type == "cpu")
        #: Most episodes that can end within one iteration (see the module docstring).
        self.reach = self.n * math.ceil(self.steps / self.gap)
        waiting = schedule.most_selected_in_window(self.reach)
        if waiting > MAX_WAITING_SLOTS:
            raise ValueError(
                f"the capture schedule could start up to {waiting} scheduled episodes within one iteration "
                f"({self.n} envs x {self.steps} steps), more than the {MAX_WAITING_SLOTS} the recorder follows "
                "at once; raise every_n_episodes, list fewer episode_indices, or use fewer steps_per_iteration"
            )
        self.pending: list[RecordedEpisode] = []
        self._buffers: _Buffers | None = None
        self._ranks: torch.Tensor | None = None  # device detection's scratch (cumulative finish counts)
        d = env.capture_state().shape[1]
        self._empty = (
            torch.zeros(0, d, dtype=env.dtype, device=env.device),
            torch.zeros(0, dtype=torch.int64, device=env.device),
            torch.zeros(0, dtype=env.dtype, device=env.device),
        )
        self.watched = min(schedule.last_n_episodes, self.n)
        self.watch_from = self._watch_from(iterations)
        # Episodes 0 .. n_envs - 1 start at the reset, on envs 0 .. n_envs - 1.
        initial = [int(i) for i in schedule.selected_in(0, self.n)]
        self.slots = [self._slot(e, e, 0, False) for e in initial]
        self.cursor = self.n
        self.plan(completed=0, first=1, iteration=0)
        self._record_reset_rows()

    def _watch_from(self, iterations: int | None) -> int:
        """First iteration in which the watched envs must be followed.

        An episode lasts at most ``max_episode_steps`` steps plus its reset
        step, so in any ``max_episode_steps + 1`` consecutive steps every env
        finishes at least once. The last n episodes to finish on the watched
        envs therefore all start within the run's last ``(m + 1) *
        (max_episode_steps + 1)`` steps, with ``m = ceil(n / watched envs)``.
        """
        if not self.watched or iterations is None:
            return 0
        m = math.ceil(self.schedule.last_n_episodes / self.watched)
        window = (m + 1) * (self.env.max_episode_steps + 1)
        return max(0, (int(iterations) * self.steps - window) // self.steps)

    def _slot(self, episode: int, env: int, start: int, watch: bool) -> _Slot:
        return _Slot(episode, env, start, watch, *self._empty)

    def _record_reset_rows(self) -> None:
        """Row 0 of every slot that starts at the reset (position 0)."""
        if not self.slots:
            return
        envs = torch.tensor([max(s.env, 0) for s in self.slots], dtype=torch.int64, device=self.env.device)
        states = self.env.capture_state().index_select(0, envs)
        for k, slot in enumerate(self.slots):
            if slot.start != 0:  # a target waiting for its start
                continue
            slot.states = states[k : k + 1].clone()
            slot.actions = torch.zeros(1, dtype=torch.int64, device=self.env.device)
            slot.rewards = torch.zeros(1, dtype=self.env.dtype, device=self.env.device)

    @property
    def active(self) -> bool:
        """Whether anything may still be captured (otherwise the rollout drops the recorder)."""
        return bool(self.slots) or self.watched > 0 or self.schedule.may_select_from(self.cursor)

    # -- the iteration plan ---------------------------------------------------------
    def plan(self, completed: int, first: int, iteration: int) -> None:
        """Arm the ids that can start next iteration and set up its buffers.

        Args:
            completed: Episodes finished in the run so far.
            first: Position of the next iteration's first step.
            iteration: The next iteration's index.
        """
        if iteration >= self.watch_from and self.watched and not any(s.watch for s in self.slots):
            # Start following the watched envs. Before the run's first step their
            # episodes start now; later, the episode in progress began unseen
            # (start -1) and is skipped when it ends.
            start = 0 if first == 1 else -1
            self.slots[:0] = [self._slot(e if start == 0 else -1, e, start, True) for e in range(self.watched)]
        stop = self.n + int(completed) + self.reach  # ids whose predecessor can finish next iteration
        for episode in self.schedule.selected_in(self.cursor, stop):
            self.slots.append(self._slot(int(episode), -1, -1, False))
        self.cursor = max(self.cursor, stop)
        self._first = int(first)
        # Exact finished count before step `_counted` of the iteration (the host's running tally).
        self._completed_at_start = self._completed = int(completed)
        self._counted = 0
        device, k = self.env.device, len(self.slots)
        self._slot_env = torch.tensor([max(s.env, 0) for s in self.slots], dtype=torch.int64, device=device)
        # (completion rank of the finish right before it, slot) for every slot still waiting.
        waiting = sorted((s.episode - self.n, i) for i, s in enumerate(self.slots) if s.env < 0)
        self._waiting = deque(waiting)
        self._detecting = bool(waiting)
        self._check_at = self._first_reachable(0) if waiting else self.steps
        # Slots that know their env gather from the first step; waiting ones from when they may start.
        self._recording = len(waiting) < k
        # Host mode stops gathering once the followed episodes have ended (unless an env is watched).
        self._watching = any(s.watch for s in self.slots)
        self._live = [s.env for s in self.slots if s.env >= 0 and not s.watch]
        self._device_live = False  # device detection runs from _check_at to the iteration's end
        self._set_idle_until(0)
        if not self.on_host and waiting:
            ranks = [_NEVER if s.env >= 0 else s.episode - self.n - self._completed + 1 for s in self.slots]
            self._query = torch.tensor(ranks, dtype=torch.int64, device=device)
            self._hit = torch.zeros(k, dtype=torch.int64, device=device)
            if self._ranks is None:
                self._ranks = torch.zeros(self.n, dtype=torch.int64, device=device)
        buffers = self._buffers
        if k and (buffers is None or buffers.actions.shape[1] != k):
            d = self._empty[0].shape[1]
            buffers = _Buffers(
                torch.empty(self.steps, d, k, dtype=self.env.dtype, device=device),
                torch.empty(self.steps, k, dtype=torch.int64, device=device),
                torch.empty(self.steps, k, dtype=self.env.dtype, device=device),
                [None] * self.steps,
            )
        self._buffers = buffers if k else None

    # -- every step -------------------------------------------------------------------
    def _first_reachable(self, index: int) -> int:
        """First step ``>= index`` at which the nearest waiting rank may be reached.

        ``_completed`` counts the finishes before step ``index``; each env
        finishes at most once per ``gap`` steps, so ``gap * (distance //
        n_envs)`` steps cannot bring it ``distance`` finishes further.
        """
        return index + self.gap * ((self._waiting[0][0] - self._completed) // self.n)

    def _set_idle_until(self, index: int) -> None:
        """Set :attr:`idle_until`: the first step from ``index`` on at which :meth:`step` has work."""
        if self._recording:
            self.idle_until = index
        else:
            self.idle_until = self._check_at if self._detecting else self.steps

    def step(self, index: int, actions: torch.Tensor, reward: torch.Tensor, finished: torch.Tensor) -> None:
        """Record step ``index`` of the iteration (after the env step); no host sync in device mode.

        Calling it for steps before :attr:`idle_until` is allowed but does
        nothing; the rollout skips those calls.

        Args:
            index: Step within the iteration (0-based).
            actions: ``(n_envs,)`` integer actions just taken.
            reward: ``(n_envs,)`` rewards just returned.
            finished: ``bool (n_envs,)``: the envs whose episode ended on this step.
        """
        detect = self._detecting and index >= self._check_at
        if detect and not self.on_host and not self._device_live:
            self._start_device_detection(index)
        if self._recording:
            states, taken, paid = self._buffers.row(index)  # type: ignore[union-attr]
            # Feature-major (d, n_envs) is how envs store their state: a contiguous gather.
            torch.index_select(self.env.capture_state().T, 1, self._slot_env, out=states)
            torch.index_select(actions.long(), 0, self._slot_env, out=taken)
            torch.index_select(reward, 0, self._slot_env, out=paid)
        if not self.on_host:
            if detect:
                self._detect_on_device(finished)
        elif detect or (self._recording and not self._watching):
            flags = finished.numpy() if finished.device.type == "cpu" else finished.cpu().numpy()
            if self._recording and not self._watching:
                self._drop_ended(flags)
            if detect:
                self._detect_on_host(index, flags)
        self._set_idle_until(index + 1)

    def _finished_before(self, index: int) -> torch.Tensor:
        """Finishes in steps ``_counted .. index - 1`` (read back from the step log), a 0-d int64 tensor."""
        flags = self.finished_flags(self._first + self._counted, self._first + index - 1)
        # Exact and cheap: each step's count (at most n_envs <= 2**22) is exact in
        # float32; the few per-step counts add up in float64.
        return flags.sum(1).sum(dtype=torch.float64).long()

    def _drop_ended(self, flags: np.ndarray) -> None:
        """Host mode: forget the followed episodes that ended this step; stop gathering after the last."""
        # A few envs: scalar reads beat a numpy gather.
        if any(flags[e] for e in self._live):
            self._live = [e for e in self._live if not flags[e]]
            self._recording = bool(self._live)

    def _detect_on_host(self, index: int, flags: np.ndarray) -> None:
        if index > self._counted:  # steps skipped as out of reach
            self._completed += int(self._finished_before(index))
        # numpy counts a bool array faster than a torch reduction does.
        count = int(np.count_nonzero(flags))
        waiting = self._waiting
        if count and waiting[0][0] < self._completed + count:
            envs = np.flatnonzero(flags)
            while waiting and waiting[0][0] < self._completed + count:
                rank, k = waiting.popleft()
                self._live.append(int(envs[rank - self._completed]))
                self._slot_env[k] = self._live[-1]
            self._recording = True
            self._detecting = bool(waiting)
        self._completed += count
        self._counted = index + 1
        if waiting:
            self._check_at = self._first_reachable(index + 1)

    def _start_device_detection(self, index: int) -> None:
        """The first step at which a waiting slot may start: account the finishes skipped so far."""
        if index > 0:
            self._query.sub_(self._finished_before(index))
        self._device_live = True
        self._recording = True  # the waiting slots' rows matter from now on

    def _detect_on_device(self, finished: torch.Tensor) -> None:
        # _query holds, per waiting slot, the 1-based rank among this step's
        # finishers that it waits for; searchsorted finds that finisher's env
        # (or n_envs when fewer finished). Found slots latch the env and stop.
        torch.cumsum(finished, 0, dtype=torch.int64, out=self._ranks)
        torch.searchsorted(self._ranks, self._query, out=self._hit)
        found = self._hit < self.n
        torch.where(found, self._hit, self._slot_env, out=self._slot_env)
        self._query.sub_(self._ranks[-1]).masked_fill_(found, _NEVER)

    # -- iteration boundary -------------------------------------------------------------
    def end_iteration(
        self, finished: FinishedEpisodes, first: int, steps: int, iteration: int
    ) -> list[RecordedEpisode]:
        """Cut out the slots' finished episodes, carry the rest, arm the next ids.

        Args:
            finished: The iteration's finished episodes, in completion order.
            first: Position of the iteration's first step.
            steps: Steps the iteration took.
            iteration: The iteration's index (stored with the episodes).

        Returns:
            The scheduled (target) episodes that ended, by episode id. Watched
            episodes go to :attr:`pending` (the ``last_n`` candidates).

        Raises:
            RuntimeError: When a cut episode's length disagrees with the
                episode statistics (a bookkeeping bug, never expected).
        """
        envs, ends = finished.env_id, finished.end
        before = self._completed_at_start
        ended: list[RecordedEpisode] = []
        watched: list[RecordedEpisode] = []
        kept: list[_Slot] = []
        for k, slot in enumerate(self.slots):
            if slot.env < 0:
                row = slot.episode - self.n - before  # the finish right before it, if it happened
                if row >= len(finished):
                    kept.append(slot)
                    continue
                slot.env, slot.start = int(envs[row]), int(ends[row]) + 1
            later = np.flatnonzero((envs == slot.env) & (ends >= slot.start))
            if not slot.watch and len(later):
                ended.append(self._cut(slot, k, finished, int(later[0]), first, iteration))
                continue
            for row in later if slot.watch else ():
                if slot.start >= 0:  # not the episode that was running, unseen, when watching began
                    watched.append(self._cut(slot, k, finished, int(row), first, iteration))
                slot.episode, slot.start = self.n + int(finished.index[row]), int(ends[row]) + 1
                slot.states, slot.actions, slot.rewards = self._empty
            if slot.start >= 0:
                slot.states, slot.actions, slot.rewards = self._rows_since(slot, k, first, steps)
            kept.append(slot)
        self.slots = kept
        if watched:
            keep = self.schedule.last_n_episodes
            self.pending = sorted(self.pending + watched, key=lambda e: e.completion)[-keep:]
        self.plan(before + len(finished), first + steps, iteration + 1)
        return sorted(ended, key=lambda e: e.episode)

    def _rows_since(self, slot: _Slot, k: int, first: int, stop: int) -> tuple[torch.Tensor, ...]:
        """The slot's carried rows plus its buffer rows from its start up to buffer row ``stop``."""
        lo = max(slot.start - first, 0)
        if self._buffers is None or lo >= stop:
            return slot.states, slot.actions, slot.rewards
        b = self._buffers
        return (
            torch.cat((slot.states, b.states[lo:stop, :, k])),
            torch.cat((slot.actions, b.actions[lo:stop, k])),
            torch.cat((slot.rewards, b.rewards[lo:stop, k])),
        )

    def _cut(
        self, slot: _Slot, k: int, finished: FinishedEpisodes, row: int, first: int, iteration: int
    ) -> RecordedEpisode:
        end = int(finished.end[row])
        states, actions, rewards = self._rows_since(slot, k, first, end - first + 1)
        if states.shape[0] != int(finished.length[row]) + 1:
            raise RuntimeError(
                f"episode {slot.episode} on env {slot.env}: recorded {states.shape[0]} rows, "
                f"expected {int(finished.length[row]) + 1}"
            )
        return RecordedEpisode(
            episode=slot.episode,
            env_id=slot.env,
            completion=int(finished.index[row]),
            states=states,
            actions=actions[1:],
            rewards=rewards[1:],
            reward=float(finished.reward[row]),
            success=bool(finished.success[row]),
            moving_average=float(finished.moving_average[row]),
            iteration=iteration,
        )

    def take_last_n(self) -> list[RecordedEpisode]:
        """The ``last_n`` episodes not delivered yet (those a target rule also chose already were).

        Marks every candidate delivered, so a second call returns nothing new.
        """
        out = [e for e in self.pending if not e.emitted and not self.schedule.selects(e.episode)]
        for episode in self.pending:
            episode.emitted = True
        return out

    # -- checkpoint ---------------------------------------------------------------------
    def state_dict(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """(CPU tensors, JSON-able values) between iterations: the slots' rows and the ``last_n`` candidates."""
        values = {
            "cursor": self.cursor,
            "slots": [{"episode": s.episode, "env": s.env, "start": s.start, "watch": s.watch} for s in self.slots],
            "pending": [{k: getattr(e, k) for k in _EPISODE_META} for e in self.pending],
        }
        tensors = {
            "slots": [_rows_to_cpu(s.states, s.actions, s.rewards) for s in self.slots],
            "pending": [_rows_to_cpu(e.states, e.actions, e.rewards) for e in self.pending],
        }
        return tensors, values

    def load_state_dict(
        self, tensors: dict[str, Any], values: dict[str, Any], completed: int, first: int, iteration: int
    ) -> None:
        """Inverse of :meth:`state_dict`.

        Args:
            tensors, values: What :meth:`state_dict` returned.
            completed: The run's finished-episode count.
            first: Position of the next iteration's first step.
            iteration: The next iteration's index.
        """
        device = self.env.device
        self.cursor = int(values["cursor"])
        self.slots = [
            _Slot(**meta, **_rows_to(raw, device)) for meta, raw in zip(values["slots"], tensors["slots"], strict=True)
        ]
        self.pending = [
            RecordedEpisode(**meta, **_rows_to(raw, device))
            for meta, raw in zip(values["pending"], tensors["pending"], strict=True)
        ]
        self.plan(completed, first, iteration)


def _rows_to_cpu(states: torch.Tensor, actions: torch.Tensor, rewards: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"states": states.cpu(), "actions": actions.cpu(), "rewards": rewards.cpu()}


def _rows_to(raw: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {name: raw[name].to(device) for name in ("states", "actions", "rewards")}
