"""``simfarm.run(spec)``: start or attach Ray, start the coordinator and workers, wait.

The driver owns no results: it starts a Coordinator actor on its own node
(the only writer of the run directory), keeps ``farm.workers`` simulation
worker actors busy -- shifting slots between ExperimentWorker, RolloutWorker
and Worker as each kind runs out of jobs -- shows progress, and when every
job is settled asks the coordinator to write the tables, finish the renders
and the report. ``resume(run_dir)`` does the same for a run whose driver
died: committed steps are never run again, jobs continue from their last
checkpoint.
"""

from __future__ import annotations

import math
import os
import time
import uuid
from pathlib import Path
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from simfarm.errors import RunDirError, SpecError
from simfarm.farm.coordinator import Coordinator
from simfarm.farm.local import init_local_ray
from simfarm.farm.workers import WORKER_CLASSES, thread_env
from simfarm.progress import Progress
from simfarm.render.options import rendering_on
from simfarm.spec import RunSpec, load_spec, parse_spec
from simfarm.store import RunResult, is_live, open_run, preload_table_libraries, read_manifest

__all__ = ["run", "resume", "DEFAULT_OUT", "NAMESPACE"]

DEFAULT_OUT = "simfarm-runs"
#: Ray namespace of simfarm's named actors.
NAMESPACE = "simfarm"


def run(
    spec: RunSpec | str | Path | dict[str, Any] | None = None,
    *,
    out: str | Path = DEFAULT_OUT,
    address: str | None = None,
    workers: int | None = None,
    name: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    quiet: bool = False,
    dashboard: bool = False,
) -> RunResult:
    """Run every job of *spec* on Ray and return the results.

    Args:
        spec: A :class:`RunSpec`, a TOML path, TOML text, a dict, or None for
            the built-in quickstart.
        out: Folder that receives the run directory ``<out>/<name>``
            (``<name>-2``, ``-3``... when taken).
        address: Ray cluster to attach to (else ``farm.address``, else
            ``RAY_ADDRESS``, else a new local Ray on this machine's cores).
        workers: Simulation workers (overrides ``farm.workers``).
        name: Run name (overrides the spec's ``name``).
        overrides: ``key=value`` spec overrides (as ``--set``).
        quiet: No progress line.
        dashboard: Start Ray's dashboard (on 127.0.0.1) with a local Ray.

    Returns:
        The :class:`~simfarm.store.RunResult` read back from the run directory.

    Raises:
        SpecError: When the spec is invalid or asks for resources the cluster lacks.
        KeyboardInterrupt: After marking the run ``interrupted`` (resumable).
    """
    if not isinstance(spec, RunSpec):
        spec = load_spec(spec, overrides=overrides, name=name)
    elif overrides or name:
        raise SpecError("overrides and name apply to a spec source, not to a parsed RunSpec")
    run_dir = _new_run_dir(Path(out), spec.name)
    return _execute(spec, run_dir, mode="new", address=address, workers=workers, quiet=quiet,
                    dashboard=dashboard)


def resume(
    run_dir: str | Path,
    *,
    address: str | None = None,
    workers: int | None = None,
    quiet: bool = False,
    retry_failed: bool = False,
    dashboard: bool = False,
) -> RunResult:
    """Finish a run whose driver died (or was interrupted).

    Jobs restart from their last committed checkpoint; committed steps are
    never committed twice. Failed jobs stay failed unless *retry_failed*.

    Raises:
        RunDirError: When *run_dir* is not a resumable simfarm run directory.
    """
    root = Path(run_dir)
    manifest = read_manifest(root)
    if is_live(root):
        raise RunDirError(
            f"{root} is still in use by a live coordinator (its driver may still be running, or has just "
            "died and Ray has not reaped its actors yet); wait a few seconds and try again"
        )
    try:
        spec = parse_spec(manifest["spec"])
    except SpecError as exc:
        raise RunDirError(f"the spec stored in {root / 'manifest.json'} no longer validates: {exc}") from None
    stored = [(j["job_id"], j["params"]) for j in manifest.get("jobs", [])]
    if stored != [(j.job_id, j.params) for j in spec.jobs]:
        raise RunDirError(
            f"the jobs in {root} do not match what its spec expands to now (a workload's defaults "
            "changed?); start a new run instead of resuming"
        )
    return _execute(spec, root, mode="resume", address=address, workers=workers, quiet=quiet,
                    retry_failed=retry_failed, dashboard=dashboard)


def _new_run_dir(out: Path, name: str) -> Path:
    candidate = out / name
    n = 2
    while candidate.exists():
        candidate = out / f"{name}-{n}"
        n += 1
    return candidate


