"""What a workload step hands to the farm: a :class:`Record`, and the
:class:`EpisodeTrace` a rollout may attach to it.

Both are plain data (numpy arrays, JSON-able dicts) so that the farm can
ship them through Ray's object store and the store can write them without
pickling: traces become ``.npz`` files read back with ``allow_pickle=False``,
snapshots become JSON.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["EpisodeTrace", "Record", "Scalar", "check_metrics", "json_safe"]

#: What a metrics cell may hold: one row of a tidy table.
Scalar = bool | int | float | str | None


@dataclass(slots=True)
class EpisodeTrace:
    """One captured episode of one environment.

    Attributes:
        episode: Id of the episode within its job (0-based), counted over
            every env of the batch in the order episodes start (gymnasium's
            convention): the first reset gives env ``i`` episode ``i``; after
            that, envs that reset on the same step are numbered in env-id order.
        env_id: Which env of the batch played it.
        frames: ``uint8`` array ``(T, H, W, 3)``; may have ``T == 0`` when
            nothing was rendered.
        actions: ``int64`` array ``(T_steps,)``.
        rewards: ``float32`` array ``(T_steps,)``.
        episode_reward: Sum of ``rewards``.
        step_count: Number of env steps in the episode.
        solved: Whether the episode met its task's success criterion.
        avg_reward: Moving average of episode rewards at the time the
            episode ended (what a training curve shows at that point).
        fps: Playback rate the frames were captured for.
        metadata: JSON-able extras (env name, iteration, ...).
    """

    episode: int
    env_id: int
    frames: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    episode_reward: float
    step_count: int
    solved: bool
    avg_reward: float = float("nan")
    fps: float = 30.0
    metadata: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """The scalar fields as a JSON-able dict (no arrays)."""
        return {
            "episode": int(self.episode),
            "env_id": int(self.env_id),
            "episode_reward": float(self.episode_reward),
            "avg_reward": float(self.avg_reward),
            "step_count": int(self.step_count),
            "solved": bool(self.solved),
            "frame_count": int(len(self.frames)),
            "fps": float(self.fps),
        }

    def to_npz_arrays(self) -> dict[str, np.ndarray]:
        """Arrays for ``np.savez``: no object arrays, so loading never unpickles.

        The scalar fields and ``metadata`` travel as one JSON string stored
        as a ``uint8`` byte array under the key ``"meta"``.
        """
        meta = self.summary()
        meta["metadata"] = self.metadata
        return {
            "frames": np.ascontiguousarray(self.frames, dtype=np.uint8),
            "actions": np.asarray(self.actions),
            "rewards": np.asarray(self.rewards),
            "meta": np.frombuffer(json.dumps(meta, default=_json_default).encode(), dtype=np.uint8),
        }

    @staticmethod
    def meta_from_npz_arrays(arrays: Any) -> dict[str, Any]:
        """The ``meta`` member of :meth:`to_npz_arrays` decoded: :meth:`summary` plus ``metadata``.

        Reads nothing else of an ``NpzFile`` (its frames stay on disk).

        Raises:
            KeyError: When there is no ``meta`` array.
        """
        return json.loads(bytes(np.asarray(arrays["meta"], dtype=np.uint8)).decode())

    @classmethod
    def from_npz_arrays(cls, arrays: Any) -> EpisodeTrace:
        """Inverse of :meth:`to_npz_arrays` (accepts an ``NpzFile`` or a dict).

        Raises:
            KeyError: When a required array is missing.
        """
        meta = cls.meta_from_npz_arrays(arrays)
        return cls(
            episode=int(meta["episode"]),
            env_id=int(meta["env_id"]),
            frames=np.asarray(arrays["frames"]),
            actions=np.asarray(arrays["actions"]),
            rewards=np.asarray(arrays["rewards"]),
            episode_reward=float(meta["episode_reward"]),
            step_count=int(meta["step_count"]),
            solved=bool(meta["solved"]),
            avg_reward=float(meta["avg_reward"]),
            fps=float(meta.get("fps", 30.0)),
            metadata=dict(meta.get("metadata", {})),
        )


@dataclass(slots=True)
class Record:
    """One committed step of one job: a row of a tidy table plus attachments.

    Attributes:
        step: Step index within the job, 0-based and consecutive.
        metrics: Flat dict of scalars; deterministic given (run seed, job,
            step) -- these are the columns compared across reruns.
        timings: Flat dict of wall-clock figures (seconds, steps/s); kept in
            the table too, but marked as timing columns because they differ
            between reruns.
        snapshot: Optional JSON-able structure (an experiment round: cells,
            tree, plan) written to ``snapshots/<job>/round-NNN.json``.
        traces: Captured episodes, written to ``traces/<job>/``.
        job_id: Filled in by the farm; workloads may leave it empty.
    """

    step: int
    metrics: dict[str, Scalar] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    snapshot: dict[str, Any] | None = None
    traces: list[EpisodeTrace] = field(default_factory=list)
    job_id: str = ""


def check_metrics(metrics: dict[str, Any], *, where: str) -> dict[str, Scalar]:
    """Validate a metrics dict and normalise numpy scalars to Python ones.

    Args:
        metrics: Mapping of column name to value.
        where: Names the origin in error messages (e.g. ``"job rw-0001 step 3"``).

    Returns:
        A new dict whose values are ``bool | int | float | str | None``.

    Raises:
        TypeError: When a key is not a non-empty string or a value is not a scalar.
    """
    out: dict[str, Scalar] = {}
    for key, value in metrics.items():
        if not isinstance(key, str) or not key:
            raise TypeError(f"{where}: metric names must be non-empty strings, got {key!r}")
        if isinstance(value, np.generic):
            value = value.item()
        if value is not None and not isinstance(value, bool | int | float | str):
            raise TypeError(
                f"{where}: metric {key!r} must be a bool, int, float, str or None, "
                f"got {type(value).__name__}; put structured data in Record.snapshot"
            )
        out[key] = value
    return out


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def json_safe(value: Any) -> Any:
    """Replace non-finite floats with ``None`` recursively (strict JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value
