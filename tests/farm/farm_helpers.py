"""Helpers for the farm tests: find live actors, kill processes, compare tables."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd


def coordinator_handle(timeout: float = 60.0) -> Any:
    """The live run's Coordinator actor (the only named actor in namespace 'simfarm')."""
    import ray

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        names = [a for a in ray.util.list_named_actors(all_namespaces=True) if a["namespace"] == "simfarm"]
        for actor in names:
            try:
                return ray.get_actor(actor["name"], namespace="simfarm")
            except ValueError:
                continue
        time.sleep(0.05)
    raise TimeoutError("no coordinator appeared")


def journal(run_dir: Path, kind: str | None = None) -> list[dict[str, Any]]:
    """Complete journal entries so far (optionally of one kind)."""
    from simfarm.store import read_journal

    entries, _ = read_journal(run_dir / "journal.jsonl")
    return [e for e in entries if kind is None or e.get("kind") == kind]


def committed_records(run_dir: Path) -> int:
    """Record lines in the journal so far."""
    return len(journal(run_dir, "record"))


def journal_keys(run_dir: Path) -> list[tuple[str, int]]:
    """(job, step) of every record line in the journal."""
    return [(e["job_id"], e["step"]) for e in journal(run_dir, "record")]


def assert_no_duplicates(run_dir: Path) -> None:
    counts = Counter(journal_keys(run_dir))
    dupes = {k: n for k, n in counts.items() if n > 1}
    assert not dupes, f"(job, step) committed more than once: {dupes}"


def comparable(frame: pd.DataFrame, timing_columns: list[str]) -> pd.DataFrame:
    """The table without its wall-clock columns, index reset."""
    return frame.drop(columns=[c for c in timing_columns if c in frame.columns]).reset_index(drop=True)


def assert_same_tables(a: Any, b: Any) -> None:
    """Every table of two RunResults is identical except the timing columns."""
    timing = sorted(set(a.timing_columns) | set(b.timing_columns))
    for name in ("rounds", "iterations", "steps", "episodes"):
        left, right = comparable(getattr(a, name), timing), comparable(getattr(b, name), timing)
        pd.testing.assert_frame_equal(left, right, check_dtype=True, obj=name)


class Killer(threading.Thread):
    """SIGKILLs worker processes of the live run at random moments.

    Waits until the journal holds ``after`` records, then kills a random
    leased worker ``times`` times, ``gap`` seconds apart.
    """

    def __init__(self, run_dir_glob: Path, *, times: int, after: int = 3, gap: float = 0.6,
                 seed: int = 0, target: str = "worker") -> None:
        super().__init__(daemon=True)
        self.run_root = run_dir_glob
        self.times = times
        self.after = after
        self.gap = gap
        self.rng = random.Random(seed)
        self.target = target
        self.killed: list[int] = []
        self.error: BaseException | None = None

    def _run_dir(self) -> Path | None:
        dirs = [p for p in self.run_root.glob("*") if (p / "journal.jsonl").exists()]
        return dirs[0] if dirs else None

    def run(self) -> None:
        import ray

        try:
            coordinator = coordinator_handle()
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                run_dir = self._run_dir()
                if run_dir is not None and committed_records(run_dir) >= self.after:
                    break
                time.sleep(0.02)
            for _ in range(self.times):
                if self.target == "coordinator":
                    pid = ray.get(coordinator.pid.remote())
                else:
                    leases = ray.get(coordinator.leased_jobs.remote())
                    pids = ray.get(coordinator.worker_pid_map.remote())
                    candidates = sorted(pids[k] for k in leases if k in pids)
                    if not candidates:
                        time.sleep(0.1)
                        continue
                    pid = self.rng.choice(candidates)
                try:
                    os.kill(pid, signal.SIGKILL)
                    self.killed.append(pid)
                except ProcessLookupError:
                    pass
                time.sleep(self.gap * (0.5 + self.rng.random()))
        except BaseException as exc:  # surfaced by the test
            self.error = exc
