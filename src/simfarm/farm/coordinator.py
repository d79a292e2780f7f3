"""The Coordinator actor: the single writer of a run directory.

Workers lease jobs from it and send it batches of records; it commits each
record once, keyed by (job id, step), and drops replays. Every batch is one
journal append with fsync, written after the batch's snapshot and trace files
and before its checkpoint, so that after any crash:

- every journal line refers to files that exist,
- the checkpoint of a job is never ahead of its journal (a resumed job can
  only redo steps, and those replays are dropped).

On (re)start it rebuilds its whole state from the run directory, so Ray may
restart it at any time (``max_restarts=-1``): workers' calls are retried and
deduplicated. Render requests go to a pool of RenderWorker actors; their
bytes come back here to be written.
"""

from __future__ import annotations

import fcntl
import json
import os
import platform
import socket
import sys
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import ray

from simfarm import __version__
from simfarm.errors import RunDirError
from simfarm.records import EpisodeTrace, Record, check_metrics, json_safe
from simfarm.store import (
    RunPaths,
    atomic_write,
    build_tables,
    dumps_json,
    preload_table_libraries,
    read_journal,
    read_manifest,
    table_to_parquet_bytes,
)

__all__ = ["Coordinator", "CHECKPOINT_MAGIC", "read_checkpoint"]

