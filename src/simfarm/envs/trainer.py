"""A batched PPO trainer for :class:`~simfarm.envs.policies.MLPPolicy`.

One iteration collects ``steps_per_iteration`` steps from every env of the
batch with the current policy, computes advantages with GAE and runs a few
epochs of clipped PPO updates over the collected transitions.

Gymnasium's ``NEXT_STEP`` autoreset shapes the bookkeeping: the step after
an episode ends is a *reset step* whose action is ignored, so it is left out
of the loss; a truncated episode is bootstrapped from the value of its
final observation, which NEXT_STEP keeps as the next step's input; and
advantages never flow across an episode boundary.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch

from simfarm.envs.policies import MLPPolicy
from simfarm.envs.rollout import (
    ACTION_STREAM,
    INIT_STREAM,
    SHUFFLE_STREAM,
    IterationSummary,
    Rollout,
    step_generator,
)

__all__ = ["PPOConfig", "PPOTrainer", "UpdateStats"]


@dataclass(frozen=True)
class PPOConfig:
    """PPO hyper-parameters; the defaults solve CartPole-v1 with 64+ envs.

    Attributes:
        lr: Adam learning rate.
        gamma: Discount factor.
        gae_lambda: GAE's lambda.
        clip: PPO's ratio clip.
        epochs: Passes over each iteration's data.
        minibatches: Minibatches per pass.
        entropy_coef: Weight of the entropy bonus.
        value_coef: Weight of the value loss.
        max_grad_norm: Gradient-norm clip.
        hidden: Hidden widths of the actor and critic MLPs.
    """

    lr: float = 2.5e-3
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip: float = 0.2
    epochs: int = 4
    minibatches: int = 4
    entropy_coef: float = 0.0
    value_coef: float = 0.5
    max_grad_norm: float = 0.5
    hidden: tuple[int, ...] = (64, 64)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        out = asdict(self)
        out["hidden"] = list(self.hidden)
        return out


@dataclass
class UpdateStats:
    """Means over one iteration's minibatch updates."""

    policy_loss: float
    value_loss: float
    entropy: float
    approx_kl: float
    clip_fraction: float


