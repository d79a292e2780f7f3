"""Env names -> classes, and :func:`make`."""

from __future__ import annotations

import inspect

import torch

from simfarm.envs.base import BatchedEnv
from simfarm.envs.cartpole import CartPole
from simfarm.envs.raycast import RayCast
from simfarm.params import did_you_mean

__all__ = ["ENVIRONMENTS", "env_options", "make"]

#: Registered env classes by name.
ENVIRONMENTS: dict[str, type[BatchedEnv]] = {"cartpole": CartPole, "raycast": RayCast}

#: Constructor arguments every env takes (given to :func:`make` directly).
_COMMON = ("n_envs", "device", "seed", "dtype")


def env_options(name: str) -> tuple[str, ...]:
    """The env-specific keyword options of ``name`` (beyond n_envs/device/seed/dtype).

    Raises:
        ValueError: For an unknown env name.
    """
    cls = _lookup(name)
    params = inspect.signature(cls.__init__).parameters
    return tuple(p for p in params if p not in ("self", *_COMMON))


def make(
    name: str,
    n_envs: int,
    device: str | torch.device = "auto",
    seed: int = 0,
    dtype: torch.dtype | str = torch.float32,
    **kwargs: object,
) -> BatchedEnv:
    """Build a batched env by name.

    Args:
        name: ``"cartpole"`` or ``"raycast"``.
        n_envs: Batch size.
        device: ``"auto"`` picks CUDA when available, else the CPU.
        seed: Seeds everything random in the env.
        dtype: ``torch.float32`` or ``torch.float64`` (exact comparisons).
        **kwargs: Env options, e.g. ``task``, ``res``, ``n_walls`` for raycast
            or ``compile=True`` for either.

    Returns:
        The env (not yet reset).

    Raises:
        ValueError: For an unknown name or option, or a bad value.
    """
    cls = _lookup(name)
    allowed = env_options(name)
    for key in kwargs:
        if key not in allowed:
            raise ValueError(
                f"unknown option {key!r} for env {name!r}{did_you_mean(key, allowed).replace('allowed keys', 'options')}"
            )
    return cls(n_envs, device=device, seed=seed, dtype=dtype, **kwargs)  # type: ignore[arg-type]


def _lookup(name: str) -> type[BatchedEnv]:
    if name not in ENVIRONMENTS:
        hint = did_you_mean(str(name), ENVIRONMENTS).replace("allowed keys", "known envs")
        raise ValueError(f"unknown env {name!r}{hint}")
    return ENVIRONMENTS[name]
