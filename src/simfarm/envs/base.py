"""The batched-environment contract shared by every env in :mod:`simfarm.envs`.

A :class:`BatchedEnv` holds ``n_envs`` independent copies of one environment
as tensors on one device and advances all of them with one call. The
conventions follow gymnasium's vector environments:

- ``reset(seed=None) -> obs`` and ``step(actions) -> (obs, reward,
  terminated, truncated, info)``, every value a tensor with ``n_envs`` rows.
- Autoreset in gymnasium's ``NEXT_STEP`` mode: the step that returns
  ``terminated`` or ``truncated`` for an env leaves that env in its final
  state; the env's *next* step resets it instead of moving it, ignores its
  action and returns reward 0 with both flags false.
- No host-device synchronisation inside ``step``: no ``.item()``, no
  boolean-mask indexing, no data-dependent Python branches. Envs that reset
  are selected with ``torch.where``.

Randomness needed by autoreset (initial states, spawn points) comes from a
*reset pool*: one draw for every env, renewed every ``reset_pool_steps``
steps, from the env's own :class:`torch.Generator`. Drawing for every env on
every step would be the obvious branch-free choice, but it dominates the
cost of a cheap env like CartPole. An env needs at least two steps between
two resets (the reset step and one real step), so a pool that lives
:data:`RESET_POOL_STEPS` = 2 steps is never reused by the same env; an env
that can prove longer minimum episodes may let its pool live longer.

Subclasses implement the physics; this module holds the plumbing they share
(device and dtype handling, seeding, the pool, action checking, checkpoint
state) and :func:`resolve_device`.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from simfarm.seeding import torch_seed

__all__ = [
    "RESET_POOL_STEPS",
    "BatchedEnv",
    "BoxSpace",
    "DiscreteSpace",
    "StepResult",
    "resolve_device",
    "resolve_dtype",
]

#: Steps one reset pool serves; see the module docstring for why 2 is safe.
RESET_POOL_STEPS = 2

#: What ``step`` returns: obs, reward, terminated, truncated, info.
StepResult = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Turn ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or a device into a device.

    Args:
        device: ``"auto"`` picks CUDA when ``torch.cuda.is_available()``,
            else the CPU.

    Returns:
        The :class:`torch.device`.

    Raises:
        ValueError: For a name torch does not know, or CUDA asked for on a
            machine without it (use ``"auto"`` to fall back to the CPU).
    """
    if isinstance(device, torch.device):
        resolved = device
    elif device == "auto":
        resolved = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            resolved = torch.device(device)
        except (RuntimeError, TypeError):
            raise ValueError(
                f'device must be "auto", "cpu", "cuda" or "cuda:N", got {device!r}'
            ) from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device {str(device)!r} asked for CUDA but torch.cuda.is_available() is False; "
            'use device="auto" to fall back to the CPU'
        )
    return resolved


def resolve_dtype(dtype: torch.dtype | str) -> torch.dtype:
    """``torch.float32`` or ``torch.float64`` (also given as ``"float32"``/``"float64"``).

    Raises:
        ValueError: For any other dtype.
    """
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, dtype)
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype!r}")
    return dtype  # type: ignore[return-value]


@dataclass(frozen=True)
class DiscreteSpace:
    """Metadata of one env's action space: actions are integers in ``[0, n)``."""

    n: int
    names: tuple[str, ...] = ()


@dataclass(frozen=True)
class BoxSpace:
    """Metadata of one env's observation: a tensor of ``shape`` within [low, high]."""

    shape: tuple[int, ...]
    low: float
    high: float
    dtype: str


