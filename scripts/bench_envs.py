"""Benchmark the batched envs against gymnasium, side by side in one process.

Measures, with one torch thread by default:

1. CartPole env steps/s at n_envs in {1, 64, 1024, 4096, 16384}: our env
   eager and under ``torch.compile``, and gymnasium's numpy
   ``CartPoleVectorEnv`` on the same action sequence; prints our/gymnasium
   ratios.
2. Ray-cast env steps/s at res 64 with 8 and 64 walls (eager and compiled).
3. Trace-capture cost at n_envs=4096: a CartPole rollout with no capture,
   with the capture log running, and with a schedule that draws traces;
   plus the cost of drawing one frame.

Machines are noisy (and shared): every configuration is measured in several
interleaved rounds and the medians are reported, ratios per round first.

Usage::

    python scripts/bench_envs.py                 # CPU, about 5 minutes on 2 cores
    python scripts/bench_envs.py --quick         # fewer rounds and steps
    python scripts/bench_envs.py --device cuda   # GPU figures (gymnasium stays on the CPU)
    python scripts/bench_envs.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np
import torch

from simfarm.envs import CaptureSchedule, RandomPolicy, Rollout, make, resolve_device


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_steps(step: Callable[[int], object], steps: int, device: torch.device) -> float:
    """Seconds per call of ``step(i)`` over ``steps`` calls (device work included)."""
    _sync(device)
    started = time.perf_counter()
    for i in range(steps):
        step(i)
    _sync(device)
    return (time.perf_counter() - started) / steps


def bench_cartpole(sizes: list[int], rounds: int, device: torch.device, seconds: float) -> list[dict]:
    """Our CartPole (eager, compiled) against gymnasium's CartPoleVectorEnv."""
    from gymnasium.envs.classic_control.cartpole import CartPoleVectorEnv

    rows = []
    for n in sizes:
        # Enough steps for ~`seconds` per measurement at the expected speed, at least 50.
        steps = int(max(50, min(3000, seconds * 2e7 / max(n, 1) if n > 64 else seconds * 3e3)))
        actions_np = np.random.default_rng(0).integers(0, 2, size=(steps, n))
        actions = torch.from_numpy(actions_np).to(device)
        gym_env = CartPoleVectorEnv(num_envs=n)
        gym_env.reset(seed=0)
        eager = make("cartpole", n, device=device, seed=0)
        compiled = make("cartpole", n, device=device, seed=0, compile=True)
        for env in (eager, compiled):
            env.reset()
            for i in range(20):  # warm-up, and compilation for the compiled one
                env.step(actions[i])
        results: dict[str, list[float]] = {"gymnasium": [], "eager": [], "compiled": []}
        for _ in range(rounds):
            results["gymnasium"].append(n / _time_steps(lambda i: gym_env.step(actions_np[i]), steps, torch.device("cpu")))
            results["eager"].append(n / _time_steps(lambda i: eager.step(actions[i]), steps, device))
            results["compiled"].append(n / _time_steps(lambda i: compiled.step(actions[i]), steps, device))
        row = {
            "n_envs": n,
            **{f"{k}_steps_per_s": statistics.median(v) for k, v in results.items()},
            "eager_ratio": statistics.median(e / g for e, g in zip(results["eager"], results["gymnasium"], strict=True)),
            "compiled_ratio": statistics.median(
                c / g for c, g in zip(results["compiled"], results["gymnasium"], strict=True)
            ),
        }
        rows.append(row)
        print(
            f"cartpole n={n:6d}  gymnasium {row['gymnasium_steps_per_s']:12,.0f}/s  "
            f"eager {row['eager_steps_per_s']:12,.0f}/s ({row['eager_ratio']:.2f}x)  "
            f"compiled {row['compiled_steps_per_s']:12,.0f}/s ({row['compiled_ratio']:.2f}x)",
            flush=True,
        )
    return rows


