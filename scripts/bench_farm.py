"""Benchmark the farm against its peers on the same batch of jobs, in one process run.

The batch: N ``random-walk`` jobs of S steps, each step ~W seconds of numpy
work (BLAS pinned to 1 thread everywhere). Run four ways:

1. a serial loop in this process,
2. joblib with 2 processes (loky),
3. Ray Tune, one trial per job, ``tune.report`` per step,
4. simfarm with 2 workers.

Ray is started once and shared by Tune and simfarm; its start-up is timed
apart. Then the coordinator's ingest rate: many zero-work steps, batched.
First of all, the coordinator's bookkeeping cost per job replayed in this
process at 64 and at 4,000 jobs (their ratio shows whether it stays linear).

Usage::

    python scripts/bench_farm.py                 # the documented figures
    python scripts/bench_farm.py --jobs 16 --skip-tune   # a quick look
    python scripts/bench_farm.py --only-bookkeeping      # the coordinator's cost per job at 64 vs 4,000 jobs
"""

from __future__ import annotations

import os

# Pin BLAS before numpy loads, here and (through the environment) in children.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from simfarm.seeding import job_seed  # noqa: E402
from simfarm.workloads.random_walk import build  # noqa: E402


def run_job(params: dict, seed: int) -> list[float]:
    """One job, serially: the reference every peer must reproduce."""
    return [record.metrics["position"] for record in build(params, seed)]


def bench_serial(jobs: list[tuple[dict, int]]) -> tuple[float, list[list[float]]]:
    started = time.perf_counter()
    out = [run_job(params, seed) for params, seed in jobs]
    return time.perf_counter() - started, out


def bench_joblib(jobs: list[tuple[dict, int]], workers: int) -> tuple[float, list[list[float]]]:
    from joblib import Parallel, delayed

    started = time.perf_counter()
    out = Parallel(n_jobs=workers, backend="loky")(delayed(run_job)(p, s) for p, s in jobs)
    return time.perf_counter() - started, out


def bench_tune(jobs: list[tuple[dict, int]], workers: int, storage: Path) -> float:
    from ray import tune

    def trainable(config: dict) -> None:
        workload = build(config["params"], config["seed"])
        for record in workload:
            tune.report({"position": record.metrics["position"], "step": record.step})

    space = {"job": tune.grid_search([{"params": p, "seed": s} for p, s in jobs])}

    def unpack(config: dict) -> None:
        trainable(config["job"])

    started = time.perf_counter()
    tuner = tune.Tuner(
        tune.with_resources(unpack, {"cpu": 1}),
        param_space=space,
        tune_config=tune.TuneConfig(max_concurrent_trials=workers),
        run_config=tune.RunConfig(storage_path=str(storage), name="bench", verbose=0),
    )
    results = tuner.fit()
    elapsed = time.perf_counter() - started
    assert not results.errors, results.errors
    return elapsed


def bench_simfarm(spec: str, out: Path, workers: int) -> tuple[float, object]:
    import simfarm

    started = time.perf_counter()
    result = simfarm.run(spec, out=out, workers=workers, quiet=True)
    return time.perf_counter() - started, result