# ---------------------------------------------------------------------------
def _execute(
    spec: RunSpec,
    run_dir: Path,
    *,
    mode: str,
    address: str | None,
    workers: int | None,
    quiet: bool,
    retry_failed: bool = False,
    dashboard: bool = False,
) -> RunResult:
    farm = spec.farm
    render_workers = int(spec.render.workers) if rendering_on(spec.render) else 0
    connection = _connect(spec, address, workers, render_workers, dashboard, quiet)
    progress = Progress(spec.name, quiet=quiet)
    pool: _WorkerPool | None = None
    coordinator = None
    try:
        slots = _plan_workers(spec, workers, render_workers, local=connection == "local")
        session = uuid.uuid4().hex[:12]
        coordinator_name = f"simfarm-coordinator-{session}"
        coordinator = ray.remote(Coordinator).options(
            name=coordinator_name,
            namespace=NAMESPACE,
            num_cpus=farm.coordinator_cpus,
            max_restarts=-1,
            max_task_retries=-1,
            scheduling_strategy=NodeAffinitySchedulingStrategy(
                node_id=ray.get_runtime_context().get_node_id(), soft=False
            ),
        ).remote(
            str(run_dir.resolve()),
            session,
            {
                "max_job_restarts": farm.max_job_restarts,
                "render": _render_dict(spec),
                "retry_failed": retry_failed,
            },
        )
        started = coordinator.start.remote(spec.raw, [job.to_json() for job in spec.jobs])
        pool = _WorkerPool(coordinator, coordinator_name, spec, slots, progress)
        if mode == "new":
            # Every job is pending: start the workers while the coordinator
            # sets up (their first lease calls queue behind start()).
            pool.rebalance({"pending_by_kind": spec.workers_needed, "running_by_kind": {}})
        status = _get(started)
        progress.message(
            f"{spec.name}: {len(spec.jobs)} jobs on {slots} worker(s) -> {run_dir}"
            + (" (resumed)" if mode == "resume" else "")
        )
        while status["pending"] + status["running"] > 0:
            pool.rebalance(status)
            pool.wait(0.5)
            status = _call(coordinator.poll)
            progress.update(status)
            if status["done"]:
                # Once a job is done (not earlier: the cores are busy starting actors).
                preload_table_libraries()
        pool.stop()
        final = _call(coordinator.finish)
        progress.update(final, final=True)
    except KeyboardInterrupt:
        if pool is not None:
            pool.stop()
        if coordinator is not None:
            try:
                ray.get(coordinator.finish.remote(interrupted=True), timeout=30)
            except Exception:  # best effort: the journal already holds every commit
                pass
        progress.message(f"interrupted; resume with: simfarm run --resume {run_dir}")
        raise
    finally:
        if pool is not None:
            pool.stop()
        if coordinator is not None:
            ray.kill(coordinator, no_restart=True)
        if connection != "attached":
            ray.shutdown()
    return open_run(run_dir)


def _call(method: Any, *args: Any) -> Any:
    return _get(method.remote(*args))


