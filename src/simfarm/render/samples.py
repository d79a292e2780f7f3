"""Synthetic render inputs: round snapshots, episode traces and tidy tables.

They follow the run-directory contracts (the experiment round snapshot
schema, :class:`~simfarm.records.EpisodeTrace`, the rounds / iterations
tables) and are seeded, so tests, benchmarks and documentation examples can
exercise the render layer without running a simulation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from simfarm.records import EpisodeTrace

__all__ = [
    "sample_history",
    "sample_iterations",
    "sample_rounds",
    "sample_run_dir",
    "sample_snapshot",
    "sample_trace",
]

_FEATURES = (("device_type", ("mobile", "desktop", "tablet")), ("browse_depth", None), ("region", ("eu", "us", "apac")))


def _tree(rng: np.random.Generator, n_leaves: int, arms: list[str]) -> dict[str, Any]:
    """A random binary tree with *n_leaves* leaves in the snapshot schema."""
    leaves: list[dict[str, Any]] = []
    shares = rng.dirichlet(np.full(n_leaves, 3.0))

    def grow(count: int, depth: int, rule: list[str]) -> dict[str, Any]:
        if count == 1:
            leaf_id = len(leaves)
            probs = rng.dirichlet(np.full(len(arms), 0.7))
            best = arms[int(np.argmax(probs))]
            leaves.append({
                "id": leaf_id,
                "rule": " and ".join(rule) or "all visitors",
                "share": float(shares[leaf_id]),
                "arm_probs": {a: round(float(p), 4) for a, p in zip(arms, probs, strict=True)},
                "best_arm": best,
                "p_best": {a: round(float(p), 4) for a, p in zip(arms, probs, strict=True)},
                "effect_interval80": {a: [-0.1, 0.4] for a in arms[1:]},
                "stability": 0.8,
            })
            return {"leaf": leaf_id}
        feature, categories = _FEATURES[depth % len(_FEATURES)]
        left_count = int(rng.integers(1, count))
        if categories is None:
            threshold = round(float(rng.uniform(1, 6)), 2)
            node = {"feature": feature, "categories": None, "threshold": threshold}
            yes, no = f"{feature} <= {threshold}", f"{feature} > {threshold}"
        else:
            cats = [categories[int(rng.integers(len(categories)))]]
            node = {"feature": feature, "categories": cats, "threshold": None}
            yes, no = f"{feature} in {{{cats[0]}}}", f"{feature} not in {{{cats[0]}}}"
        node["left"] = grow(left_count, depth + 1, [*rule, yes])
        node["right"] = grow(count - left_count, depth + 1, [*rule, no])
        return node

    root = grow(n_leaves, 0, [])
    return {"max_depth": 3, "root": root, "leaves": leaves}


def sample_snapshot(round_idx: int, n_rounds: int, *, seed: int = 0, n_leaves: int = 4,
                    arms: tuple[str, ...] = ("control", "a", "b")) -> dict[str, Any]:
    """One experiment round snapshot (JSON dict) in the documented schema.

    Round 0 has no tree (a cold start: control and explore only); later
    rounds carry a tree with *n_leaves* leaves and an Optimized cell.
    """
    rng = np.random.default_rng([seed, round_idx])
    treatments = list(arms)
    if round_idx == 0:
        cells = [
            {"id": "control", "weight": 0.5, "policy": {"kind": "baseline", "arm": treatments[0]}},
            {"id": "explore", "weight": 0.5, "policy": {"kind": "uniform", "arms": treatments}},
        ]
        tree = None
    else:
        tree = _tree(rng, n_leaves, treatments)
        optimized = min(0.9, 0.3 + 0.15 * round_idx)
        rest = (1.0 - optimized) / 2
        cells = [
            {"id": "control", "weight": rest, "policy": {"kind": "baseline", "arm": treatments[0]}},
            {"id": "explore", "weight": rest, "policy": {"kind": "uniform", "arms": treatments}},
            {"id": "optimized", "weight": optimized,
             "policy": {"kind": "tree", "leaf_probs": {str(leaf["id"]): leaf["arm_probs"] for leaf in tree["leaves"]}}},
        ]
    visitors = 2000
    return {
        "schema": "simfarm.experiment.round/1",
        "round_idx": round_idx,
        "n_rounds": n_rounds,
        "treatments": treatments,
        "active_treatments": treatments,
        "n_visitors_round": visitors,
        "n_visitors_cumulative": visitors * (round_idx + 1),
        "cells_shipped": cells,
        "next_recommendation": {"cells": cells, "treatments": treatments, "tree": tree, "graduation_candidates": []},
        "analysis": {"comparisons": [], "segments": tree["leaves"] if tree else []},
        "truth_comparison": None,
        "future_key": "consumers must ignore unknown keys",
    }


def sample_history(n_rounds: int = 6, *, seed: int = 0, max_leaves: int = 5) -> list[dict[str, Any]]:
    """*n_rounds* snapshots whose trees grow from 2 to *max_leaves* leaves."""
    return [
        sample_snapshot(i, n_rounds, seed=seed, n_leaves=min(max_leaves, 2 + (i - 1) % max(max_leaves - 1, 1)))
        for i in range(n_rounds)
    ]


def sample_trace(episode: int = 0, *, n_frames: int = 24, height: int = 64, width: int = 96, seed: int = 0,
                 fps: float = 30.0, rich: bool = False) -> EpisodeTrace:
    """An episode with moving-box frames (few colours), or noise when *rich*."""
    rng = np.random.default_rng([seed, episode])
    if rich:
        frames = rng.integers(0, 256, size=(n_frames, height, width, 3), dtype=np.uint8)
    else:
        frames = np.full((n_frames, height, width, 3), 245, dtype=np.uint8)
        xs = (np.arange(n_frames) * 3) % max(width - 12, 1)
        rows = np.arange(height)[None, :, None]
        cols = np.arange(width)[None, None, :]
        box = (rows >= height // 3) & (rows < height // 3 + 12) & (cols >= xs[:, None, None]) & (cols < xs[:, None, None] + 12)
        frames[box] = (30, 90, 200)
    n_steps = max(n_frames, 1)
    rewards = np.ones(n_steps, dtype=np.float32)
    return EpisodeTrace(
        episode=episode,
        env_id=episode % 4,
        frames=frames,
        actions=rng.integers(0, 2, size=n_steps).astype(np.int64),
        rewards=rewards,
        episode_reward=float(rewards.sum()),
        step_count=n_steps,
        solved=bool(episode % 2),
        avg_reward=float(rewards.sum()) * 0.9,
        fps=fps,
        metadata={"env": "boxworld", "iteration": episode},
    )


def _params_columns(config: int) -> dict[str, Any]:
    return {"env": "boxworld", "lr": 0.01 * (config + 1), "schedule.kind": "fixed"}


def sample_iterations(n_jobs: int = 2, n_iterations: int = 30, *, n_configs: int = 1, seed: int = 0) -> pd.DataFrame:
    """Rollout iteration rows (the ``iterations`` table) for a few jobs."""
    frames = []
    for job in range(n_jobs):
        config = job % n_configs
        rng = np.random.default_rng([seed, job])
        it = np.arange(n_iterations)
        reward = 20 + 180 * (1 - np.exp(-it / (8 + 4 * config))) + rng.normal(0, 15, n_iterations)
        frame = pd.DataFrame({
            "job_id": f"rollout-{job:04d}",
            "config_id": f"c{config:03d}",
            "step": it,
            "seed": job // n_configs,
            **_params_columns(config),
            "iteration": it,
            "env_steps": (it + 1) * 512,
            "episode_reward_mean": reward,
            "episode_reward_min": reward - 20,
            "episode_reward_max": reward + 20,
            "moving_average": pd.Series(reward).rolling(5, min_periods=1).mean().to_numpy(),
            "entropy": 0.69 * np.exp(-it / 25) + rng.normal(0, 0.01, n_iterations),
            "policy_loss": rng.normal(0, 0.05, n_iterations),
            "value_loss": 50 * np.exp(-it / 10) + rng.random(n_iterations),
            "steps_per_s": 4000 + rng.normal(0, 100, n_iterations),
            "step_wall_s": 0.1 + rng.random(n_iterations) * 0.01,
        })
        frame.loc[3, "entropy"] = np.nan  # a missing value must show as a gap, not a zero
        frame.loc[4, "value_loss"] = np.inf
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def sample_rounds(n_jobs: int = 4, n_rounds: int = 6, *, n_configs: int = 2, seed: int = 0) -> pd.DataFrame:
    """Experiment round rows (the ``rounds`` table): seeds x configs."""
    frames = []
    for job in range(n_jobs):
        config = job % n_configs
        rng = np.random.default_rng([seed, job, 7])
        r = np.arange(n_rounds)
        gap = (0.5 + config * 0.2) * np.exp(-r / 2) + rng.normal(0, 0.02, n_rounds)
        frames.append(pd.DataFrame({
            "job_id": f"experiment-{job:04d}",
            "config_id": f"c{config:03d}",
            "step": r,
            "seed": job // n_configs,
            "scenario": "constant",
            "effect_scale": 0.5 * (config + 1),
            "round": r,
            "cate_rmse": 1.0 / (r + 1) + rng.random(n_rounds) * 0.05,
            "policy_accuracy": np.clip(0.5 + 0.08 * r + rng.normal(0, 0.03, n_rounds), 0, 1),
            "rpv_policy": 1.0 - gap,
            "rpv_uniform": np.full(n_rounds, 0.6),
            "rpv_oracle": np.full(n_rounds, 1.0),
            "oracle_gap_rpv": gap,
            "coverage_80": np.clip(0.8 + rng.normal(0, 0.05, n_rounds), 0, 1),
            "step_wall_s": rng.random(n_rounds),
        }))
    out = pd.concat(frames, ignore_index=True)
    out.loc[1, "cate_rmse"] = np.nan
    return out


def sample_run_dir(root: str | Path, *, name: str = "sample", n_seeds: int = 2, n_rounds: int = 4,
                   n_iterations: int = 12, n_episodes: int = 2, failed_job: bool = True) -> Path:
    """Write a small run directory by the farm's contract (manifest, tables,
    snapshots, traces): two experiment configs x *n_seeds*, one rollout
    config x *n_seeds* with *n_episodes* traces each, and optionally one
    failed job.

    Returns:
        The run directory ``root / name``.
    """
    import json

    run = Path(root) / name
    run.mkdir(parents=True, exist_ok=True)
    rounds = sample_rounds(2 * n_seeds, n_rounds, n_configs=2)
    iterations = sample_iterations(n_seeds, n_iterations, n_configs=1)
    jobs: list[dict[str, Any]] = []
    for job_id, frame in rounds.groupby("job_id", sort=True):
        config = str(frame["config_id"].iloc[0])
        jobs.append({"job_id": job_id, "workload": "experiment", "table": "rounds", "block": "experiments[0]",
                     "config_id": config, "config": f"experiments[0] scenario=constant effect_scale={frame['effect_scale'].iloc[0]}",
                     "seed": int(frame["seed"].iloc[0]), "params": {"scenario": "constant", "effect_scale": float(frame["effect_scale"].iloc[0])},
                     "status": "done", "error": None, "steps_done": n_rounds, "n_steps": n_rounds, "attempts": 1})
        folder = run / "snapshots" / str(job_id)
        folder.mkdir(parents=True, exist_ok=True)
        for snap in sample_history(n_rounds, seed=int(frame["seed"].iloc[0]), max_leaves=4):
            (folder / f"round-{snap['round_idx']:03d}.json").write_text(json.dumps(snap))
    episode_rows = []
    for job_id, frame in iterations.groupby("job_id", sort=True):
        jobs.append({"job_id": job_id, "workload": "rollout", "table": "iterations", "block": "rollouts[0]",
                     "config_id": "c100", "config": "rollouts[0] env=boxworld", "seed": int(frame["seed"].iloc[0]),
                     "params": {"env": "boxworld", "lr": 0.01, "schedule": {"kind": "fixed"}}, "status": "done",
                     "error": None, "steps_done": n_iterations, "n_steps": n_iterations, "attempts": 1})
        folder = run / "traces" / str(job_id)
        folder.mkdir(parents=True, exist_ok=True)
        for e in range(n_episodes):
            trace = sample_trace(e, n_frames=16 + 4 * e, seed=int(frame["seed"].iloc[0]))
            rel = f"traces/{job_id}/episode-{e:05d}.npz"
            np.savez(run / rel, **trace.to_npz_arrays())
            episode_rows.append({"job_id": job_id, "config_id": "c100", "step": e, "seed": int(frame["seed"].iloc[0]),
                                 "episode": e, "env_id": trace.env_id, "episode_reward": trace.episode_reward,
                                 "avg_reward": trace.avg_reward, "step_count": trace.step_count, "solved": trace.solved,
                                 "frame_count": len(trace.frames), "fps": trace.fps, "trace": rel})
    iterations["config_id"] = "c100"
    if failed_job:
        jobs.append({"job_id": "rollout-0099", "workload": "rollout", "table": "iterations", "block": "rollouts[0]",
                     "config_id": "c100", "config": "rollouts[0] env=boxworld", "seed": 99,
                     "params": {"env": "boxworld"}, "status": "failed",
                     "error": "RuntimeError: injected failure <b>not bold</b> at step 3", "steps_done": 3,
                     "n_steps": n_iterations, "attempts": 2})
    rounds.to_parquet(run / "rounds.parquet")
    iterations.to_parquet(run / "iterations.parquet")
    pd.DataFrame(episode_rows).to_parquet(run / "episodes.parquet")
    manifest = {
        "schema": "simfarm.manifest/1", "name": name, "status": "done",
        "created": "2026-01-01T00:00:00+00:00", "updated": "2026-01-01T00:01:00+00:00",
        "finished": "2026-01-01T00:01:00+00:00",
        "spec": {"name": name, "seed": 0, "render": {"workers": 0}},
        "seed": 0, "versions": {"simfarm": "0.1.0"}, "host": {"hostname": "sample", "platform": "linux"},
        "jobs": jobs, "renders": [], "timing_columns": ["step_wall_s", "steps_per_s"],
        "tables": {"rounds": len(rounds), "iterations": len(iterations), "steps": 0, "episodes": len(episode_rows)},
    }
    (run / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return run
