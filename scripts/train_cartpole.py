"""The long CartPole study: PPO from scratch to "solved", over several seeds.

Solved means CartPole-v1's rule: the average episode reward over the last
100 episodes reaches 475. For each seed the script trains until then (or a
cap), reports iterations, env steps and wall time, then evaluates the greedy
policy on 100 fresh episodes. It exits with status 1 if any seed fails.

Usage::

    python scripts/train_cartpole.py                       # seeds 0-4, 64 envs, 1 thread
    python scripts/train_cartpole.py --seeds 0-9 --n-envs 128 --threads 2
"""

from __future__ import annotations

import argparse
import time

import torch

from simfarm.envs import PPOConfig, PPOTrainer, Rollout, evaluate, make


def _seeds(text: str) -> list[int]:
    if "-" in text:
        low, high = (int(part) for part in text.split("-"))
        return list(range(low, high + 1))
    return [int(part) for part in text.split(",")]


def main(argv: list[str] | None = None) -> int:
    """Train every seed; print one row per seed and a summary line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0-4", help='e.g. "0-4" or "1,3,5"')
    parser.add_argument("--n-envs", type=int, default=64)
    parser.add_argument("--steps", type=int, default=128, help="steps per iteration")
    parser.add_argument("--max-iterations", type=int, default=150)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    config = PPOConfig()
    print(f"PPO {config.to_dict()}")
    print(f"{args.n_envs} envs x {args.steps} steps per iteration, {args.threads} thread(s), device {args.device}")
    print("seed  iterations  env_steps   wall_s  moving_avg  greedy_mean(100)")
    failures = 0
    for seed in _seeds(args.seeds):
        env = make("cartpole", args.n_envs, device=args.device, seed=seed)
        rollout = Rollout(env, steps_per_iteration=args.steps)
        trainer = PPOTrainer(rollout, config, seed=seed)
        started = time.perf_counter()
        history = trainer.train(args.max_iterations)
        wall = time.perf_counter() - started
        summary = history[-1][1]
        greedy = lambda obs, generator: trainer.model.act(obs, generator, greedy=True)  # noqa: E731
        scores = evaluate(make("cartpole", 100, device=args.device), greedy, episodes=100, seed=seed + 1000)
        solved = summary.moving_average >= 475.0
        failures += not solved
        print(
            f"{seed:4d}  {len(history):10d}  {len(history) * args.n_envs * args.steps:9d}  {wall:7.1f}  "
            f"{summary.moving_average:10.1f}  {scores.mean():16.1f}{'' if solved else '  NOT SOLVED'}",
            flush=True,
        )
    print("all seeds solved" if not failures else f"{failures} seed(s) not solved")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