class PPOTrainer:
    """Trains an :class:`MLPPolicy` on a :class:`Rollout`'s env.

    Args:
        rollout: Supplies the env, stepping and episode statistics.
        config: Hyper-parameters.
        seed: Seeds the initial weights and every per-iteration stream.

    Attributes:
        model: The policy (on the env's device and dtype).
        optimizer: Its Adam optimizer.
    """

    def __init__(self, rollout: Rollout, config: PPOConfig | None = None, *, seed: int) -> None:
        self.rollout, self.config, self.seed = rollout, config or PPOConfig(), int(seed)
        env = rollout.env
        obs_dim = math.prod(env.observation_shape)
        init = step_generator(self.seed, 0, INIT_STREAM)
        self.model = MLPPolicy(obs_dim, env.n_actions, self.config.hidden, generator=init).to(env.device, env.dtype)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=self.config.lr, eps=1e-5)
        steps, n = rollout.steps_per_iteration, env.n_envs
        new = lambda *shape: torch.zeros(*shape, dtype=env.dtype, device=env.device)  # noqa: E731
        self._obs = new(steps, n, obs_dim)
        self._actions = torch.zeros(steps, n, dtype=torch.int64, device=env.device)
        self._log_probs, self._values, self._rewards = new(steps, n), new(steps + 1, n), new(steps, n)
        self._terminated, self._finished, self._valid = new(steps, n), new(steps, n), new(steps, n)

    def iterate(self) -> UpdateStats:
        """Collect one iteration of steps, then update the policy.

        Returns:
            Loss and entropy statistics of the update. The episode statistics
            come from ``rollout.end_iteration()``, which the caller invokes.
        """
        rollout, env = self.rollout, self.rollout.env
        iteration = rollout.iteration
        actions_gen = step_generator(self.seed, iteration, ACTION_STREAM, env.device)
        with torch.no_grad():
            for t in range(rollout.steps_per_iteration):
                obs = rollout.obs
                self._obs[t] = obs.reshape(env.n_envs, -1)
                self._valid[t] = 1.0 - env.needs_reset.to(env.dtype)
                actions, log_prob, value = self.model.sample(obs, actions_gen)
                _, reward, terminated, truncated, _ = rollout.step(actions)
                self._actions[t], self._log_probs[t], self._values[t], self._rewards[t] = (
                    actions, log_prob, value, reward,
                )
                self._terminated[t] = terminated.to(env.dtype)
                self._finished[t] = (terminated | truncated).to(env.dtype)
            self._values[-1] = self.model(rollout.obs)[1]
            advantages = self._advantages()
        return self._update(advantages, iteration)

    def _advantages(self) -> torch.Tensor:
        """GAE over the iteration, cut at episode ends; zero on reset steps."""
        gamma, lam = self.config.gamma, self.config.gae_lambda
        advantages = torch.zeros_like(self._rewards)
        running = torch.zeros_like(self._rewards[0])
        for t in reversed(range(self._rewards.shape[0])):  # over time, vectorised over envs
            delta = self._rewards[t] + gamma * self._values[t + 1] * (1.0 - self._terminated[t]) - self._values[t]
            running = (delta + gamma * lam * (1.0 - self._finished[t]) * running) * self._valid[t]
            advantages[t] = running
        return advantages

    def _update(self, advantages: torch.Tensor, iteration: int) -> UpdateStats:
        cfg = self.config
        valid = torch.nonzero(self._valid.reshape(-1) > 0.5).squeeze(1)
        obs = self._obs.reshape(-1, self._obs.shape[-1])[valid]
        actions = self._actions.reshape(-1)[valid]
        old_log_probs = self._log_probs.reshape(-1)[valid]
        advantage = advantages.reshape(-1)[valid]
        returns = advantage + self._values[:-1].reshape(-1)[valid]
        count = valid.numel()
        shuffle = step_generator(self.seed, iteration, SHUFFLE_STREAM, obs.device)
        batch = max(1, count // cfg.minibatches)
        totals = torch.zeros(5, dtype=torch.float64)
        updates = 0
        for _ in range(cfg.epochs):
            order = torch.randperm(count, generator=shuffle, device=obs.device)
            for start in range(0, count - batch + 1, batch):
                index = order[start : start + batch]
                logits, value = self.model(obs[index])
                log_probs = torch.log_softmax(logits, -1)
                new_log_prob = log_probs.gather(1, actions[index].unsqueeze(1)).squeeze(1)
                entropy = -(log_probs.exp() * log_probs).sum(-1).mean()
                adv = advantage[index]
                adv = (adv - adv.mean()) / (adv.std(unbiased=False) + 1e-8)
                log_ratio = new_log_prob - old_log_probs[index]
                ratio = log_ratio.exp()
                policy_loss = -torch.minimum(ratio * adv, ratio.clamp(1 - cfg.clip, 1 + cfg.clip) * adv).mean()
                value_loss = 0.5 * (value - returns[index]).square().mean()
                loss = policy_loss + cfg.value_coef * value_loss - cfg.entropy_coef * entropy
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
                self.optimizer.step()
                with torch.no_grad():
                    approx_kl = ((ratio - 1) - log_ratio).mean()
                    clipped = ((ratio - 1).abs() > cfg.clip).to(ratio.dtype).mean()
                    totals += torch.stack((policy_loss, value_loss, entropy, approx_kl, clipped)).detach().double().cpu()
                updates += 1
        means = (totals / max(updates, 1)).tolist() if updates else [math.nan] * 5
        return UpdateStats(*means)

    def train(self, iterations: int, *, stop_when_solved: bool = True) -> list[tuple[UpdateStats, IterationSummary]]:
        """Run up to ``iterations`` iterations (update + episode statistics each).

        Args:
            iterations: Most iterations to run.
            stop_when_solved: Stop after the first iteration whose moving
                average makes the env count as solved.

        Returns:
            One ``(update stats, iteration summary)`` pair per iteration run.
        """
        history = []
        env = self.rollout.env
        for k in range(iterations):
            stats = self.iterate()
            summary = self.rollout.end_iteration(final=k == iterations - 1)
            history.append((stats, summary))
            solved = summary.episodes_total > 0 and env.is_solved(summary.moving_average, summary.window_success_rate)
            if stop_when_solved and solved:
                break
        return history

    # -- checkpoint ---------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Model and optimizer state (tensors and plain values only)."""
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`state_dict`."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
