"""Policies for batched envs: random, hand-written heuristics, and an MLP.

A policy maps a batch of observations to a batch of integer actions on the
same device::

    actions = policy.act(obs, generator)

``generator`` is a :class:`torch.Generator` on the env's device; policies
draw every random number from it (never from torch's global RNG), so a
rollout is fixed by its seeds. Policies keep no per-step state.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from simfarm.envs.base import BatchedEnv

__all__ = [
    "CartPolePD",
    "MLPPolicy",
    "Policy",
    "RandomPolicy",
    "RayCastHeuristic",
    "heuristic_policy",
]


@runtime_checkable
class Policy(Protocol):
    """Anything with ``act(obs, generator) -> actions``."""

    def act(self, obs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """``(n,)`` int64 actions for ``(n, ...)`` observations."""
        ...


class RandomPolicy:
    """Uniformly random actions.

    Args:
        n_actions: Number of discrete actions.
    """

    def __init__(self, n_actions: int) -> None:
        self.n_actions = int(n_actions)

    def act(self, obs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """``(n,)`` actions drawn uniformly from ``generator``."""
        return torch.randint(0, self.n_actions, (obs.shape[0],), generator=generator, device=obs.device)

    def entropy(self) -> float:
        """Entropy of the action distribution (nats): ``log(n_actions)``."""
        return math.log(self.n_actions)


class CartPolePD:
    """Push towards where the pole is falling: a PD controller on the angle.

    The pole's angle and angular velocity drive the push; small cart
    position and velocity terms keep the cart from drifting off the track
    within the 500 steps.

    Args:
        gains: Weights of (x, x_dot, theta, theta_dot); push right when the
            weighted sum is positive.
    """

    def __init__(self, gains: Sequence[float] = (0.1, 0.5, 10.0, 2.0)) -> None:
        self.gains = tuple(float(g) for g in gains)
        if len(self.gains) != 4:
            raise ValueError(f"gains must have 4 entries (x, x_dot, theta, theta_dot), got {gains!r}")
        self._weights: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}

    def act(self, obs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """1 (push right) where the weighted state is positive, else 0."""
        del generator  # deterministic
        key = (obs.device, obs.dtype)
        if key not in self._weights:  # one host-to-device copy, not one per step
            self._weights[key] = torch.tensor(self.gains, dtype=obs.dtype, device=obs.device)
        return (obs @ self._weights[key] > 0).to(torch.int64)

    def entropy(self) -> float:
        """0: the controller is deterministic."""
        return 0.0


class RayCastHeuristic:
    """Walk where the depth image is open; for point-goal, turn to the goal first.

    Explore: go forward while the centre of view is clear, otherwise turn
    towards the more open half; with probability ``wander`` take a random
    turn, which breaks loops. Point-goal: turn until the goal is within
    ``aim`` radians of straight ahead, then behave as above.

    Args:
        env: A :class:`~simfarm.envs.raycast.RayCast` (for the obs layout).
        clearance: Normalised depth below which the way ahead counts as blocked.
        wander: Probability of a random turn per step.
        aim: Bearing (radians) within which the goal counts as ahead.
    """

    def __init__(self, env: BatchedEnv, clearance: float = 0.08, wander: float = 0.1, aim: float = 0.35) -> None:
        slices = getattr(env, "obs_slices", None)
        if slices is None:
            raise TypeError(f"RayCastHeuristic needs a raycast env, got {type(env).__name__}")
        self.depth = slices["depth"]
        self.goal = slices.get("goal")
        self.res = self.depth.stop - self.depth.start
        self.clearance, self.wander, self.aim = float(clearance), float(wander), float(aim)
        self.forward, self.turn_left, self.turn_right = (
            env.action_names.index(name) for name in ("forward", "turn-left", "turn-right")
        )

    def act(self, obs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Actions from the depth image (and goal bearing), as described above."""
        depth = obs[:, self.depth]
        third = max(1, self.res // 3)
        centre = depth[:, third : self.res - third].amin(1) if self.res > 2 else depth.amin(1)
        left_open = depth[:, : self.res // 2].mean(1) >= depth[:, self.res - self.res // 2 :].mean(1)
        toward_space = torch.where(left_open, self.turn_left, self.turn_right)
        actions = torch.where(centre > self.clearance, self.forward, toward_space)
        if self.goal is not None:
            goal = obs[:, self.goal]
            bearing = torch.atan2(goal[:, 1], goal[:, 0])
            turn_to_goal = torch.where(bearing > 0, self.turn_left, self.turn_right)
            actions = torch.where(bearing.abs() > self.aim, turn_to_goal, actions)
        draws = torch.rand((obs.shape[0], 2), generator=generator, device=obs.device)
        random_turn = torch.where(draws[:, 1] < 0.5, self.turn_left, self.turn_right)
        return torch.where(draws[:, 0] < self.wander, random_turn, actions).to(torch.int64)

    def entropy(self) -> float:
        """NaN: the action distribution depends on the observation."""
        return float("nan")


def heuristic_policy(env: BatchedEnv) -> CartPolePD | RayCastHeuristic:
    """The hand-written policy for ``env``'s kind.

    Raises:
        ValueError: When no heuristic exists for the env.
    """
    if env.name == "cartpole":
        return CartPolePD()
    if env.name == "raycast":
        return RayCastHeuristic(env)
    raise ValueError(f"no heuristic policy for env {env.name!r}; use policy = \"random\" or \"mlp-train\"")


class MLPPolicy(nn.Module):
    """Actor-critic MLP: shared input, separate tanh towers for logits and value.

    Weights are initialised orthogonally from a given generator (not torch's
    global RNG), so two policies built with the same seed are identical.

    Args:
        obs_dim: Length of a flattened observation.
        n_actions: Number of discrete actions.
        hidden: Widths of the hidden layers of each tower.
        generator: Source of the initial weights (CPU generator).
    """

    def __init__(
        self, obs_dim: int, n_actions: int, hidden: Sequence[int] = (64, 64), *, generator: torch.Generator
    ) -> None:
        super().__init__()
        if not hidden or any(int(h) < 1 for h in hidden):
            raise ValueError(f"hidden must be a non-empty list of positive widths, got {list(hidden)!r}")
        self.obs_dim, self.n_actions, self.hidden = int(obs_dim), int(n_actions), tuple(int(h) for h in hidden)
        self.actor = self._tower(self.n_actions, 0.01, generator)
        self.critic = self._tower(1, 1.0, generator)

    def _tower(self, out_dim: int, out_gain: float, generator: torch.Generator) -> nn.Sequential:
        layers: list[nn.Module] = []
        width = self.obs_dim
        for h in self.hidden:
            layers += [self._linear(width, h, math.sqrt(2.0), generator), nn.Tanh()]
            width = h
        # A small last layer makes the first policy close to uniform.
        layers.append(self._linear(width, out_dim, out_gain, generator))
        return nn.Sequential(*layers)

    @staticmethod
    def _linear(n_in: int, n_out: int, gain: float, generator: torch.Generator) -> nn.Linear:
        layer = nn.Linear(n_in, n_out)
        with torch.no_grad():
            nn.init.orthogonal_(layer.weight, gain, generator=generator)
            layer.bias.zero_()
        return layer

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits (n, n_actions), value (n,))`` for observations ``(n, ...)``."""
        flat = obs.reshape(obs.shape[0], -1)
        return self.actor(flat), self.critic(flat).squeeze(-1)

    def sample(
        self, obs: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sample actions with the Gumbel-max trick from ``generator``.

        Returns:
            ``(actions, log_prob, value)``, each ``(n,)``.
        """
        logits, value = self(obs)
        log_probs = torch.log_softmax(logits, -1)
        uniform = torch.rand(log_probs.shape, generator=generator, device=obs.device, dtype=log_probs.dtype)
        gumbel = -torch.log(-torch.log(uniform.clamp_min(1e-20)))
        actions = torch.argmax(log_probs + gumbel, -1)
        return actions, log_probs.gather(1, actions.unsqueeze(1)).squeeze(1), value

    @torch.no_grad()
    def act(self, obs: torch.Tensor, generator: torch.Generator, greedy: bool = False) -> torch.Tensor:
        """Sampled (or, with ``greedy``, most likely) actions, ``(n,)`` int64."""
        if greedy:
            return torch.argmax(self(obs)[0], -1)
        return self.sample(obs, generator)[0]
