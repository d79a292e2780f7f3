"""Which episodes become traces: :class:`CaptureSchedule`.

Episodes are numbered in *start* order, gymnasium's convention: an episode
gets its id when its env resets. The first reset gives env ``i`` episode
``i``; after that, envs that reset on the same step are numbered in env-id
order. Under ``NEXT_STEP`` autoreset an env resets on the step after its
episode ends, so the episode that follows the ``j``-th episode to *finish*
(completion order, ties by env id) is episode ``n_envs + j``.

Because an id is known when the episode starts, ``episode_indices`` and
``every_n_episodes`` are decided then, and only the chosen envs are
recorded while they play (see :mod:`simfarm.envs.recorder`).
``last_n_episodes`` cannot be decided at the start -- nobody knows which
episodes will be last -- so it follows a fixed few envs instead; see
:class:`CaptureSchedule`.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np

__all__ = ["CaptureSchedule"]


@dataclass(frozen=True)
class CaptureSchedule:
    """Which episodes produce :class:`~simfarm.records.EpisodeTrace` objects.

    An episode is captured when any rule selects it. Episode ids count
    episodes in the order they start (see the module docstring).

    Args:
        episode_indices: Explicit episode ids (0-based, start order).
        every_n_episodes: Every n-th episode: ids 0, n, 2n, ...
        last_n_episodes: The last n episodes to *finish* among envs
            ``0 .. min(n, n_envs) - 1`` (the watched envs), delivered with
            the final iteration. Which episodes will be last is unknown until
            the run ends, so this rule follows a fixed few envs rather than
            ids: only the watched envs are recorded (over the whole run, or,
            when the rollout knows the run's planned length, over the final
            stretch that can hold those episodes), and the cost does not grow
            with the batch. On a batch of at least n envs these are usually
            the last episode of each of envs 0..n-1; each is complete (an
            episode still running when the run stops is never a trace), and
            fewer than n arrive when the watched envs finish fewer than n
            episodes.
        max_frames: Keep at most this many frames per trace (the first ones;
            actions and rewards stay complete).

    Raises:
        ValueError: For negative indices, ``every_n_episodes < 1``,
            ``last_n_episodes < 0`` or ``max_frames < 1``.
    """

    episode_indices: tuple[int, ...] = ()
    every_n_episodes: int | None = None
    last_n_episodes: int = 0
    max_frames: int | None = None

    def __post_init__(self) -> None:
        indices = tuple(int(i) for i in self.episode_indices)
        if any(i < 0 for i in indices):
            raise ValueError(f"episode_indices must be non-negative integers, got {list(indices)}")
        if self.every_n_episodes is not None and int(self.every_n_episodes) < 1:
            raise ValueError(f"every_n_episodes must be a positive integer or None, got {self.every_n_episodes!r}")
        if int(self.last_n_episodes) < 0:
            raise ValueError(f"last_n_episodes must be a non-negative integer, got {self.last_n_episodes!r}")
        if self.max_frames is not None and int(self.max_frames) < 1:
            raise ValueError(f"max_frames must be a positive integer or None, got {self.max_frames!r}")
        object.__setattr__(self, "episode_indices", tuple(sorted(set(indices))))

    @property
    def enabled(self) -> bool:
        """Whether any rule can select anything."""
        return bool(self.episode_indices) or self.every_n_episodes is not None or self.last_n_episodes > 0

    def selects(self, episode: int) -> bool:
        """Whether ``episode_indices`` or ``every_n_episodes`` pick episode id ``episode``.

        ``last_n_episodes`` is not an id rule and is not consulted.
        """
        return bool(self.select(np.asarray([episode]))[0])

    def select(self, episodes: np.ndarray) -> np.ndarray:
        """Vectorised :meth:`selects`: a bool mask over the ids ``episodes``."""
        episodes = np.asarray(episodes, dtype=np.int64)
        mask = np.isin(episodes, np.asarray(self.episode_indices, dtype=np.int64))
        if self.every_n_episodes is not None:
            mask |= episodes % int(self.every_n_episodes) == 0
        return mask

    def selected_in(self, first: int, stop: int) -> np.ndarray:
        """The ids in ``[first, stop)`` that :meth:`selects` picks, ascending (``int64``)."""
        first, stop = max(0, int(first)), int(stop)
        if stop <= first:
            return np.zeros(0, dtype=np.int64)
        lo = bisect.bisect_left(self.episode_indices, first)
        hi = bisect.bisect_left(self.episode_indices, stop)
        chosen = np.asarray(self.episode_indices[lo:hi], dtype=np.int64)
        if self.every_n_episodes is not None:
            n = int(self.every_n_episodes)
            multiples = np.arange(-(-first // n) * n, stop, n, dtype=np.int64)
            chosen = np.union1d(chosen, multiples)
        return chosen

    def most_selected_in_window(self, width: int) -> int:
        """The most ids :meth:`selects` can pick among any ``width`` consecutive ids."""
        width = int(width)
        if width <= 0:
            return 0
        explicit = np.asarray(self.episode_indices, dtype=np.int64)
        # Windows that start at an explicit id hold the most explicit ids.
        in_window = np.searchsorted(explicit, explicit + width) - np.arange(len(explicit))
        most = int(in_window.max()) if len(explicit) else 0
        if self.every_n_episodes is not None:
            most += -(-width // int(self.every_n_episodes))
        return most

    def may_select_from(self, first_episode: int) -> bool:
        """Whether ``episode_indices`` or ``every_n_episodes`` pick some id ``>= first_episode``."""
        if self.every_n_episodes is not None:
            return True
        return bool(self.episode_indices) and self.episode_indices[-1] >= first_episode

    def to_dict(self) -> dict[str, object]:
        """JSON-able form (the workload's ``capture`` table)."""
        return {
            "episode_indices": list(self.episode_indices),
            "every_n_episodes": self.every_n_episodes,
            "last_n_episodes": int(self.last_n_episodes),
            "max_frames": self.max_frames,
        }
