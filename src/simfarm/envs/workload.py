"""The farm's ``rollout`` workload: batched env rollouts or PPO training.

One step of the job is one iteration: ``steps_per_iteration`` steps of every
env, then (for ``policy = "mlp-train"``) one PPO update. Each step returns a
:class:`~simfarm.records.Record` whose metrics go to ``iterations.parquet``
and whose traces are the episodes the ``capture`` schedule picked.

Params (a ``[[rollouts]]`` table; every key but ``env`` has a default)::

    env = "cartpole"            # or "raycast"
    n_envs = 64
    policy = "random"           # "heuristic" | "mlp-train"
    iterations = 10
    steps_per_iteration = 128
    device = "auto"             # "cpu" | "cuda"; auto uses CUDA only when the job reserved a GPU
    dtype = "float32"           # "float64"
    compile = false             # torch.compile the env step
    average_window = 100        # episodes in the moving averages
    capture = { episode_indices = [0], every_n_episodes = 100, last_n_episodes = 1, max_frames = 300 }
    # env options, per env: cartpole: max_episode_steps
    #   raycast: task, res, n_walls, layout, fov, max_episode_steps, rgb, explore_target
    # mlp-train only: lr, gamma, gae_lambda, clip, epochs, minibatches,
    #   entropy_coef, value_coef, max_grad_norm, hidden

Checkpoints hold the env state (including its generator), the running
episode statistics, the capture rows of the scheduled episodes still
running and of the ``last_n_episodes`` candidates (a few hundred rows per
followed env, whatever ``n_envs``), and for training the weights and the
optimizer; they are written with
``torch.save`` and read back with ``torch.load(weights_only=True)``. A job
restored into a fresh ``build`` continues bit-identically on the CPU.
"""

from __future__ import annotations

import io
import json
import math
import time
from typing import Any

import torch

from simfarm.envs.capture import CaptureSchedule
from simfarm.envs.layouts import LAYOUT_KINDS, min_walls
from simfarm.envs.policies import RandomPolicy, heuristic_policy
from simfarm.envs.raycast import TASKS
from simfarm.envs.registry import ENVIRONMENTS, make
from simfarm.envs.rollout import Rollout
from simfarm.envs.trainer import PPOConfig, PPOTrainer
from simfarm.errors import SpecError
from simfarm.params import ParamReader
from simfarm.records import Record
from simfarm.workloads import current_job

__all__ = ["POLICIES", "RolloutWorkload", "build", "steps_for", "validate"]

POLICIES = ("random", "heuristic", "mlp-train")
CHECKPOINT_FORMAT = "simfarm.rollout/2"  # 2: capture rows per followed env (start-order ids)
_DEFAULT_PPO = PPOConfig()
#: Options of each env that a spec may set, with their readers.
ENV_OPTIONS = {
    "cartpole": ("max_episode_steps",),
    "raycast": ("task", "res", "n_walls", "layout", "fov", "max_episode_steps", "rgb", "explore_target"),
}
TRAINER_OPTIONS = tuple(_DEFAULT_PPO.to_dict())


def validate(params: dict[str, Any], where: str) -> dict[str, Any]:
    """Check rollout params; return them with every default filled in.

    Args:
        params: The job's table.
        where: Its key path for messages, e.g. ``"rollouts[0]"``.

    Returns:
        Normalised params (idempotent: validating them again changes nothing).

    Raises:
        SpecError: Naming the key, the value and what is allowed.
    """
    r = ParamReader(params, where)
    env = r.choice("env", tuple(ENVIRONMENTS), "cartpole")
    policy = r.choice("policy", POLICIES, "random")
    out: dict[str, Any] = {
        "env": env,
        "n_envs": r.integer("n_envs", 64, minimum=1, maximum=1 << 22),
        "policy": policy,
        "iterations": r.integer("iterations", 10, minimum=1),
        "steps_per_iteration": r.integer("steps_per_iteration", 128, minimum=1),
        "device": r.choice("device", ("auto", "cpu", "cuda"), "auto"),
        "dtype": r.choice("dtype", ("float32", "float64"), "float32"),
        "compile": r.boolean("compile", False),
        "average_window": r.integer("average_window", 100, minimum=1),
    }
    out.update(_env_options(r, env))
    capture = _capture(r)
    if capture is not None:
        out["capture"] = capture
    trainer_given = [k for k in TRAINER_OPTIONS if k in params]
    if policy == "mlp-train":
        out.update(_trainer_options(r))
    elif trainer_given:
        raise SpecError(
            f'{r.path(trainer_given[0])} only applies to policy = "mlp-train", got policy = "{policy}"'
        )
    for key in params:
        owners = [name for name, keys in ENV_OPTIONS.items() if key in keys and name != env]
        if key not in out and key != "capture" and owners:
            raise SpecError(f'{r.path(key)} is an option of env "{owners[0]}", not of env "{env}"')
    r.finish()
    return out