def bench_raycast(sizes: list[int], walls: list[int], rounds: int, device: torch.device, steps: int) -> list[dict]:
    """Ray-cast env steps/s at res 64 (eager and compiled), random actions."""
    rows = []
    for n in sizes:
        for n_walls in walls:
            envs = {
                mode: make("raycast", n, device=device, seed=0, res=64, n_walls=n_walls, layout="box", compile=mode == "compiled")
                for mode in ("eager", "compiled")
            }
            actions = torch.randint(0, 7, (steps, n), generator=torch.Generator().manual_seed(0)).to(device)
            for env in envs.values():
                env.reset()
                for i in range(10):
                    env.step(actions[i])
            results: dict[str, list[float]] = {"eager": [], "compiled": []}
            for _ in range(rounds):
                for mode, env in envs.items():
                    results[mode].append(n / _time_steps(lambda i, env=env: env.step(actions[i]), steps, device))
            row = {
                "n_envs": n,
                "n_walls": n_walls,
                "res": 64,
                **{f"{k}_steps_per_s": statistics.median(v) for k, v in results.items()},
            }
            rows.append(row)
            print(
                f"raycast  n={n:6d} walls={n_walls:3d} res=64  eager {row['eager_steps_per_s']:12,.0f}/s  "
                f"compiled {row['compiled_steps_per_s']:12,.0f}/s",
                flush=True,
            )
    return rows


def bench_capture(n: int, rounds: int, device: torch.device, iterations: int, steps: int) -> dict:
    """Rollout throughput without capture, with the capture log, and drawing traces."""
    schedules = {
        "none": None,
        # Selects nothing within the run: measures the per-step log alone.
        "log": CaptureSchedule(episode_indices=(10**12,)),
        # About one 20-frame trace per iteration at this size.
        "traces": CaptureSchedule(every_n_episodes=20_000),
    }
    times: dict[str, list[float]] = {k: [] for k in schedules}
    traces_drawn = 0
    for _ in range(rounds):
        for name, schedule in schedules.items():
            env = make("cartpole", n, device=device, seed=0)
            rollout = Rollout(env, steps_per_iteration=steps, capture=schedule)
            policy = RandomPolicy(2)
            rollout.run(policy.act)  # warm-up iteration
            rollout.end_iteration()
            _sync(device)
            started = time.perf_counter()
            for _ in range(iterations):
                rollout.run(policy.act)
                drawn = rollout.end_iteration().traces
                if name == "traces":
                    traces_drawn += len(drawn)
            _sync(device)
            times[name].append((time.perf_counter() - started) / (iterations * steps))
    env = make("cartpole", 1, device=device)
    env.reset()
    frames = env.state.expand(200, 4).clone()
    env.draw_episode(0, frames)
    draw = _time_steps(lambda i: env.draw_episode(0, frames), 3, device) / 200
    base = statistics.median(times["none"])
    row = {
        "n_envs": n,
        "steps_per_iteration": steps,
        "rollout_steps_per_s": n / base,
        "log_overhead": statistics.median(l / b - 1 for l, b in zip(times["log"], times["none"], strict=True)),
        "traces_overhead": statistics.median(t / b - 1 for t, b in zip(times["traces"], times["none"], strict=True)),
        "traces_per_iteration": traces_drawn / (rounds * iterations),
        "draw_ms_per_frame": draw * 1e3,
        "frame_shape": list(env.render_shape),
    }
    print(
        f"capture  n={n}  rollout {row['rollout_steps_per_s']:,.0f} env steps/s  "
        f"log overhead {row['log_overhead']:+.1%}  with traces {row['traces_overhead']:+.1%} "
        f"({row['traces_per_iteration']:.1f} traces/iteration)  draw {row['draw_ms_per_frame']:.2f} ms/frame "
        f"{tuple(env.render_shape)}",
        flush=True,
    )
    return row


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks; print a summary and optionally write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help='"cpu", "cuda" or "auto" (default cpu)')
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--quick", action="store_true", help="fewer rounds and steps")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--sizes", default="1,64,1024,4096,16384", help="CartPole batch sizes")
    parser.add_argument("--raycast-sizes", default="256,1024", help="ray-cast batch sizes")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    rounds = 3 if args.quick else 5
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"device {device} ({name}), torch {torch.__version__}, {args.threads} thread(s), python {sys.version.split()[0]}")
    results = {
        "device": str(device),
        "device_name": name,
        "threads": args.threads,
        "torch": torch.__version__,
        "cartpole": bench_cartpole([int(s) for s in args.sizes.split(",")], rounds, device, 0.2 if args.quick else 0.5),
        "raycast": bench_raycast(
            [int(s) for s in args.raycast_sizes.split(",")], [8, 64], rounds, device, 20 if args.quick else 40
        ),
        "capture": bench_capture(4096, rounds, device, 2 if args.quick else 4, 128),
    }
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
