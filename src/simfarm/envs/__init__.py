"""Batched environments in torch: envs, policies, rollouts, traces and a PPO trainer.

Everything here runs on one device (CUDA when available, else the CPU) and
imports no Ray; the farm reaches it through the ``rollout`` workload
(:mod:`simfarm.envs.workload`)::

    from simfarm.envs import make, Rollout, CaptureSchedule, heuristic_policy

    env = make("cartpole", n_envs=256, seed=0)
    rollout = Rollout(env, steps_per_iteration=500, capture=CaptureSchedule(episode_indices=(0,)))
    rollout.run(heuristic_policy(env).act)
    summary = rollout.end_iteration(final=True)   # stats + EpisodeTrace objects
"""

from __future__ import annotations

from simfarm.envs.base import BatchedEnv, BoxSpace, DiscreteSpace, resolve_device
from simfarm.envs.capture import CaptureSchedule
from simfarm.envs.cartpole import CartPole
from simfarm.envs.policies import (
    CartPolePD,
    MLPPolicy,
    Policy,
    RandomPolicy,
    RayCastHeuristic,
    heuristic_policy,
)
from simfarm.envs.raycast import RayCast
from simfarm.envs.registry import ENVIRONMENTS, env_options, make
from simfarm.envs.rollout import IterationSummary, Rollout, evaluate, step_generator
from simfarm.envs.steplog import StepLog
from simfarm.envs.trainer import PPOConfig, PPOTrainer, UpdateStats
from simfarm.records import EpisodeTrace

__all__ = [
    "ENVIRONMENTS",
    "BatchedEnv",
    "BoxSpace",
    "CaptureSchedule",
    "CartPole",
    "CartPolePD",
    "DiscreteSpace",
    "EpisodeTrace",
    "IterationSummary",
    "MLPPolicy",
    "PPOConfig",
    "PPOTrainer",
    "Policy",
    "RandomPolicy",
    "RayCast",
    "RayCastHeuristic",
    "Rollout",
    "StepLog",
    "UpdateStats",
    "env_options",
    "evaluate",
    "heuristic_policy",
    "make",
    "resolve_device",
    "step_generator",
]