def _env_options(r: ParamReader, env: str) -> dict[str, Any]:
    if env == "cartpole":
        return {"max_episode_steps": r.integer("max_episode_steps", 500, minimum=1)}
    layout = r.choice("layout", LAYOUT_KINDS, "rooms")
    need = min_walls(layout)
    out = {
        "task": r.choice("task", TASKS, "explore"),
        "res": r.integer("res", 64, minimum=1, maximum=1024),
        "n_walls": r.integer("n_walls", max(16, need), minimum=need),
        "layout": layout,
        "fov": r.number("fov", 120.0, minimum=0.0, maximum=359.0, exclusive_minimum=True),
        "max_episode_steps": r.integer("max_episode_steps", 200, minimum=1),
        "rgb": r.boolean("rgb", False),
        "explore_target": r.number("explore_target", 0.3, minimum=0.0, maximum=1.0, exclusive_minimum=True),
    }
    return out


def _capture(r: ParamReader) -> dict[str, Any] | None:
    c = r.table_reader("capture")
    if c is None:
        return None
    indices = c.raw("episode_indices", [])
    if not isinstance(indices, list):
        raise c.fail("episode_indices", "a list of non-negative integers", indices)
    out: dict[str, Any] = {
        "episode_indices": [c.check_integer("episode_indices", i, minimum=0) for i in indices],
        "last_n_episodes": c.integer("last_n_episodes", 0, minimum=0),
    }
    for key in ("every_n_episodes", "max_frames"):
        value = c.integer(key, None, minimum=1)
        if value is not None:
            out[key] = value
    c.finish()
    return out


def _trainer_options(r: ParamReader) -> dict[str, Any]:
    d = _DEFAULT_PPO
    out: dict[str, Any] = {
        "lr": r.number("lr", d.lr, minimum=0.0, maximum=1.0, exclusive_minimum=True),
        "gamma": r.number("gamma", d.gamma, minimum=0.0, maximum=1.0),
        "gae_lambda": r.number("gae_lambda", d.gae_lambda, minimum=0.0, maximum=1.0),
        "clip": r.number("clip", d.clip, minimum=0.0, exclusive_minimum=True),
        "epochs": r.integer("epochs", d.epochs, minimum=1),
        "minibatches": r.integer("minibatches", d.minibatches, minimum=1),
        "entropy_coef": r.number("entropy_coef", d.entropy_coef, minimum=0.0),
        "value_coef": r.number("value_coef", d.value_coef, minimum=0.0),
        "max_grad_norm": r.number("max_grad_norm", d.max_grad_norm, minimum=0.0, exclusive_minimum=True),
    }
    hidden = r.raw("hidden", list(d.hidden))
    if not isinstance(hidden, list) or not hidden:
        raise r.fail("hidden", "a non-empty list of positive integers (layer widths)", hidden)
    out["hidden"] = [r.check_integer("hidden", h, minimum=1, maximum=65536) for h in hidden]
    return out


def steps_for(params: dict[str, Any]) -> int:
    """Steps (iterations) a job with ``params`` runs."""
    return int(params.get("iterations", 10))