class BatchedEnv(abc.ABC):
    """``n_envs`` copies of one environment, stepped together on one device.

    Subclasses set the class attributes and implement :meth:`_reset_all`,
    :meth:`_draw_reset_pool`, :meth:`_step`, :meth:`observe`,
    :meth:`capture_state`, :meth:`draw_episode`, :meth:`render` and
    :meth:`_state_tensors`.

    Args:
        n_envs: Number of envs in the batch (>= 1).
        device: ``"auto"`` | ``"cpu"`` | ``"cuda"`` | a :class:`torch.device`.
        seed: Seeds the env's :class:`torch.Generator` (through
            :func:`simfarm.seeding.torch_seed`) and any layout generation.
        dtype: ``torch.float32`` (default, fast) or ``torch.float64`` (for
            exact comparisons).
        max_episode_steps: Episodes are truncated after this many steps.

    Raises:
        ValueError: For a bad ``n_envs``, ``device``, ``dtype`` or
            ``max_episode_steps``.

    Attributes:
        name: Registry name (``make(name, ...)``).
        action_names: One label per discrete action.
        render_fps: Playback rate for captured episodes.
        reward_threshold: Moving-average episode reward that counts as
            solved, or ``None`` when success is judged per episode.
        generator: The env's random stream (reset noise, spawn points).
    """

    name: ClassVar[str] = ""
    action_names: ClassVar[tuple[str, ...]] = ()
    render_fps: ClassVar[float] = 30.0
    reward_threshold: ClassVar[float | None] = None

    def __init__(
        self,
        n_envs: int,
        *,
        device: str | torch.device = "auto",
        seed: int = 0,
        dtype: torch.dtype | str = torch.float32,
        max_episode_steps: int,
    ) -> None:
        if isinstance(n_envs, bool) or not isinstance(n_envs, int | np.integer) or n_envs < 1:
            raise ValueError(f"n_envs must be a positive integer, got {n_envs!r}")
        if (
            isinstance(max_episode_steps, bool)
            or not isinstance(max_episode_steps, int | np.integer)
            or max_episode_steps < 1
        ):
            raise ValueError(f"max_episode_steps must be a positive integer, got {max_episode_steps!r}")
        self.n_envs = int(n_envs)
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype)
        self.seed = int(seed)
        self.max_episode_steps = int(max_episode_steps)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(torch_seed(self.seed, 0))
        # Step counts live in the float dtype: inductor fuses float kernels
        # well and handles bool/int outputs slowly on the CPU. The done flags
        # are 0/1 floats too unless a subclass stores them as bool.
        self._elapsed = torch.zeros(self.n_envs, dtype=self.dtype, device=self.device)
        self._done = torch.zeros(self.n_envs, dtype=self.dtype, device=self.device)
        self._pool: dict[str, torch.Tensor] = {}
        self._pool_uses = 0
        #: Steps one reset pool serves; at most one plus the shortest possible episode.
        self.reset_pool_steps = RESET_POOL_STEPS
        self._awaiting_reset = True

    # -- metadata ------------------------------------------------------------
    @property
    def n_actions(self) -> int:
        """Number of discrete actions."""
        return len(self.action_names)

    @property
    @abc.abstractmethod
    def observation_shape(self) -> tuple[int, ...]:
        """Shape of one env's observation (the batch adds a leading ``n_envs``)."""

    @property
    def observation_bounds(self) -> tuple[float, float]:
        """(low, high) over every observation entry; ``(-inf, inf)`` by default."""
        return (-float("inf"), float("inf"))

    @property
    def single_observation_space(self) -> BoxSpace:
        """Observation metadata of one env (gymnasium's ``single_observation_space``)."""
        low, high = self.observation_bounds
        return BoxSpace(self.observation_shape, low, high, str(self.dtype).removeprefix("torch."))

    @property
    def single_action_space(self) -> DiscreteSpace:
        """Action metadata of one env (gymnasium's ``single_action_space``)."""
        return DiscreteSpace(self.n_actions, tuple(self.action_names))

    @property
    @abc.abstractmethod
    def render_shape(self) -> tuple[int, int]:
        """(height, width) of a rendered frame."""

    # -- episode state ----------------------------------------------------------
    @property
    def episode_steps(self) -> torch.Tensor:
        """``int64`` (n_envs,): steps taken in each env's current episode."""
        return self._elapsed.to(torch.int64)

    @property
    def needs_reset(self) -> torch.Tensor:
        """``bool`` (n_envs,): which envs finished on the last step (reset on the next)."""
        return self._done != 0

    def set_episode_progress(self, steps: torch.Tensor, needs_reset: torch.Tensor) -> None:
        """Set each env's step counter and pending-reset flag (tests and replays).

        Args:
            steps: ``(n_envs,)`` integers, steps already taken in the episode.
            needs_reset: ``(n_envs,)`` bool, envs whose next step resets them.

        Raises:
            ValueError: When either has the wrong number of entries.
        """
        if torch.as_tensor(steps).numel() != self.n_envs or torch.as_tensor(needs_reset).numel() != self.n_envs:
            raise ValueError(f"steps and needs_reset must have {self.n_envs} entries each")
        self._elapsed = torch.as_tensor(steps).to(self.device, self.dtype).reshape(self.n_envs).clone()
        self._done = torch.as_tensor(needs_reset).to(self.device, self._done.dtype).reshape(self.n_envs).clone()

    # -- the API ---------------------------------------------------------------
    def reset(self, seed: int | None = None) -> torch.Tensor:
        """Start a fresh episode in every env.

        Args:
            seed: When given, reseeds the env's generator first (same rule
                as the constructor's ``seed``); layouts do not change.

        Returns:
            The observations, ``(n_envs, *observation_shape)``.
        """
        if seed is not None:
            self.generator.manual_seed(torch_seed(int(seed), 0))
        self._reset_all()
        self._elapsed.zero_()
        self._done.zero_()
        self._pool = self._draw_reset_pool()
        self._pool_uses = 0
        self._awaiting_reset = False
        return self.observe()

    def step(self, actions: torch.Tensor | np.ndarray | Sequence[int]) -> StepResult:
        """Advance every env by one step.

        Args:
            actions: ``(n_envs,)`` integers in ``[0, n_actions)``; numpy
                arrays and lists are converted. Values are not range-checked
                (that would synchronise with the device).

        Returns:
            ``(obs, reward, terminated, truncated, info)``: obs
            ``(n_envs, *observation_shape)``, reward in the env's dtype,
            ``terminated``/``truncated`` bool, and ``info`` holding
            ``"success"`` (bool: the episode that ended this step met its
            task) plus env-specific tensors. All on :attr:`device`.

        Raises:
            RuntimeError: When called before :meth:`reset`.
            ValueError: When ``actions`` has the wrong shape or dtype.
        """
        if self._awaiting_reset:
            raise RuntimeError(f"{type(self).__name__}.step called before reset(); call env.reset() first")
        action_tensor = self.as_actions(actions)
        if self._pool_uses >= self.reset_pool_steps:
            self._pool = self._draw_reset_pool()
            self._pool_uses = 0
        self._pool_uses += 1
        return self._step(action_tensor, self._pool)

    def as_actions(self, actions: torch.Tensor | np.ndarray | Sequence[int]) -> torch.Tensor:
        """``actions`` as an integer tensor of shape ``(n_envs,)`` on the env's device.

        Raises:
            ValueError: For a wrong shape or a non-integer dtype.
        """
        if not isinstance(actions, torch.Tensor):
            actions = torch.as_tensor(np.asarray(actions))
        if actions.shape != (self.n_envs,):
            raise ValueError(
                f"actions must have shape ({self.n_envs},) (one per env), got {tuple(actions.shape)}"
            )
        if actions.dtype.is_floating_point or actions.dtype.is_complex:
            raise ValueError(f"actions must be integers in [0, {self.n_actions}), got dtype {actions.dtype}")
        if actions.device != self.device:
            actions = actions.to(self.device, non_blocking=True)
        return actions

    def render(self, env_ids: torch.Tensor | Sequence[int] | int) -> torch.Tensor:
        """Draw the current state of some envs, batched on the device.

        Args:
            env_ids: Env indices (an int, a sequence or a 1-D tensor).

        Returns:
            ``uint8`` tensor ``(k, H, W, 3)`` on :attr:`device`.

        Raises:
            ValueError: When an index is out of range.
        """
        return self._render(self.env_index(env_ids))

    def env_index(self, env_ids: torch.Tensor | Sequence[int] | int) -> torch.Tensor:
        """Env indices as a 1-D ``int64`` tensor on the device (checked on the host).

        Raises:
            ValueError: When an index is outside ``[0, n_envs)`` or the input
                is not 0-D/1-D.
        """
        if isinstance(env_ids, torch.Tensor):
            ids = env_ids.reshape(-1).to(torch.int64)
        else:
            ids = torch.as_tensor(env_ids, dtype=torch.int64).reshape(-1)
        ids_cpu = ids.cpu()
        if ids_cpu.numel() and (int(ids_cpu.min()) < 0 or int(ids_cpu.max()) >= self.n_envs):
            raise ValueError(f"env_ids must lie in [0, {self.n_envs}), got {ids_cpu.tolist()[:8]}")
        return ids.to(self.device)

    # -- checkpoint state ---------------------------------------------------------
    def state_dict(self) -> dict[str, torch.Tensor]:
        """Every tensor that defines the batch, for a bit-identical resume.

        Returns:
            Name -> tensor (CPU copies), including the generator state and the
            reset pool; loadable with ``torch.load(weights_only=True)``.
        """
        out = {f"env.{k}": v.detach().cpu().clone() for k, v in self._state_tensors().items()}
        out["base.elapsed"] = self._elapsed.cpu().clone()
        out["base.done"] = self._done.cpu().clone()
        out["base.generator"] = self.generator.get_state().cpu()
        out["base.pool_uses"] = torch.tensor(self._pool_uses)
        out["base.awaiting_reset"] = torch.tensor(self._awaiting_reset)
        for k, v in self._pool.items():
            out[f"pool.{k}"] = v.cpu().clone()
        return out

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what :meth:`state_dict` returned (same env class, size, params).

        Raises:
            ValueError: When a tensor is missing or its shape does not match.
        """
        own = self._state_tensors()
        for key, current in own.items():
            value = _take(state, f"env.{key}", current.shape)
            current.copy_(value.to(current.device, current.dtype))
        self._elapsed.copy_(_take(state, "base.elapsed", self._elapsed.shape).to(self.device))
        self._done.copy_(_take(state, "base.done", self._done.shape).to(self.device))
        self.generator.set_state(_take(state, "base.generator", None).cpu())
        self._pool_uses = int(_take(state, "base.pool_uses", ()))
        self._awaiting_reset = bool(_take(state, "base.awaiting_reset", ()))
        self._pool = {
            key.removeprefix("pool."): value.to(self.device)
            for key, value in state.items()
            if key.startswith("pool.")
        }
        self._after_load()

    # -- for subclasses -------------------------------------------------------
    @abc.abstractmethod
    def _reset_all(self) -> None:
        """Draw a fresh initial state for every env (from :attr:`generator`)."""

    @abc.abstractmethod
    def _draw_reset_pool(self) -> dict[str, torch.Tensor]:
        """One reset draw per env (initial states, spawn picks...) for autoreset."""

    @abc.abstractmethod
    def _step(self, actions: torch.Tensor, pool: dict[str, torch.Tensor]) -> StepResult:
        """Physics + autoreset for all envs, with no host synchronisation."""

    @abc.abstractmethod
    def observe(self) -> torch.Tensor:
        """The current observations ``(n_envs, *observation_shape)``."""

    @abc.abstractmethod
    def capture_state(self) -> torch.Tensor:
        """``(n_envs, d)`` float: the little per-step state :meth:`draw_episode` needs.

        While it follows scheduled episodes, the rollout's recorder gathers a
        few envs' columns of ``capture_state().T`` every step, so a transposed
        view of a feature-major ``(d, n_envs)`` tensor is the cheapest form.
        """

    @abc.abstractmethod
    def draw_episode(self, env_id: int, states: torch.Tensor) -> torch.Tensor:
        """Frames of one env from a sequence of its :meth:`capture_state` rows.

        Args:
            env_id: Which env the rows came from (for its static scenery).
            states: ``(T, d)`` rows, oldest first.

        Returns:
            ``uint8`` ``(T, H, W, 3)`` on :attr:`device`, drawn in one batch.
        """

    @abc.abstractmethod
    def _render(self, env_ids: torch.Tensor) -> torch.Tensor:
        """Frames of the current state of ``env_ids`` (checked, on the device)."""

    @abc.abstractmethod
    def _state_tensors(self) -> dict[str, torch.Tensor]:
        """The env-specific tensors to checkpoint (returned by reference)."""

    def _after_load(self) -> None:
        """Hook: recompute caches after :meth:`load_state_dict` (default: nothing)."""

    def is_solved(self, moving_average: float, success_rate: float) -> bool:
        """Whether training counts as solved.

        Args:
            moving_average: Mean episode reward over the recent window.
            success_rate: Fraction of recent episodes flagged ``success``.

        Returns:
            ``moving_average >= reward_threshold`` when the env defines a
            threshold, else ``success_rate >= 0.9``.
        """
        if self.reward_threshold is not None:
            return bool(moving_average >= self.reward_threshold)
        return bool(success_rate >= 0.9)

    def describe(self) -> dict[str, Any]:
        """JSON-able description (name, sizes, device) for trace metadata."""
        return {
            "env": self.name,
            "n_envs": self.n_envs,
            "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),
            "max_episode_steps": self.max_episode_steps,
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n_envs={self.n_envs}, device={str(self.device)!r})"


def _take(state: dict[str, torch.Tensor], key: str, shape: Any) -> torch.Tensor:
    if key not in state:
        raise ValueError(f"env checkpoint is missing {key!r}; was it written by another env or version?")
    value = state[key]
    if shape is not None and tuple(value.shape) != tuple(shape):
        raise ValueError(
            f"env checkpoint entry {key!r} has shape {tuple(value.shape)}, this env needs {tuple(shape)}"
        )
    return value
