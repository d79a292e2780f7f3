"""Simulation worker actors: pull jobs, run them step by step, stream records.

Three classes share one loop and differ in name and resources, so that
``ps`` and the Ray dashboard say what each process does:
``ray::ExperimentWorker``, ``ray::RolloutWorker`` (may hold a GPU share) and
``ray::Worker`` for any other workload.

A worker leases a job from the coordinator, restores the job's last
committed checkpoint if there is one, and sends records in batches of at
most ``batch_size`` (or every ``flush_seconds``), each batch carrying the
checkpoint taken right after its last record. At most ``max_in_flight``
batches are unacknowledged at once: a slow coordinator slows the workers
down instead of filling memory. If the process is killed, Ray restarts the
actor and retries ``run()``; the coordinator hands the same job back and it
resumes from its checkpoint.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from typing import TYPE_CHECKING, Any

import ray

if TYPE_CHECKING:
    from simfarm.records import Record

__all__ = ["ExperimentWorker", "RolloutWorker", "Worker", "WORKER_CLASSES", "cap_threads", "thread_env"]


def cap_threads(num_cpus: float) -> int:
    """Cap this process's BLAS, OpenMP and torch thread pools at the CPU reservation.

    threadpoolctl resizes pools already loaded (Ray may have loaded numpy
    before the actor's ``__init__``); the environment covers libraries loaded
    later and child processes.

    Returns:
        The thread count used.
    """
    from threadpoolctl import threadpool_limits

    n = max(1, int(num_cpus))
    os.environ.update(thread_env(num_cpus))
    threadpool_limits(limits=n)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(n)
    return n


def thread_env(num_cpus: float) -> dict[str, str]:
    """Environment variables that cap BLAS/OpenMP threads at the CPU reservation."""
    n = str(max(1, int(num_cpus)))
    return {
        "OMP_NUM_THREADS": n,
        "OPENBLAS_NUM_THREADS": n,
        "MKL_NUM_THREADS": n,
        "NUMEXPR_NUM_THREADS": n,
        "VECLIB_MAXIMUM_THREADS": n,
    }


class _SimulationWorker:
    """The shared pull-run-stream loop (see the module docstring).

    Args:
        coordinator: Name of the run's Coordinator actor (in the ``simfarm``
            namespace); a name, not a handle, keeps the constructor args small
            and restart-safe.
        key: Stable worker key; survives restarts, so the coordinator can
            give a restarted worker its job back.
        num_cpus: CPU reservation (threads are capped to it).
        num_gpus: GPU reservation (passed to workloads via the job context).
        batch_size: Records per batch at most.
        flush_seconds: Longest time a record waits in the buffer.
        max_in_flight: Unacknowledged batches at most.
    """

    kind = "generic"

    def __init__(
        self,
        coordinator: str,
        key: str,
        num_cpus: float = 1.0,
        num_gpus: float = 0.0,
        batch_size: int = 64,
        flush_seconds: float = 1.0,
        max_in_flight: int = 2,
    ) -> None:
        self.threads = cap_threads(num_cpus)
        self.coordinator = ray.get_actor(coordinator, namespace="simfarm")
        self.key = key
        self.num_cpus = float(num_cpus)
        self.num_gpus = float(num_gpus)
        self.batch_size = int(batch_size)
        self.flush_seconds = float(flush_seconds)
        self.max_in_flight = int(max_in_flight)
        self._in_flight: list[Any] = []
        self._stale = False
        self._job_id: str | None = None
        self.jobs_run = 0
        self.steps_run = 0

    def pid(self) -> int:
        """This worker's process id."""
        return os.getpid()

    def thread_caps(self) -> dict[str, Any]:
        """Thread pools of this process as they are now (for tests and diagnosis)."""
        from threadpoolctl import threadpool_info

        torch = sys.modules.get("torch")
        return {
            "pools": [(p["internal_api"], p["num_threads"]) for p in threadpool_info()],
            "env": {k: os.environ.get(k) for k in thread_env(self.num_cpus)},
            "torch_threads": torch.get_num_threads() if torch is not None else None,
        }

    def run(self) -> dict[str, Any]:
        """Run jobs of this worker's kind until the coordinator has none left.

        Returns:
            ``{"worker", "jobs", "steps"}`` counted by this process incarnation.
        """
        while True:
            lease = ray.get(self.coordinator.lease.remote(
                self.key, self.kind, os.getpid(), ray.get_runtime_context().get_node_id()
            ))
            if lease is None:
                self._drain()
                return {"worker": self.key, "jobs": self.jobs_run, "steps": self.steps_run}
            self._run_job(lease)
            self.jobs_run += 1

    # ------------------------------------------------------------------
    def _run_job(self, lease: dict[str, Any]) -> None:
        from simfarm import workloads
        from simfarm.records import Record, check_metrics

        job_id = lease["job_id"]
        self._job_id = job_id
        context = workloads.JobContext(
            job_id=job_id, attempt=int(lease["attempt"]), num_cpus=self.num_cpus, num_gpus=self.num_gpus
        )
        self._stale = False
        buffer: list[Record] = []
        first_buffered = 0.0
        expected_step = int(lease["step"])
        workload: Any = None
        final_checkpoint: bytes | None = None
        error: Exception | None = None
        with workloads.job_context(context):
            try:
                info = workloads.get(lease["workload"])
                workload = info.build(dict(lease["params"]), int(lease["job_seed"]))
                if lease["checkpoint"] is not None:
                    workload.restore(lease["checkpoint"])
                while not self._stale:
                    try:
                        record = next(workload)
                    except StopIteration:
                        break
                    if not isinstance(record, Record):
                        raise TypeError(
                            f"workload {lease['workload']!r} returned {type(record).__name__} from next(); "
                            "it must return simfarm.records.Record"
                        )
                    if record.step != expected_step:
                        raise ValueError(
                            f"workload {lease['workload']!r} returned step {record.step}, expected "
                            f"{expected_step}: steps must count 0, 1, 2, ... and continue after restore()"
                        )
                    where = f"workload {lease['workload']!r} step {record.step}"
                    record.metrics = check_metrics(record.metrics, where=where)
                    record.timings = check_metrics(record.timings, where=where)
                    expected_step += 1
                    self.steps_run += 1
                    record.job_id = job_id
                    if not buffer:
                        first_buffered = time.monotonic()
                    buffer.append(record)
                    if len(buffer) >= self.batch_size or time.monotonic() - first_buffered >= self.flush_seconds:
                        self._send(job_id, buffer, workload.checkpoint(), done=False)
                        buffer = []
                if buffer and not self._stale:
                    final_checkpoint = workload.checkpoint()  # before close(): it may free state
            except Exception as exc:
                error = exc
            finally:
                close = getattr(workload, "close", None)
                if callable(close):
                    try:
                        close()
                    except Exception:  # releasing resources must not lose the job's results
                        pass
        if error is not None:
            # Records before the failure are good: commit them with the failure.
            self._send_final(job_id, buffer, None, expected_step, error=error)
        elif not self._stale:
            self._send_final(job_id, buffer, final_checkpoint, expected_step)

    def _send_final(
        self,
        job_id: str,
        records: list[Record],
        checkpoint: bytes | None,
        steps_total: int,
        error: BaseException | None = None,
    ) -> None:
        """Send the job's last batch once every earlier batch is acknowledged.

        Ray may re-order retried calls when the coordinator restarts; a
        done/failed marker overtaking a batch of records would strand them.
        The last batch itself is not waited for: the next lease call queues
        behind it at the coordinator, which saves a round trip per job.
        """
        self._drain()
        if not self._stale:
            self._send(job_id, records, checkpoint, done=True, error=error, steps_total=steps_total)

    def _send(
        self,
        job_id: str,
        records: list[Record],
        checkpoint: bytes | None,
        *,
        done: bool,
        error: BaseException | None = None,
        steps_total: int | None = None,
    ) -> None:
        batch = {
            "job_id": job_id,
            "worker": self.key,
            "records": records,
            "checkpoint": checkpoint,
            "checkpoint_step": records[-1].step if records and checkpoint is not None else -1,
            "done": done,
            "steps_total": steps_total,
            "error": None if error is None else f"{type(error).__name__}: {error}",
            "traceback": None if error is None else "".join(traceback.format_exception(error, limit=12)),
        }
        self._in_flight.append(self.coordinator.commit.remote(batch))
        while len(self._in_flight) > self.max_in_flight:
            ready, self._in_flight = ray.wait(self._in_flight, num_returns=1)
            self._check(ready[0])

    def _drain(self) -> None:
        for ref in self._in_flight:
            self._check(ref)
        self._in_flight = []

    def _check(self, ref: Any) -> None:
        reply = ray.get(ref)
        # Only a reply about the job running now can stop it (the previous
        # job's last batch may still be in flight when the next one starts).
        if reply.get("stale") and reply.get("job_id") == self._job_id:
            self._stale = True


class Worker(_SimulationWorker):
    """Runs jobs of any workload other than experiments and rollouts."""

    kind = "generic"


class ExperimentWorker(_SimulationWorker):
    """Runs ``experiment`` jobs (sequential adaptive experiments)."""

    kind = "experiment"


class RolloutWorker(_SimulationWorker):
    """Runs ``rollout`` jobs; may hold a GPU share (``farm.num_gpus_per_worker``)."""

    kind = "rollout"


#: Worker kind -> actor class (not yet decorated with ray.remote).
WORKER_CLASSES: dict[str, type[_SimulationWorker]] = {
    "generic": Worker,
    "experiment": ExperimentWorker,
    "rollout": RolloutWorker,
}