class RolloutWorkload:
    """Iterator of one :class:`Record` per iteration; see the module docstring.

    Args:
        params: Rollout params (validated here again).
        seed: The job seed; the env, the policy's streams and the initial
            weights all derive from it.

    Raises:
        SpecError: For invalid params.
        ValueError: When ``device = "cuda"`` and no GPU is available.
    """

    table = "iterations"

    def __init__(self, params: dict[str, Any], seed: int) -> None:
        p = validate(dict(params), "rollout")
        self.params, self.seed = p, int(seed)
        job = current_job()
        torch.set_num_threads(max(1, int(job.num_cpus)))
        device = p["device"]
        if device == "auto":
            # Use a GPU only when the farm reserved one for this job.
            device = "cuda" if job.num_gpus > 0 and torch.cuda.is_available() else "cpu"
        env_kwargs = {k: p[k] for k in ENV_OPTIONS[p["env"]]}
        self.env = make(
            p["env"], p["n_envs"], device=device, seed=self.seed, dtype=p["dtype"], compile=p["compile"], **env_kwargs
        )
        schedule = CaptureSchedule(**p["capture"]) if "capture" in p else None
        self.rollout = Rollout(
            self.env,
            steps_per_iteration=p["steps_per_iteration"],
            capture=schedule,
            window=p["average_window"],
            metadata={"policy": p["policy"], "seed": self.seed},
            iterations=p["iterations"],
        )
        self.n_steps: int = p["iterations"]
        self.trainer: PPOTrainer | None = None
        if p["policy"] == "mlp-train":
            config = PPOConfig(**{k: p[k] for k in TRAINER_OPTIONS if k != "hidden"}, hidden=tuple(p["hidden"]))
            self.trainer = PPOTrainer(self.rollout, config, seed=self.seed)
        elif p["policy"] == "heuristic":
            self.policy = heuristic_policy(self.env)
        else:
            self.policy = RandomPolicy(self.env.n_actions)

    def __iter__(self) -> RolloutWorkload:
        return self

    def __next__(self) -> Record:
        k = self.rollout.iteration
        if k >= self.n_steps:
            raise StopIteration
        started = time.perf_counter()
        if self.trainer is not None:
            stats = self.trainer.iterate()
            learning = {
                "entropy": stats.entropy,
                "policy_loss": stats.policy_loss,
                "value_loss": stats.value_loss,
                "approx_kl": stats.approx_kl,
                "clip_fraction": stats.clip_fraction,
            }
        else:
            self.rollout.run(self.policy.act)
            nan = math.nan
            learning = {"entropy": self.policy.entropy(), "policy_loss": nan, "value_loss": nan, "approx_kl": nan, "clip_fraction": nan}
        summary = self.rollout.end_iteration(final=k == self.n_steps - 1)
        wall = time.perf_counter() - started
        steps = self.env.n_envs * self.rollout.steps_per_iteration
        metrics: dict[str, Any] = {
            "iteration": k,
            "env_steps": steps * (k + 1),
            "episodes": summary.episodes,
            "episodes_total": summary.episodes_total,
            "episode_reward_mean": summary.reward_mean,
            "episode_reward_min": summary.reward_min,
            "episode_reward_max": summary.reward_max,
            "episode_length_mean": summary.length_mean,
            "success_rate": summary.success_rate,
            "moving_average": summary.moving_average,
            "window_success_rate": summary.window_success_rate,
            "solved": summary.episodes_total > 0
            and self.env.is_solved(summary.moving_average, summary.window_success_rate),
            **learning,
        }
        timings = {"steps_per_s": steps / wall if wall > 0 else math.inf, "iteration_wall_s": wall}
        return Record(step=k, metrics=metrics, timings=timings, traces=summary.traces)

    def checkpoint(self) -> bytes:
        """``torch.save`` bytes of tensors, state dicts and a JSON string; see the module docstring."""
        tensors, values = self.rollout.state_dict()
        blob = {
            "format": CHECKPOINT_FORMAT,
            "meta": json.dumps({"rollout": values, "params": self.params, "seed": self.seed}),
            "rollout": tensors,
            "trainer": self.trainer.state_dict() if self.trainer is not None else {},
        }
        buffer = io.BytesIO()
        torch.save(blob, buffer)
        return buffer.getvalue()

    def restore(self, state: bytes) -> None:
        """Continue after the iteration that :meth:`checkpoint` followed.

        Raises:
            ValueError: When ``state`` is not a rollout checkpoint of a job
                with the same params and seed.
        """
        try:
            blob = torch.load(io.BytesIO(state), map_location="cpu", weights_only=True)
        except Exception as exc:  # corrupt bytes or a foreign file
            raise ValueError(f"not a rollout checkpoint: {exc}") from None
        if not isinstance(blob, dict) or blob.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"not a rollout checkpoint (expected format {CHECKPOINT_FORMAT!r})")
        meta = json.loads(blob["meta"])
        if meta["params"] != self.params or meta["seed"] != self.seed:
            raise ValueError("rollout checkpoint belongs to a job with other params or another seed")
        self.rollout.load_state_dict(blob["rollout"], meta["rollout"])
        if self.trainer is not None:
            self.trainer.load_state_dict(blob["trainer"])

    def close(self) -> None:
        """Nothing to release beyond what garbage collection frees."""


def build(params: dict[str, Any], seed: int) -> RolloutWorkload:
    """Build a rollout job (see the module docstring for its params)."""
    return RolloutWorkload(params, seed)
