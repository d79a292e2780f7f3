"""Benchmark the batched envs against gymnasium, side by side in one process.

Measures, with one torch thread by default:

1. CartPole env steps/s at n_envs in {1, 64, 1024, 4096, 16384}: our env
   eager and under ``torch.compile``, and gymnasium's numpy
   ``CartPoleVectorEnv`` on the same action sequence; prints our/gymnasium
   ratios.
2. Ray-cast env steps/s at res 64 with 8 and 64 walls (eager and compiled).
3. Trace-capture cost at n_envs=4096: a CartPole rollout with no capture
   against the same rollout under several capture schedules (see
   CAPTURE_CASES), each measured with drawing and, where noted, with
   drawing stubbed out to isolate the per-step bookkeeping; plus the cost
   of drawing one frame of a typical episode.

Machines are noisy (and shared): every configuration is measured in several
interleaved rounds and the medians are reported, ratios per round first.

Usage::

    python scripts/bench_envs.py                 # CPU, about 5 minutes on 2 cores
    python scripts/bench_envs.py --quick         # fewer rounds and steps
    python scripts/bench_envs.py --device cuda   # GPU figures (gymnasium stays on the CPU)
    python scripts/bench_envs.py --json out.json
    python scripts/bench_envs.py --only capture  # one section
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


#: Capture configurations at n_envs=4096 (CartPole, random policy: ~23 k episodes per
#: 128-step iteration): (label, schedule keyword arguments, draw frames?, detection mode).
CAPTURE_CASES = [
    ("typical: 1 episode / ~3 iterations, bookkeeping only", {"every_n_episodes": 70_000}, False, "auto"),
    ("typical: 1 episode / ~3 iterations, with drawing", {"every_n_episodes": 70_000}, True, "auto"),
    ("typical, device-side detection (the GPU path), bookkeeping only", {"every_n_episodes": 70_000}, False, "device"),
    (
        "docs example: episode 0 + last 1 (env 0 followed over the last ~1000 steps), with drawing",
        {"episode_indices": (0,), "last_n_episodes": 1, "max_frames": 200},
        True,
        "auto",
    ),
    ("heavier: ~1 episode / iteration, with drawing", {"every_n_episodes": 20_000}, True, "auto"),
]


def _no_frames(env):
    """A stand-in for ``env.draw_episode`` that draws nothing (isolates the bookkeeping)."""
    empty = torch.zeros(0, *env.render_shape, 3, dtype=torch.uint8, device=env.device)
    return lambda env_id, states: empty


def _capture_rollout(n: int, device: torch.device, steps: int, iterations: int, case: tuple) -> Rollout:
    """A CartPole rollout for one of CAPTURE_CASES, told its planned length as the workload does."""
    label, kwargs, draw, detect = case
    env = make("cartpole", n, device=device, seed=0)
    if not draw:
        env.draw_episode = _no_frames(env)
    schedule = CaptureSchedule(**kwargs) if kwargs is not None else None
    return Rollout(env, steps_per_iteration=steps, capture=schedule, capture_detect=detect, iterations=iterations)


def bench_capture(n: int, rounds: int, device: torch.device, iterations: int, steps: int) -> dict:
    """Rollout throughput with each capture schedule of CAPTURE_CASES against no capture.

    Each round runs the case and a no-capture twin side by side, alternating
    iteration by iteration (so both see the same machine load), and compares
    their total times; the median over rounds is reported. On the CPU the
    times are this process's CPU time (one torch thread: the work done, and
    much less disturbed by other jobs on a shared machine than wall time);
    on a GPU, wall time.
    """
    clock = time.process_time if device.type == "cpu" else time.perf_counter
    ratios: dict[str, list[float]] = {case[0]: [] for case in CAPTURE_CASES}
    traces: dict[str, int] = dict.fromkeys(ratios, 0)
    frames: dict[str, int] = dict.fromkeys(ratios, 0)
    base_times: list[float] = []
    policy = RandomPolicy(2)
    for _ in range(rounds):
        for case in CAPTURE_CASES:
            label = case[0]
            planned = iterations + 1  # the warm-up iteration, then the measured ones
            pair = [
                _capture_rollout(n, device, steps, planned, ("none", None, False, "auto")),
                _capture_rollout(n, device, steps, planned, case),
            ]
            spent = [0.0, 0.0]
            for rollout in pair:  # warm-up iteration
                rollout.run(policy.act)
                rollout.end_iteration()
            for k in range(iterations):
                for side, rollout in enumerate(pair):
                    _sync(device)
                    started = clock()
                    rollout.run(policy.act)
                    drawn = rollout.end_iteration(final=k == iterations - 1).traces
                    _sync(device)
                    spent[side] += clock() - started
                    if side:
                        traces[label] += len(drawn)
                        frames[label] += sum(len(t.frames) for t in drawn)
            ratios[label].append(spent[1] / spent[0])
            base_times.append(spent[0] / (iterations * steps))
    env = make("cartpole", 1, device=device)
    env.reset()
    # A typical random-policy episode: the cart drifts a little, the pole falls.
    episode = torch.zeros(25, 4, device=device)
    episode[:, 0] = torch.linspace(0.0, 0.15, 25)
    episode[:, 2] = torch.linspace(0.0, 0.22, 25)
    env.draw_episode(0, episode)
    draw = _time_steps(lambda i: env.draw_episode(0, episode), 20, device) / len(episode)
    base = statistics.median(base_times)
    per_iteration = rounds * iterations
    row = {
        "n_envs": n,
        "steps_per_iteration": steps,
        "iterations_per_round": iterations,
        "rollout_steps_per_s": n / base,
        "draw_ms_per_frame": draw * 1e3,
        "frame_shape": list(env.render_shape),
        "cases": [
            {
                "case": label,
                "schedule": kwargs,
                "detect": detect,
                "overhead": statistics.median(ratios[label]) - 1,
                "overhead_per_round": [r - 1 for r in ratios[label]],
                "traces_per_iteration": traces[label] / per_iteration,
                "frames_per_iteration": frames[label] / per_iteration,
            }
            for label, kwargs, draw, detect in CAPTURE_CASES
        ],
    }
    print(
        f"capture  n={n}  rollout without capture {row['rollout_steps_per_s']:,.0f} env steps/s; "
        f"drawing {row['draw_ms_per_frame']:.3f} ms/frame {tuple(env.render_shape)} (25-frame episode)",
        flush=True,
    )
    for case in row["cases"]:
        spread = ", ".join(f"{r:+.1%}" for r in sorted(case["overhead_per_round"]))
        print(
            f"  {case['overhead']:+6.1%}  {case['case']}  [rounds: {spread}]  "
            f"({case['traces_per_iteration']:.2f} traces, {case['frames_per_iteration']:.1f} frames per iteration)",
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
    parser.add_argument("--only", default="cartpole,raycast,capture", help="comma-separated sections to run")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    rounds = 3 if args.quick else 5
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"device {device} ({name}), torch {torch.__version__}, {args.threads} thread(s), python {sys.version.split()[0]}")
    only = set(args.only.split(","))
    unknown = only - {"cartpole", "raycast", "capture"}
    if unknown:
        parser.error(f"--only takes cartpole, raycast and capture, got {sorted(unknown)}")
    results: dict = {"device": str(device), "device_name": name, "threads": args.threads, "torch": torch.__version__}
    if "cartpole" in only:
        sizes = [int(s) for s in args.sizes.split(",")]
        results["cartpole"] = bench_cartpole(sizes, rounds, device, 0.2 if args.quick else 0.5)
    if "raycast" in only:
        sizes = [int(s) for s in args.raycast_sizes.split(",")]
        results["raycast"] = bench_raycast(sizes, [8, 64], rounds, device, 20 if args.quick else 40)
    if "capture" in only:
        results["capture"] = bench_capture(4096, rounds, device, 6 if args.quick else 12, 128)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
