"""Which episodes become traces: :class:`CaptureSchedule`.

Episode indices count finished episodes over the whole batch in completion
order (ties within one step go by env id). That order is only known once an
episode ends -- and, without synchronising every step, only at the end of an
iteration -- so capture works backwards (see :mod:`simfarm.envs.rollout`):

1. Every step, each env's compact
   :meth:`~simfarm.envs.base.BatchedEnv.capture_state` (4-5 numbers), the
   action and the reward go into the rollout's
   :class:`~simfarm.envs.steplog.StepLog` on the device, in the same single
   tensor copy as the episode statistics: no images, no synchronisation.
2. At the end of an iteration the finished episodes get their indices, the
   schedule picks some, and only for those the env draws the frames --
   batched over the episode's steps, on the device -- which then move to the
   CPU once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["CaptureSchedule"]


@dataclass(frozen=True)
class CaptureSchedule:
    """Which episodes produce :class:`~simfarm.records.EpisodeTrace` objects.

    An episode is captured when any rule selects it.

    Args:
        episode_indices: Explicit episode indices (0-based, completion order).
        every_n_episodes: Every n-th episode: 0, n, 2n, ...
        last_n_episodes: The last n episodes of the run (emitted with the
            final iteration, when the total is known).
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
    _index_set: frozenset[int] = field(init=False, repr=False, compare=False)

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
        object.__setattr__(self, "_index_set", frozenset(indices))

    @property
    def enabled(self) -> bool:
        """Whether any rule can select anything."""
        return bool(self.episode_indices) or self.every_n_episodes is not None or self.last_n_episodes > 0

    def selects(self, episode: int, total_episodes: int | None = None) -> bool:
        """Whether ``episode`` is captured.

        Args:
            episode: Episode index.
            total_episodes: Episodes in the whole run when known (needed by
                ``last_n_episodes``; ``None`` ignores that rule).
        """
        return bool(self.select(np.asarray([episode]), total_episodes)[0])

    def select(self, episodes: np.ndarray, total_episodes: int | None = None) -> np.ndarray:
        """Vectorised :meth:`selects`: a bool mask over ``episodes``."""
        episodes = np.asarray(episodes, dtype=np.int64)
        mask = np.isin(episodes, np.fromiter(self._index_set, dtype=np.int64, count=len(self._index_set)))
        if self.every_n_episodes is not None:
            mask |= episodes % int(self.every_n_episodes) == 0
        if self.last_n_episodes > 0 and total_episodes is not None:
            mask |= episodes >= total_episodes - int(self.last_n_episodes)
        return mask

    def may_select_from(self, first_episode: int) -> bool:
        """Whether some episode ``>= first_episode`` could still be selected."""
        if self.every_n_episodes is not None or self.last_n_episodes > 0:
            return True
        return any(i >= first_episode for i in self.episode_indices)

    def to_dict(self) -> dict[str, object]:
        """JSON-able form (the workload's ``capture`` table)."""
        return {
            "episode_indices": list(self.episode_indices),
            "every_n_episodes": self.every_n_episodes,
            "last_n_episodes": int(self.last_n_episodes),
            "max_frames": self.max_frames,
        }