CHECKPOINT_MAGIC = b"SIMFARM-CHECKPOINT/1\n"
#: Least seconds between two manifest rewrites while a run goes on (the journal is the record).
MANIFEST_INTERVAL = 1.0


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def read_checkpoint(path: Path) -> tuple[int, bytes] | None:
    """``(step, payload)`` of a checkpoint file, or None when absent/unreadable."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    if not data.startswith(CHECKPOINT_MAGIC):
        return None
    header_end = data.index(b"\n", len(CHECKPOINT_MAGIC))
    header = json.loads(data[len(CHECKPOINT_MAGIC) : header_end])
    return int(header["step"]), data[header_end + 1 :]


@dataclass
class _Job:
    """What the coordinator tracks per job."""

    spec: dict[str, Any]
    status: str = "pending"  # pending | running | done | failed
    error: str | None = None
    traceback: str | None = None
    steps: set[int] = field(default_factory=set)
    checkpoint_step: int = -1
    attempts: int = 0
    worker: str | None = None  # holder of the lease
    # Kept only while the job runs, for its render tasks when it finishes.
    rows: list[dict[str, Any]] = field(default_factory=list)
    snapshots: list[dict[str, Any]] = field(default_factory=list)
    timing_keys: set[str] = field(default_factory=set)
    manifest_spec: dict[str, Any] = field(default_factory=dict)  # json_safe(spec), for the manifest

    @property
    def job_id(self) -> str:
        return str(self.spec["job_id"])

    @property
    def kind(self) -> str:
        return str(self.spec["worker"])


class Coordinator:
    """Single writer of one run directory (a Ray actor; see the module docstring).

    Args:
        run_dir: The run directory (created when new).
        session: Id of the driver session; leases of other sessions are void.
        options: ``max_job_restarts``, ``render`` (RenderOptions as a dict),
            ``retry_failed``.

    Raises:
        RunDirError: When the directory belongs to another run or is locked
            by a live coordinator.
    """

    def __init__(self, run_dir: str, session: str, options: dict[str, Any]) -> None:
        # Constructor args stay small on purpose: Ray keeps them to restart the
        # actor, and large ones in the object store may be gone by then. The
        # spec and jobs come through start(), and a restart reads them back
        # from the manifest.
        self.paths = RunPaths(Path(run_dir))
        self.session = session
        self.options = options
        self.max_job_restarts = int(options.get("max_job_restarts", 3))
        self.paths.root.mkdir(parents=True, exist_ok=True)
        self._lock_handle = self._lock()
        self.spec_raw: dict[str, Any] = {}
        self.jobs: dict[str, _Job] = {}
        self.order: list[str] = []
        self.leases: dict[str, str] = {}  # worker key -> job id
        self._lease_cursor: dict[str, int] = {}  # kind -> index in order before which none is pending
        self.worker_pids: dict[str, int] = {}
        self.worker_nodes: dict[str, str] = {}
        self.renders: dict[str, dict[str, Any]] = {}
        self.records_committed = 0
        self.records_dropped = 0
        self.ingest_seconds = 0.0
        self.started = time.time()
        self.status = "running"
        self.manifest_extra: dict[str, Any] = {"created": _now()}
        self._manifest_dirty = True
        self._manifest_spec: dict[str, Any] = {}
        self._manifest_due = 0.0  # monotonic time before which poll() does not rewrite the manifest
        self._rate_window: deque[tuple[float, int]] = deque(maxlen=64)
        self._render_options: Any = None
        self._render_pool: Any = None
        self._journal_file: Any = None
        if self.paths.manifest.exists():
            manifest = read_manifest(self.paths.root)
            self._set_jobs(manifest["spec"], manifest["jobs"])
            self.manifest_extra["created"] = manifest.get("created", self.manifest_extra["created"])
            self._open_journal(self._rebuild())

    def start(self, spec_raw: dict[str, Any], jobs: list[dict[str, Any]]) -> dict[str, Any]:
        """Take the run's spec and jobs (first start), or check them (after a restart).

        Args:
            spec_raw: The validated spec as a dict (stored in the manifest).
            jobs: ``JobSpec.to_json()`` of every job, in spec order.

        Returns:
            :meth:`poll` figures.

        Raises:
            RunDirError: When the directory holds a different run.
        """
        if self._journal_file is None:
            self._set_jobs(spec_raw, jobs)
            self._open_journal([])
        elif [j["job_id"] for j in jobs] != self.order:
            raise RunDirError(f"{self.paths.root} holds a different run (its jobs differ)")
        return self.poll()

    def _set_jobs(self, spec_raw: dict[str, Any], jobs: list[dict[str, Any]]) -> None:
        spec_keys = ("job_id", "workload", "table", "worker", "block", "config_id", "config", "seed",
                     "job_seed", "params", "n_steps")
        self.spec_raw = spec_raw
        self.jobs = {j["job_id"]: _Job(spec={k: j.get(k) for k in spec_keys}) for j in jobs}
        # JSON-safe copies made once (TOML allows nan and inf), so manifest
        # writes need not walk the specs again.
        self._manifest_spec = json_safe(spec_raw)
        for job in self.jobs.values():
            job.manifest_spec = json_safe(job.spec)
        self.order = list(self.jobs)

    def _open_journal(self, extra: list[dict[str, Any]]) -> None:
        self._journal_file = open(self.paths.journal, "ab")  # noqa: SIM115 - held for the actor's life
        self._append([{"kind": "session", "session": self.session, "pid": os.getpid(), "time": _now()},
                      *extra], durable=bool(extra))
        self._write_manifest()

    # ------------------------------------------------------------------
    # Start-up: lock, rebuild
    # ------------------------------------------------------------------
    def _lock(self) -> Any:
        handle = open(self.paths.root / ".lock", "a+")  # noqa: SIM115 - lock lives as long as we do
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise RunDirError(
                f"{self.paths.root} is in use by another live simfarm run; wait for it or stop it first"
            ) from None
        return handle

    def _rebuild(self) -> list[dict[str, Any]]:
        """Restore state from the journal (after a crash or for --resume).

        Returns:
            Journal entries to append now (retries of failed jobs).
        """
        entries, valid = read_journal(self.paths.journal)
        if self.paths.journal.exists() and valid < self.paths.journal.stat().st_size:
            # Drop a torn last line so the next append starts on a fresh line.
            with open(self.paths.journal, "r+b") as handle:
                handle.truncate(valid)
        lease_session: dict[str, str] = {}
        retried: set[str] = set()
        for entry in entries:
            kind = entry.get("kind")
            job = self.jobs.get(entry.get("job_id", ""))
            if kind == "record" and job is not None:
                job.steps.add(int(entry["step"]))
                self.records_committed += 1
            elif kind == "lease" and job is not None:
                job.attempts = max(job.attempts, int(entry.get("attempt", 0)) + 1)
                if job.status not in ("done", "failed"):
                    job.status = "running"
                    job.worker = entry["worker"]
                    lease_session[job.job_id] = entry.get("session", "")
            elif kind == "job" and job is not None:
                if entry["event"] == "done":
                    job.status, job.error, job.worker = "done", None, None
                elif entry["event"] == "failed":
                    job.status, job.worker = "failed", None
                    job.error, job.traceback = entry.get("error"), entry.get("traceback")
                elif entry["event"] == "released":
                    job.status, job.worker = "pending", None
                elif entry["event"] == "retry":
                    job.status, job.error, job.traceback, job.worker = "pending", None, None, None
                    if entry.get("session") == self.session:
                        retried.add(job.job_id)
            elif kind == "render":
                self.renders[entry["key"]] = entry
        for job in self.jobs.values():
            if job.status == "running" and lease_session.get(job.job_id) != self.session:
                # Leased by a driver session that is gone (--resume): up for grabs again.
                job.status, job.worker = "pending", None
            if job.status == "running" and job.worker is not None:
                self.leases[job.worker] = job.job_id
            ckpt = read_checkpoint(self.paths.root / RunPaths.checkpoint_rel(job.job_id))
            job.checkpoint_step = ckpt[0] if ckpt else -1
        if entries:
            self._reload_running_rows(entries)
        retries: list[dict[str, Any]] = []
        if self.options.get("retry_failed"):
            for job in self.jobs.values():
                if job.status == "failed" and job.job_id not in retried:
                    job.status, job.error, job.traceback = "pending", None, None
                    retries.append(
                        {"kind": "job", "job_id": job.job_id, "event": "retry", "session": self.session}
                    )
        return retries

    def _reload_running_rows(self, entries: list[dict[str, Any]]) -> None:
        """Rows and snapshots of unfinished jobs, for their render tasks later."""
        for entry in entries:
            if entry.get("kind") != "record":
                continue
            job = self.jobs.get(entry["job_id"])
            if job is None or job.status in ("done", "failed"):
                continue
            job.rows.append(self._row(job, entry))
            if entry.get("snapshot"):
                try:
                    job.snapshots.append(json.loads(self.paths.path(entry["snapshot"]).read_text()))
                except (OSError, ValueError):
                    pass

    # ------------------------------------------------------------------
    # Writing
    # ------------------------------------------------------------------
    def _append(self, entries: list[dict[str, Any]], *, durable: bool = True) -> None:
        """Append journal lines; *durable* also fsyncs them.

        A flushed write survives the death of this process either way (it is
        in the OS's page cache); fsync adds survival of an OS crash or power
        loss, which committed records need and bookkeeping lines (leases,
        sessions, renders: all re-derivable) do not.
        """
        data = b"".join(dumps_json(e) + b"\n" for e in entries)
        self._journal_file.write(data)
        self._journal_file.flush()
        if durable:
            os.fsync(self._journal_file.fileno())

    def _manifest(self) -> dict[str, Any]:
        jobs = []
        for job_id in self.order:
            job = self.jobs[job_id]
            entry = dict(job.manifest_spec)
            entry.update(
                status=job.status,
                error=job.error,
                traceback=job.traceback,
                steps_done=len(job.steps),
                attempts=job.attempts,
            )
            jobs.append(entry)
        return {
            "schema": "simfarm.manifest/1",
            "name": self.spec_raw.get("name"),
            "status": self.status,
            "created": self.manifest_extra.get("created"),
            "updated": _now(),
            "finished": self.manifest_extra.get("finished"),
            "session": self.session,
            "spec": self._manifest_spec,
            "seed": self.spec_raw.get("seed", 0),
            "versions": _versions(),
            "host": {"hostname": socket.gethostname(), "platform": platform.platform()},
            "jobs": jobs,
            "renders": sorted(
                (
                    {"key": r.get("key"), "kind": r.get("task"), "job_id": r.get("job_id"),
                     "status": r.get("status"), "error": r.get("error"), "outputs": r.get("outputs", [])}
                    for r in self.renders.values()
                ),
                key=lambda r: str(r["key"]),
            ),
            "timing_columns": self.manifest_extra.get("timing_columns", []),
            "tables": self.manifest_extra.get("tables", {}),
            "stats": {
                "records_committed": self.records_committed,
                "records_dropped": self.records_dropped,
                "ingest_seconds": round(self.ingest_seconds, 6),
            },
        }

    def _write_manifest(self, *, durable: bool = False) -> None:
        """Write manifest.json: compact while the run goes on, indented when it settles.

        The manifest is a view of the journal: renaming it into place keeps
        readers safe; only the settled one (*durable*) is worth an fsync.
        Its jobs' specs were made JSON-safe once (:meth:`_set_jobs`), so the
        running writes skip that walk and use json's C encoder: a 4,000-job
        manifest then takes ~0.03 s instead of ~0.2 s.
        """
        started = time.perf_counter()
        manifest = self._manifest()
        if durable:
            data = dumps_json(manifest, indent=1)
        else:
            try:
                data = dumps_json(manifest, checked=False)
            except ValueError:  # a non-finite float slipped in after all: take the checked path
                data = dumps_json(manifest)
        atomic_write(self.paths.manifest, data, fsync=durable)
        self._manifest_dirty = False
        # Pace the running rewrites so that they cost at most ~5% of this actor's time.
        self._manifest_due = time.monotonic() + max(MANIFEST_INTERVAL, 20 * (time.perf_counter() - started))

    # ------------------------------------------------------------------
    # Leases
    # ------------------------------------------------------------------
    def lease(self, worker: str, kind: str, pid: int, node: str = "") -> dict[str, Any] | None:
        """Give *worker* a job of its *kind*: the one it held (after a restart) or the next pending.

        *pid* and *node* say where the worker runs; the lease's journal entry keeps them.

        Returns:
            ``{job_id, workload, params, job_seed, attempt, checkpoint, step}``
            or None when no job of that kind is left.
        """
        self.worker_pids[worker] = pid
        self.worker_nodes[worker] = node
        held = self.leases.get(worker)
        if held is not None:
            job = self.jobs[held]
            if job.status == "running":
                # The worker process died mid-job and Ray restarted it.
                if job.attempts > self.max_job_restarts:
                    self._fail(
                        job,
                        f"the process running this job died {job.attempts} time(s) "
                        f"(farm.max_job_restarts = {self.max_job_restarts}); the last committed "
                        f"step is {max(job.steps, default=-1)}",
                        None,
                    )
                else:
                    return self._grant(job, worker)
            self.leases.pop(worker, None)
        # Jobs are granted in spec order; the cursor skips the prefix already
        # granted, so a run of n jobs costs O(n) lease scans, not O(n^2).
        for index in range(self._lease_cursor.get(kind, 0), len(self.order)):
            job = self.jobs[self.order[index]]
            if job.status == "pending" and job.kind == kind:
                self._lease_cursor[kind] = index + 1
                return self._grant(job, worker)
        self._lease_cursor[kind] = len(self.order)
        return None

    def _grant(self, job: _Job, worker: str) -> dict[str, Any]:
        attempt = job.attempts
        job.attempts += 1
        job.status, job.worker = "running", worker
        self.leases[worker] = job.job_id
        self._append(
            [{"kind": "lease", "job_id": job.job_id, "worker": worker, "attempt": attempt,
              "session": self.session, "pid": self.worker_pids.get(worker),
              "node": self.worker_nodes.get(worker), "time": round(time.time(), 3)}],
            durable=False,
        )
        self._manifest_dirty = True
        ckpt = read_checkpoint(self.paths.root / RunPaths.checkpoint_rel(job.job_id))
        return {
            "job_id": job.job_id,
            "workload": job.spec["workload"],
            "params": job.spec["params"],
            "job_seed": job.spec["job_seed"],
            "attempt": attempt,
            "checkpoint": ckpt[1] if ckpt else None,
            "step": ckpt[0] + 1 if ckpt else 0,
        }

    def release(self, worker: str) -> None:
        """The driver lost *worker* for good: its job goes back to pending."""
        job_id = self.leases.pop(worker, None)
        if job_id is not None and self.jobs[job_id].status == "running":
            job = self.jobs[job_id]
            job.status, job.worker = "pending", None
            self._lease_cursor.clear()  # an earlier job is pending again
            self._append([{"kind": "job", "job_id": job_id, "event": "released", "worker": worker}])
            self._manifest_dirty = True

    # ------------------------------------------------------------------
    # Commits
    # ------------------------------------------------------------------
    def commit(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Commit a batch of one job's records (plus checkpoint, and done/error).

        Args:
            batch: ``{job_id, worker, records: [Record], checkpoint: bytes | None,
                checkpoint_step: int, done: bool, steps_total: int | None,
                error: str | None, traceback: str | None}``; a done batch says
                how many steps the job ran (``steps_total``).

        Returns:
            ``{"job_id", "committed": n, "dropped": m, "stale": bool}``; stale
            means the job is no longer this worker's (it should stop running it).
        """
        started = time.perf_counter()
        preload_table_libraries()  # the run is under way: load what finish() and job renders need
        job = self.jobs.get(batch["job_id"])
        if job is None or job.status != "running" or job.worker != batch["worker"]:
            self.records_dropped += len(batch["records"])
            return {"job_id": batch["job_id"], "committed": 0, "dropped": len(batch["records"]), "stale": True}
        entries: list[dict[str, Any]] = []
        fresh: list[Record] = []
        for record in batch["records"]:
            if record.step in job.steps:
                self.records_dropped += 1
                continue
            entries.append(self._write_record_files(job, record))
            fresh.append(record)
        done = bool(batch.get("done"))
        error = batch.get("error")
        if done and error is None:
            present = job.steps | {int(e["step"]) for e in entries}
            missing = sorted(set(range(int(batch.get("steps_total") or 0))) - present)
            if missing:
                # Never call a job done with a hole in it.
                error = (f"internal error: steps {missing[:10]} of this job never reached the "
                         "coordinator; rerun it with simfarm run --resume --retry-failed")
        if error is not None:
            entries.append({"kind": "job", "job_id": job.job_id, "event": "failed", "error": error,
                            "traceback": batch.get("traceback")})
        elif done:
            entries.append({"kind": "job", "job_id": job.job_id, "event": "done", "time": round(time.time(), 3)})
        if entries:
            self._append(entries)
        for entry in entries:
            if entry["kind"] == "record":
                job.steps.add(int(entry["step"]))
                job.rows.append(self._row(job, entry))
        checkpoint = batch.get("checkpoint")
        step = int(batch.get("checkpoint_step", -1))
        if checkpoint is not None and step > job.checkpoint_step and error is None:
            header = json.dumps({"job_id": job.job_id, "step": step}).encode()
            atomic_write(
                self.paths.path(RunPaths.checkpoint_rel(job.job_id)),
                CHECKPOINT_MAGIC + header + b"\n" + checkpoint,
                # A finished job is never resumed: its last checkpoint need not survive a power cut.
                fsync=not done,
            )
            job.checkpoint_step = step
        self.records_committed += len(fresh)
        self._rate_window.append((time.time(), self.records_committed))
        for record, entry in zip(fresh, entries, strict=False):  # entries start with fresh's records
            for trace, written in zip(record.traces, entry["traces"], strict=True):
                self._submit_renders("trace", job, trace, self.paths.root / written["trace"])
        if error is not None:
            self._fail(job, error, batch.get("traceback"), journal=False)
        elif done:
            job.status, job.worker = "done", None
            self.leases.pop(batch["worker"], None)
            self._submit_renders("job", job)
            job.rows, job.snapshots = [], []
        self._manifest_dirty = True
        self.ingest_seconds += time.perf_counter() - started
        self._harvest_renders()
        return {"job_id": job.job_id, "committed": len(fresh), "dropped": len(batch["records"]) - len(fresh),
                "stale": False}

    def _write_record_files(self, job: _Job, record: Record) -> dict[str, Any]:
        """Write a record's snapshot and traces; return its journal entry."""
        where = f"job {job.job_id} step {record.step}"
        entry: dict[str, Any] = {
            "kind": "record",
            "job_id": job.job_id,
            "step": int(record.step),
            "metrics": check_metrics(record.metrics, where=where),
            "timings": check_metrics(record.timings, where=where),
            "snapshot": None,
            "traces": [],
        }
        if record.snapshot is not None:
            relative = RunPaths.snapshot_rel(job.job_id, record.step)
            atomic_write(self.paths.path(relative), dumps_json(record.snapshot, indent=1))
            entry["snapshot"] = relative
            job.snapshots.append(json_safe(record.snapshot))
        for trace in record.traces:
            relative = RunPaths.trace_rel(job.job_id, int(trace.episode))
            buffer = _npz_bytes(trace.to_npz_arrays())
            atomic_write(self.paths.path(relative), buffer)
            summary = trace.summary()
            summary["trace"] = relative
            entry["traces"].append(summary)
        return entry

    def _row(self, job: _Job, entry: dict[str, Any]) -> dict[str, Any]:
        job.timing_keys.update(entry.get("timings", {}))
        row = {"job_id": job.job_id, "step": entry["step"]}
        row.update(entry.get("metrics", {}))
        row.update(entry.get("timings", {}))
        return row

    def _fail(self, job: _Job, error: str, tb: str | None, *, journal: bool = True) -> None:
        if journal:
            self._append([{"kind": "job", "job_id": job.job_id, "event": "failed", "error": error,
                           "traceback": tb}])
        if job.worker is not None:
            self.leases.pop(job.worker, None)
        job.status, job.worker, job.error, job.traceback = "failed", None, error, tb
        job.rows, job.snapshots = [], []
        self._manifest_dirty = True

    # ------------------------------------------------------------------
    # Progress, finish
    # ------------------------------------------------------------------
    def poll(self) -> dict[str, Any]:
        """Progress figures for the driver; also writes a dirty manifest and collects renders."""
        self._harvest_renders()
        if self._manifest_dirty and time.monotonic() >= self._manifest_due:
            self._write_manifest()
        counts = {"pending": 0, "running": 0, "done": 0, "failed": 0}
        pending_by_kind: dict[str, int] = {}
        running_by_kind: dict[str, int] = {}
        steps_total: int | None = 0
        for job in self.jobs.values():
            counts[job.status] += 1
            if job.status == "pending":
                pending_by_kind[job.kind] = pending_by_kind.get(job.kind, 0) + 1
            elif job.status == "running":
                running_by_kind[job.kind] = running_by_kind.get(job.kind, 0) + 1
            n_steps = job.spec.get("n_steps")
            if steps_total is not None:
                steps_total = None if n_steps is None else steps_total + int(n_steps)
        rate = 0.0
        if len(self._rate_window) >= 2:
            (t0, n0), (t1, n1) = self._rate_window[0], self._rate_window[-1]
            if t1 > t0:
                rate = (n1 - n0) / (t1 - t0)
        remaining_steps = None
        if steps_total is not None:
            remaining_steps = sum(
                max(0, int(j.spec["n_steps"]) - len(j.steps))
                for j in self.jobs.values()
                if j.status in ("pending", "running")
            )
        return {
            "jobs": len(self.jobs),
            **counts,
            "pending_by_kind": pending_by_kind,
            "running_by_kind": running_by_kind,
            "records": self.records_committed,
            "dropped": self.records_dropped,
            "steps_per_s": rate,
            "steps_total": steps_total,
            "steps_remaining": remaining_steps,
            "renders_pending": self._render_pool.pending() if self._render_pool else 0,
            "ingest_seconds": self.ingest_seconds,
            "elapsed": time.time() - self.started,
        }

    def worker_pid_map(self) -> dict[str, int]:
        """``worker key -> pid`` of every worker that leased a job (for tests and tools)."""
        return dict(self.worker_pids)

    def leased_jobs(self) -> dict[str, str]:
        """``worker key -> job id`` currently leased."""
        return dict(self.leases)

    def pid(self) -> int:
        """This actor's process id."""
        return os.getpid()

    def finish(self, interrupted: bool = False) -> dict[str, Any]:
        """Write the tables, run the remaining renders and the report, settle the manifest.

        Args:
            interrupted: The driver stops early (Ctrl-C); the run can be resumed.

        Returns:
            The final progress figures plus ``status``.
        """
        entries, _ = read_journal(self.paths.journal)
        jobs_json = self._manifest()["jobs"]
        tables, timing_columns = build_tables(jobs_json, entries)
        counts: dict[str, int] = {}
        for name, frame in tables.items():
            path = self.paths.table(name)
            counts[name] = len(frame)
            if len(frame):
                atomic_write(path, table_to_parquet_bytes(frame, timing_columns))
            else:
                path.unlink(missing_ok=True)
        self.manifest_extra["timing_columns"] = timing_columns
        self.manifest_extra["tables"] = counts
        open_jobs = [j for j in self.jobs.values() if j.status in ("pending", "running")]
        if interrupted or open_jobs:
            self.status = "interrupted"
        else:
            self.status = "failed" if any(j.status == "failed" for j in self.jobs.values()) else "done"
            self.manifest_extra["finished"] = _now()
        self._append([{"kind": "run", "event": "finish", "status": self.status, "time": _now()}])
        self._write_manifest(durable=True)
        if self.status != "interrupted":
            self._finish_renders(tables)
        self._write_manifest(durable=True)
        if self._render_pool is not None:
            self._render_pool.shutdown()
            self._render_pool = None
        result = self.poll()
        result["status"] = self.status
        return result

    # ------------------------------------------------------------------
    # Renders
    # ------------------------------------------------------------------
    def _render_setup(self) -> Any:
        """The render options, creating the RenderWorker pool on first use (None = rendering off)."""
        from simfarm.render.options import RenderOptions, rendering_on  # light: no pandas

        if self._render_options is None:
            self._render_options = RenderOptions(**self.options.get("render", {}))
        opts = self._render_options
        if not rendering_on(opts):
            return None
        if self._render_pool is None:
            from simfarm.farm.renderers import RenderPool

            self._render_pool = RenderPool(int(opts.workers))
        return opts

    def _submit_renders(
        self, event: str, job: _Job, trace: EpisodeTrace | None = None, trace_file: Path | None = None
    ) -> None:
        """Queue the live render tasks for a committed trace or a finished job."""
        try:
            opts = self._render_setup()
            if opts is None:
                return
            from simfarm.render import tasks as render_tasks

            if event == "trace":
                assert trace is not None and trace_file is not None
                # The trace is on disk already (trace_file): render actors read
                # it there instead of this actor shipping its frames.
                new = render_tasks.stored_trace_tasks(
                    job.job_id, trace_file, opts, summary=trace.summary(), metadata=trace.metadata
                )
            else:
                import pandas as pd

                new = render_tasks.job_tasks(
                    self._job_entry(job), pd.DataFrame(job.rows), list(job.snapshots), opts,
                    timing_columns=sorted(job.timing_keys),
                )
            for task in new:
                if self.renders.get(task.key, {}).get("status") != "done":
                    self._render_pool.submit(task)
        except Exception as exc:  # a render problem never fails the simulation
            self._record_render(
                {"key": f"{job.job_id}/{event}-plan", "task": "plan", "job_id": job.job_id},
                None, f"{type(exc).__name__}: {exc}",
            )

    def _job_entry(self, job: _Job) -> dict[str, Any]:
        entry = dict(job.spec)
        entry.update(status=job.status, error=job.error, steps_done=len(job.steps), attempts=job.attempts)
        return entry

    def _harvest_renders(self, results: list[Any] | None = None) -> None:
        if self._render_pool is None and results is None:
            return
        for task, outputs, error in results if results is not None else self._render_pool.ready(0.0):
            self._record_render(
                {"key": task.key, "task": task.kind, "job_id": task.job_id}, outputs, error
            )

    def _record_render(self, meta: dict[str, Any], outputs: dict[str, bytes] | None, error: str | None) -> None:
        written: list[str] = []
        if outputs:
            from simfarm.render.rundir import write_outputs

            try:
                written = write_outputs(self.paths.root, dict(sorted(outputs.items())))
            except (OSError, ValueError) as exc:
                error = f"{type(exc).__name__}: {exc}"
        entry = {"kind": "render", "key": meta["key"], "task": meta["task"], "job_id": meta["job_id"],
                 "status": "failed" if error else "done", "error": error, "outputs": written}
        self.renders[str(meta["key"])] = entry
        self._append([entry], durable=False)
        self._manifest_dirty = True

    def _finish_renders(self, tables: dict[str, Any]) -> None:
        """Renders still missing (e.g. after a restart), sweep curves, then the report."""
        try:
            opts = self._render_setup()
            if opts is None:
                return
            from simfarm.render.rundir import list_artifacts, run_dir_tasks
            from simfarm.render.tasks import report_task

            limit = 2 * max(1, self._render_pool.n_workers)
            for task in run_dir_tasks(self.paths.root, opts, manifest=self._manifest(), tables=tables):
                if self.renders.get(task.key, {}).get("status") == "done":
                    continue  # rendered live already
                self._render_pool.submit(task)
                while self._render_pool.pending() >= limit:  # bounded: job tasks carry their rows
                    self._harvest_renders(self._render_pool.ready(timeout=0.5))
            self._harvest_renders(self._render_pool.drain())
            if opts.report:
                artifacts = list_artifacts(self.paths.root)
                self._render_pool.submit(report_task(self._manifest(), tables, artifacts, opts))
                self._harvest_renders(self._render_pool.drain())
        except Exception as exc:  # never fail the run over pictures
            self._record_render(
                {"key": "run/finish-plan", "task": "plan", "job_id": None}, None,
                f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=5)}",
            )


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    import io

    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _versions() -> dict[str, str]:
    versions = {"simfarm": __version__, "python": sys.version.split()[0], "ray": ray.__version__,
                "numpy": np.__version__}
    for name in ("pandas", "pyarrow", "torch"):
        module = sys.modules.get(name)
        if module is not None:
            versions[name] = getattr(module, "__version__", "?")
    return versions