def _get(ref: Any) -> Any:
    """``ray.get`` of a coordinator call, turning its death into a one-line error."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayActorError as exc:
        cause = getattr(exc, "cause", None) or exc
        if isinstance(cause, RunDirError):
            raise cause from None
        text = str(cause).strip().splitlines()
        raise RunDirError(f"the run's coordinator failed: {text[-1] if text else cause}") from None


def _render_dict(spec: RunSpec) -> dict[str, Any]:
    import dataclasses

    return dataclasses.asdict(spec.render)


def _connect(
    spec: RunSpec, address: str | None, workers: int | None, render_workers: int, dashboard: bool,
    quiet: bool,
) -> str:
    """Use, attach to, or start Ray.

    Returns:
        ``"attached"`` (Ray was already initialised by the caller: left running),
        ``"cluster"`` (connected to an address) or ``"local"`` (started here).
    """
    if ray.is_initialized():
        return "attached"
    target = address or spec.farm.address or os.environ.get("RAY_ADDRESS")
    common: dict[str, Any] = {"log_to_driver": not quiet, "logging_level": "ERROR"}
    if target:
        ray.init(address=target, **common)
        return "cluster"
    cores = os.cpu_count() or 1
    cpw = spec.farm.num_cpus_per_worker
    n_workers = workers or spec.farm.workers or max(1, int(cores // cpw))
    # Logical CPUs: room for the workers asked for, the render workers and the coordinator.
    need = n_workers * cpw + render_workers + spec.farm.coordinator_cpus
    init_local_ray(max(cores, math.ceil(need - 1e-9)), dashboard=dashboard, **common)
    return "local"


def _plan_workers(spec: RunSpec, workers: int | None, render_workers: int, *, local: bool) -> int:
    """How many simulation workers to run; checks the cluster has what they need.

    Raises:
        SpecError: When the cluster lacks GPUs that rollouts ask for, or a CPU
            reservation larger than the whole cluster.
    """
    resources = ray.cluster_resources()
    cpus = float(resources.get("CPU", 0))
    gpus = float(resources.get("GPU", 0))
    farm = spec.farm
    if farm.num_cpus_per_worker > cpus:
        raise SpecError(
            f"farm.num_cpus_per_worker = {farm.num_cpus_per_worker} but the Ray cluster has {cpus:g} CPUs; "
            "lower it"
        )
    if farm.num_gpus_per_worker > 0 and any(j.worker == "rollout" for j in spec.jobs) and gpus < farm.num_gpus_per_worker:
        raise SpecError(
            f"farm.num_gpus_per_worker = {farm.num_gpus_per_worker} but the Ray cluster has {gpus:g} GPUs; "
            "set it to 0 to run rollouts on CPUs, or attach to a cluster with GPUs (--address)"
        )
    if workers or farm.workers:
        return int(workers or farm.workers)
    if local:
        return max(1, int((os.cpu_count() or 1) // farm.num_cpus_per_worker))
    spare = cpus - farm.coordinator_cpus - render_workers
    return max(1, int(spare // farm.num_cpus_per_worker))


class _WorkerPool:
    """Keeps ``slots`` simulation workers busy, of whichever kinds still have jobs."""

    def __init__(
        self, coordinator: Any, coordinator_name: str, spec: RunSpec, slots: int, progress: Progress
    ) -> None:
        self.coordinator = coordinator
        self.progress = progress
        self.coordinator_name = coordinator_name
        self.spec = spec
        self.slots = slots
        self.live: dict[str, tuple[str, Any, Any]] = {}  # key -> (kind, actor, run ref)
        self._counter = 0
        self._classes: dict[str, Any] = {}

    def _actor_class(self, kind: str) -> Any:
        if kind not in self._classes:
            self._classes[kind] = ray.remote(WORKER_CLASSES[kind])
        return self._classes[kind]

    def rebalance(self, status: dict[str, Any]) -> None:
        """Start workers for kinds whose pending jobs outnumber their idle workers."""
        pending = dict(status["pending_by_kind"])
        running = status["running_by_kind"]
        while len(self.live) < self.slots:
            live_by_kind: dict[str, int] = {}
            for kind, _, _ in self.live.values():
                live_by_kind[kind] = live_by_kind.get(kind, 0) + 1
            wanting = {
                kind: count
                for kind, count in pending.items()
                if count > live_by_kind.get(kind, 0) - running.get(kind, 0)
            }
            if not wanting:
                return
            kind = max(wanting, key=lambda k: (wanting[k] / (live_by_kind.get(k, 0) + 1), -_KINDS.index(k)))
            self._start(kind)

    def _start(self, kind: str) -> None:
        farm = self.spec.farm
        key = f"w{self._counter:03d}-{kind}"
        self._counter += 1
        gpus = farm.num_gpus_per_worker if kind == "rollout" else 0.0
        actor = self._actor_class(kind).options(
            num_cpus=farm.num_cpus_per_worker,
            num_gpus=gpus,
            max_restarts=-1,
            max_task_retries=-1,
            scheduling_strategy="SPREAD",
            **_runtime_env_option(farm.runtime_env, farm.num_cpus_per_worker),
        ).remote(
            self.coordinator_name, key, farm.num_cpus_per_worker, gpus, farm.batch_size,
            farm.flush_seconds, farm.max_in_flight,
        )
        self.live[key] = (kind, actor, actor.run.remote())

    def wait(self, timeout: float) -> None:
        """Wait up to *timeout* s for workers to finish; retire the finished ones."""
        refs = {ref: key for key, (_, _, ref) in self.live.items()}
        if not refs:
            time.sleep(timeout)
            return
        ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=timeout)
        for ref in ready:
            key = refs[ref]
            _, actor, _ = self.live.pop(key)
            try:
                ray.get(ref)
            except ray.exceptions.RayError as exc:
                # The actor is gone for good: its job goes back to the queue.
                self.progress.message(f"worker {key} lost ({type(exc).__name__}); its job is requeued")
                ray.get(self.coordinator.release.remote(key))
            ray.kill(actor, no_restart=True)

    def stop(self) -> None:
        """Kill every worker (idempotent)."""
        for _, actor, _ in self.live.values():
            ray.kill(actor, no_restart=True)
        self.live.clear()


_KINDS = ("experiment", "rollout", "generic")


def _runtime_env_option(user: dict[str, Any] | None, num_cpus: float) -> dict[str, Any]:
    """``runtime_env`` for a worker actor, only when the spec asks for one.

    A runtime_env makes Ray start a fresh process per actor (seconds each), so
    without one the worker caps its own threads instead; with one, the caps
    ride along (the spec's env_vars win).
    """
    if not user:
        return {}
    env = dict(user)
    env["env_vars"] = {**thread_env(num_cpus), **env.get("env_vars", {})}
    return {"runtime_env": env}