def bench_bookkeeping(n_jobs: int, poll_every: int = 10) -> float:
    """The coordinator's own cost per job, in this process (no Ray): seconds per job.

    Replays *n_jobs* zero-work ``random-walk`` jobs of 6 steps through a
    :class:`Coordinator` -- lease, run, commit the final batch -- and polls
    it every *poll_every* jobs, as a driver's progress loop would. Compare
    the figure at two job counts: equal means the bookkeeping is linear.
    """
    import pandas  # noqa: F401 - loaded up front: the coordinator preloads it, which is not bookkeeping
    import pyarrow.parquet  # noqa: F401

    from simfarm.farm.coordinator import Coordinator
    from simfarm.spec import load_spec

    spec = load_spec(
        f'name = "books"\nseeds = {n_jobs}\n[[jobs]]\nworkload = "random-walk"\nsteps = 6\n'
        "[render]\ngifs = false\nepisode_gifs = false\ncurves = false\nreport = false\n"
    )
    with tempfile.TemporaryDirectory() as tmp:
        coordinator = Coordinator(str(Path(tmp) / "run"), "bench", {"render": spec.raw["render"]})
        coordinator.start(spec.raw, [job.to_json() for job in spec.jobs])
        started = time.perf_counter()
        done = 0
        while (lease := coordinator.lease("w0", "generic", os.getpid())) is not None:
            workload = build(dict(lease["params"]), int(lease["job_seed"]))
            records = list(workload)
            for record in records:
                record.job_id = lease["job_id"]
            coordinator.commit({
                "job_id": lease["job_id"], "worker": "w0", "records": records,
                "checkpoint": workload.checkpoint(), "checkpoint_step": records[-1].step, "done": True,
                "steps_total": len(records), "error": None, "traceback": None,
            })
            done += 1
            if done % poll_every == 0:
                coordinator.poll()
        elapsed = time.perf_counter() - started
        coordinator.finish()
    return elapsed / n_jobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=64)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--step-seconds", type=float, default=0.05)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--skip-tune", action="store_true")
    parser.add_argument("--ingest-jobs", type=int, default=8)
    parser.add_argument("--ingest-steps", type=int, default=5000)
    parser.add_argument("--bookkeeping-jobs", type=int, default=4000,
                        help="job count of the large in-process bookkeeping replay (vs 64)")
    parser.add_argument("--only-bookkeeping", action="store_true", help="run only the bookkeeping replay")
    args = parser.parse_args()

    small, large = bench_bookkeeping(64), bench_bookkeeping(args.bookkeeping_jobs)
    print(f"coordinator bookkeeping, in process: {small * 1000:.2f} ms per job at 64 jobs, "
          f"{large * 1000:.2f} ms at {args.bookkeeping_jobs} jobs ({large / small:.2f}x; 1.0 = linear)")
    if args.only_bookkeeping:
        return

    import ray

    from simfarm.farm.local import init_local_ray

    seeds = list(range(args.jobs))
    params = {"steps": args.steps, "step_seconds": args.step_seconds}
    jobs = [(dict(params), job_seed(0, s)) for s in seeds]
    spec = (
        f'name = "bench"\nseed = 0\nseeds = {args.jobs}\n[[jobs]]\nworkload = "random-walk"\n'
        f"steps = {args.steps}\nstep_seconds = {args.step_seconds}\n"
        "[render]\ngifs = false\nepisode_gifs = false\ncurves = false\nreport = false\n"
    )
    total_steps = args.jobs * args.steps
    print(f"batch: {args.jobs} jobs x {args.steps} steps x {args.step_seconds * 1000:.0f} ms of numpy work "
          f"({total_steps} steps, {total_steps * args.step_seconds:.1f} s of work); {args.workers} workers")

    t_serial, reference = bench_serial(jobs)
    print(f"serial loop      {t_serial:7.2f} s")
    t_joblib, out = bench_joblib(jobs, args.workers)
    assert out == reference, "joblib results differ from the serial loop"
    print(f"joblib (loky)    {t_joblib:7.2f} s")

    started = time.perf_counter()
    init_local_ray(max(args.workers + 1, os.cpu_count() or 1), log_to_driver=False, logging_level="ERROR")
    t_ray_start = time.perf_counter() - started
    print(f"(ray start-up    {t_ray_start:7.2f} s, shared by Tune and simfarm, not counted below)")

    # Ray prestarts idle worker processes right after start-up; a fresh
    # `simfarm run` finds them ready by the time its actors start, so let
    # them come up (Tune runs after simfarm, on what is left).
    time.sleep(3)
    with tempfile.TemporaryDirectory() as tmp:
        t_farm, result = bench_simfarm(spec, Path(tmp) / "farm", args.workers)
        farm_positions = [
            list(group["position"]) for _, group in result.steps.groupby("job_id", sort=True)
        ]
        assert farm_positions == reference, "simfarm results differ from the serial loop"
        print(f"simfarm          {t_farm:7.2f} s")
        t_tune = float("nan")
        if not args.skip_tune:
            t_tune = bench_tune(jobs, args.workers, Path(tmp) / "tune")
            print(f"Ray Tune         {t_tune:7.2f} s")

        # Fixed cost per job and per run: the same jobs with no work in their steps.
        empty_spec = spec.replace(f"step_seconds = {args.step_seconds}", "step_seconds = 0.0")
        t_empty, _ = bench_simfarm(empty_spec, Path(tmp) / "farm", args.workers)
        print(f"simfarm, same jobs with no work: {t_empty:5.2f} s (fixed costs of the run)")

        # Ingest: many zero-work steps; the coordinator's own time per record.
        ingest_spec = (
            f'name = "ingest"\nseeds = {args.ingest_jobs}\n[[jobs]]\nworkload = "random-walk"\n'
            f"steps = {args.ingest_steps}\n[farm]\nbatch_size = 256\n"
            "[render]\ngifs = false\nepisode_gifs = false\ncurves = false\nreport = false\n"
        )
        t_ingest, ingest = bench_simfarm(ingest_spec, Path(tmp) / "farm", args.workers)
        stats = ingest.manifest["stats"]
        records = stats["records_committed"]
        ingest_rate = records / stats["ingest_seconds"]
        end_to_end = records / t_ingest

    ray.shutdown()
    per_step_overhead = (t_farm - t_serial / args.workers) * args.workers / total_steps
    figures = {
        "serial_s": t_serial,
        "joblib_s": t_joblib,
        "tune_s": t_tune,
        "simfarm_s": t_farm,
        "ray_startup_s": t_ray_start,
        "simfarm_no_work_s": t_empty,
        "simfarm_vs_serial": t_serial / t_farm,
        "simfarm_vs_joblib": t_joblib / t_farm,
        "simfarm_vs_tune": t_tune / t_farm,
        "per_step_overhead_ms": per_step_overhead * 1000,
        "ingest_records": records,
        "ingest_records_per_s": ingest_rate,
        "ingest_end_to_end_records_per_s": end_to_end,
    }
    print()
    print(f"simfarm vs serial loop : {figures['simfarm_vs_serial']:5.2f}x  (target >= 1.8x)")
    print(f"simfarm vs joblib      : {figures['simfarm_vs_joblib']:5.2f}x  (target >= 0.95x)")
    if not args.skip_tune:
        print(f"simfarm vs Ray Tune    : {figures['simfarm_vs_tune']:5.2f}x  (target >= 10x)")
    print(f"per-step overhead      : {figures['per_step_overhead_ms']:.2f} ms of worker time per step")
    print(f"coordinator ingest     : {ingest_rate:,.0f} records/s of coordinator time "
          f"({records} records; end to end {end_to_end:,.0f} records/s)  (target >= 5,000/s)")
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in figures.items()}))
    np.testing.assert_equal(len(reference), args.jobs)


if __name__ == "__main__":
    main()
