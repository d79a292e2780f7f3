"""The run directory: layout, atomic writes, the journal, tidy tables, ``open_run``.

Layout (see docs/run-directory.md)::

    <out>/<run-name>/
      manifest.json       spec, versions, host, status, per-job status and errors
      journal.jsonl       one line per committed record or job event (append + fsync)
      rounds.parquet      experiment rounds      } every table: job_id, config_id,
      iterations.parquet  rollout iterations     } step, seed, the job's params,
      steps.parquet       any other workload     } metrics, timings
      episodes.parquet    one row per captured episode
      snapshots/<job>/round-NNN.json
      traces/<job>/episode-NNNNN.npz
      checkpoints/<job>.bin
      artifacts/...       GIF, MP4, PNG, SVG, JSON
      report.html

Only the coordinator (or the ``simfarm render`` process, when no run is
live) writes here, always to a temporary name first and then renaming.
Reading never unpickles: JSON, Parquet and ``np.load(allow_pickle=False)``.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import sys
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from simfarm.errors import RunDirError
from simfarm.records import EpisodeTrace, json_safe

if TYPE_CHECKING:
    import pandas as pd

# pandas is imported where tables are built, not here: the coordinator loads
# this module on its start-up path and needs pandas only when the run ends.

__all__ = [
    "MANIFEST",
    "JOURNAL",
    "TABLE_FILES",
    "RunPaths",
    "RunResult",
    "atomic_write",
    "build_tables",
    "is_live",
    "load_trace",
    "preload_table_libraries",
    "read_trace_meta",
    "open_run",
    "read_journal",
    "read_manifest",
    "read_snapshots",
    "safe_path",
    "trace_paths",
]

MANIFEST = "manifest.json"
JOURNAL = "journal.jsonl"
TABLE_FILES = {
    "rounds": "rounds.parquet",
    "iterations": "iterations.parquet",
    "steps": "steps.parquet",
    "episodes": "episodes.parquet",
}
#: Columns every table starts with, in this order.
KEY_COLUMNS = ("job_id", "config_id", "step", "seed")
_SAFE_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")
_tmp_counter = itertools.count()


# ---------------------------------------------------------------------------
# Paths and atomic writes
# ---------------------------------------------------------------------------
def safe_path(root: Path, relative: str) -> Path:
    """Resolve *relative* under *root*, refusing anything that could escape it.

    Each part must be a plain name (letters, digits, ``._-``, not starting
    with a dot), so ``..``, absolute paths, ``~`` and hidden files are refused
    whatever a spec or a render task holds.

    Raises:
        ValueError: When *relative* is not a safe relative path.
    """
    parts = relative.split("/")
    if not relative or any(not _SAFE_PART.match(p) for p in parts):
        raise ValueError(
            f"refusing to write {relative!r}: run-directory paths must be relative and made of "
            "plain names (letters, digits, '.', '_', '-')"
        )
    path = root.joinpath(*parts)
    root_resolved = root.resolve()
    if root_resolved not in path.resolve().parents:
        raise ValueError(f"refusing to write {relative!r}: it resolves outside the run directory")
    return path


def atomic_write(path: Path, data: bytes, *, fsync: bool = True) -> None:
    """Write *data* to a temporary file beside *path*, then rename it into place.

    A reader sees the old file or the new one, never a half-written one; with
    *fsync* the bytes are on disk before the rename makes them visible.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{next(_tmp_counter)}.tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            if fsync:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


_preloading = False


def preload_table_libraries() -> None:
    """Import pandas and pyarrow in a background thread, once per process.

    The coordinator needs them to write the tables when the run ends and
    the driver to read them back; imported only then, they add ~0.3 s to
    the end of every run (and stall the coordinator when its first finished
    job needs pandas for render tasks). Both processes mostly wait while the
    run goes on, so the import overlaps the simulation; Python switches
    threads every few milliseconds, so requests are not held up. Call it
    once the run is under way: at the very start the cores are busy
    starting actor processes.
    """
    global _preloading
    if _preloading or "pyarrow.parquet" in sys.modules:
        return
    _preloading = True

    def load() -> None:
        try:
            import pandas  # noqa: F401
            import pyarrow.parquet  # noqa: F401
        except Exception:  # noqa: BLE001 - only a warm-up: the real import reports problems
            pass

    threading.Thread(target=load, name="simfarm-preload", daemon=True).start()


def dumps_json(obj: Any, *, indent: int | None = None, checked: bool = True) -> bytes:
    """Strict JSON bytes; compact unless *indent*.

    Args:
        obj: JSON-able data (numpy scalars and arrays are converted).
        indent: Pretty-print with this indent (slower: Python's encoder).
        checked: Replace non-finite floats with null first (a walk over
            *obj*); with False the caller vouches there are none.

    Raises:
        ValueError: With ``checked=False``, when *obj* holds a non-finite float.
    """
    separators = (",", ":") if indent is None else None
    return json.dumps(
        json_safe(obj) if checked else obj, indent=indent, separators=separators, allow_nan=False,
        default=_json_default,
    ).encode()


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


@dataclass(frozen=True)
class RunPaths:
    """Where each part of a run directory lives."""

    root: Path

    @property
    def manifest(self) -> Path:
        return self.root / MANIFEST

    @property
    def journal(self) -> Path:
        return self.root / JOURNAL

    def table(self, name: str) -> Path:
        return self.root / TABLE_FILES[name]

    @staticmethod
    def snapshot_rel(job_id: str, step: int) -> str:
        return f"snapshots/{job_id}/round-{step:03d}.json"

    @staticmethod
    def trace_rel(job_id: str, episode: int) -> str:
        return f"traces/{job_id}/episode-{episode:05d}.npz"

    @staticmethod
    def checkpoint_rel(job_id: str) -> str:
        return f"checkpoints/{job_id}.bin"

    def path(self, relative: str) -> Path:
        """:func:`safe_path` under this run directory."""
        return safe_path(self.root, relative)


# ---------------------------------------------------------------------------
# Journal
# ---------------------------------------------------------------------------
def read_journal(path: Path) -> tuple[list[dict[str, Any]], int]:
    """Read every complete line of a journal.

    A crash can leave a torn last line; it is ignored.

    Returns:
        ``(entries, valid_bytes)``: the parsed lines and the length of the
        prefix they occupy (truncate to it before appending again).
    """
    if not path.exists():
        return [], 0
    data = path.read_bytes()
    entries: list[dict[str, Any]] = []
    valid = 0
    start = 0
    while True:
        end = data.find(b"\n", start)
        if end < 0:
            break
        line = data[start:end]
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a torn line can only be the last one written
        valid = end + 1
        start = end + 1
    return entries, valid


# ---------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------
def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested tables become dotted columns; lists become JSON text."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten_params(value, name + "."))
        elif isinstance(value, list | tuple):
            out[name] = json.dumps(value)
        else:
            out[name] = value
    return out


def build_tables(
    jobs: Sequence[Mapping[str, Any]], entries: Iterable[Mapping[str, Any]]
) -> tuple[dict[str, pd.DataFrame], list[str]]:
    """Tidy tables from the manifest's jobs and journal ``record`` entries.

    Rows are ordered by job (spec order) then step, so the tables do not
    depend on which worker ran what or in which order records arrived.
    Columns: ``job_id, config_id, step, seed``, the job's params, its metrics,
    its timings. A param whose name collides with a metric is renamed
    ``param.<name>``.

    Returns:
        ``(tables, timing_columns)``: DataFrames for rounds, iterations,
        steps and episodes (empty ones included), and the timing column names.
    """
    order = {job["job_id"]: i for i, job in enumerate(jobs)}
    by_id = {job["job_id"]: job for job in jobs}
    rows: dict[str, list[tuple[int, int, int, dict[str, Any]]]] = {name: [] for name in TABLE_FILES}
    timing_columns: set[str] = set()
    params_cache: dict[str, dict[str, Any]] = {}
    for entry in entries:
        if entry.get("kind") != "record":
            continue
        job = by_id.get(entry["job_id"])
        if job is None:
            continue
        job_id = job["job_id"]
        if job_id not in params_cache:
            params_cache[job_id] = flatten_params(job.get("params", {}))
        params = params_cache[job_id]
        metrics = entry.get("metrics", {})
        timings = entry.get("timings", {})
        timing_columns.update(timings)
        base: dict[str, Any] = {
            "job_id": job_id,
            "config_id": job.get("config_id"),
            "step": int(entry["step"]),
            "seed": job.get("seed"),
        }
        for key, value in params.items():
            column = f"param.{key}" if key in metrics or key in timings or key in base else key
            base[column] = value
        row = dict(base)
        row.update(metrics)
        row.update(timings)
        rows[job.get("table", "steps")].append((order[job_id], int(entry["step"]), 0, row))
        for n, trace in enumerate(entry.get("traces") or ()):
            episode_row = dict(base)
            episode_row.update(trace)
            rows["episodes"].append((order[job_id], int(entry["step"]), n, episode_row))
    tables = {}
    for name, items in rows.items():
        items.sort(key=lambda item: item[:3])
        tables[name] = _frame([row for *_, row in items])
    return tables, sorted(timing_columns)


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    import pandas as pd

    if not rows:
        return pd.DataFrame(columns=list(KEY_COLUMNS))
    frame = pd.DataFrame.from_records(rows)
    for column in frame.columns:
        series = frame[column]
        if series.dtype == object:
            kinds = {type(v) for v in series if v is not None and not _is_nan(v)}
            if len(kinds) > 1:
                # Parquet needs one type per column: mixed params become text.
                frame[column] = series.map(lambda v: None if v is None else str(v))
    return frame


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def table_to_parquet_bytes(frame: pd.DataFrame, timing_columns: Sequence[str]) -> bytes:
    """Parquet bytes of *frame*, with the timing column names in the schema metadata."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame, preserve_index=False)
    metadata = dict(table.schema.metadata or {})
    metadata[b"simfarm.timing_columns"] = json.dumps(
        [c for c in timing_columns if c in frame.columns]
    ).encode()
    table = table.replace_schema_metadata(metadata)
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


# ---------------------------------------------------------------------------
# Reading a run back
# ---------------------------------------------------------------------------
def read_manifest(run_dir: str | Path) -> dict[str, Any]:
    """The parsed manifest of a run directory.

    Raises:
        RunDirError: When *run_dir* is not a simfarm run directory.
    """
    root = Path(run_dir)
    path = root / MANIFEST
    if not root.is_dir():
        raise RunDirError(f"{str(root)!r} is not a directory; give the path of a simfarm run directory")
    if not path.is_file():
        raise RunDirError(
            f"{str(root)!r} has no {MANIFEST}; it is not a simfarm run directory "
            "(the path `simfarm run` printed last)"
        )
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise RunDirError(f"{str(path)!r} cannot be read as JSON: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("schema") != "simfarm.manifest/1":
        raise RunDirError(f"{str(path)!r} is not a simfarm manifest (schema simfarm.manifest/1)")
    return manifest


@dataclass
class RunResult:
    """A run's results, read from its directory.

    Attributes:
        run_dir: The run directory.
        manifest: The parsed manifest.json.
        rounds: Experiment rounds (one row per round).
        iterations: Rollout iterations.
        steps: Steps of any other workload.
        episodes: Captured episodes (one row each; ``trace`` is its .npz path).
        jobs: One row per job: id, workload, config, seed, status, error, steps.
        failed: ``job_id -> error text`` for failed jobs.
        artifacts: Every rendered file (artifacts/ and report.html).
        timing_columns: Columns that hold wall-clock figures (differ between reruns).
    """

    run_dir: Path
    manifest: dict[str, Any]
    rounds: pd.DataFrame
    iterations: pd.DataFrame
    steps: pd.DataFrame
    episodes: pd.DataFrame
    jobs: pd.DataFrame
    failed: dict[str, str]
    artifacts: list[Path]
    timing_columns: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        """``running``, ``done``, ``failed`` or ``interrupted``."""
        return str(self.manifest.get("status"))

    @property
    def ok(self) -> bool:
        """True when every job is done."""
        return self.status == "done" and not self.failed

    def tables(self) -> dict[str, pd.DataFrame]:
        """The four tidy tables by name."""
        return {
            "rounds": self.rounds,
            "iterations": self.iterations,
            "steps": self.steps,
            "episodes": self.episodes,
        }

    def load_trace(self, row: Mapping[str, Any] | str) -> EpisodeTrace:
        """Load an episode trace from an ``episodes`` row (or its ``trace`` path)."""
        relative = row if isinstance(row, str) else str(row["trace"])
        return load_trace(safe_path(self.run_dir, relative))

    def load_snapshots(self, job_id: str) -> list[dict[str, Any]]:
        """An experiment job's round snapshots, oldest first."""
        return read_snapshots(self.run_dir, job_id)

    def __repr__(self) -> str:
        counts = ", ".join(f"{name}={len(frame)}" for name, frame in self.tables().items())
        return (
            f"RunResult({str(self.run_dir)!r}, status={self.status!r}, jobs={len(self.jobs)}, "
            f"failed={len(self.failed)}, {counts}, artifacts={len(self.artifacts)})"
        )


def load_trace(path: str | Path) -> EpisodeTrace:
    """An :class:`EpisodeTrace` from its ``.npz`` file (never unpickles)."""
    with np.load(path, allow_pickle=False) as arrays:
        return EpisodeTrace.from_npz_arrays(arrays)


def read_trace_meta(path: str | Path) -> dict[str, Any]:
    """A stored trace's scalar fields and metadata (its ``meta`` member) without reading its frames.

    Returns:
        :meth:`EpisodeTrace.summary` keys plus ``metadata``.
    """
    with np.load(path, allow_pickle=False) as arrays:
        return EpisodeTrace.meta_from_npz_arrays(arrays)


def read_snapshots(run_dir: str | Path, job_id: str) -> list[dict[str, Any]]:
    """The round snapshots of *job_id* (``snapshots/<job>/round-NNN.json``), oldest first."""
    folder = safe_path(Path(run_dir), f"snapshots/{job_id}")
    if not folder.is_dir():
        return []
    return [json.loads(p.read_text()) for p in sorted(folder.glob("round-*.json"))]


def trace_paths(run_dir: str | Path, job_id: str) -> list[Path]:
    """The ``.npz`` files of *job_id*'s captured episodes, in episode order."""
    return sorted(safe_path(Path(run_dir), f"traces/{job_id}").glob("episode-*.npz"))


def is_live(run_dir: str | Path) -> bool:
    """Whether a coordinator process holds the run directory's lock right now.

    Reads only: the lock file is opened read-only and never created.
    """
    import fcntl

    try:
        handle = open(Path(run_dir) / ".lock")  # noqa: SIM115 - closed below
    except OSError:
        return False
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        handle.close()
    return False


def open_run(path: str | Path) -> RunResult:
    """Read a run directory (finished, interrupted or still running).

    A finished run is read from its Parquet tables; an unfinished one is
    rebuilt from its journal. Nothing is unpickled.

    Raises:
        RunDirError: When *path* is not a simfarm run directory.
    """
    import pandas as pd

    root = Path(path)
    manifest = read_manifest(root)
    jobs = manifest.get("jobs", [])
    finished = manifest.get("status") in ("done", "failed") and manifest.get("finished")
    tables: dict[str, pd.DataFrame]
    if finished:
        import pyarrow.parquet as pq

        tables = {}
        timing: set[str] = set()
        for name, filename in TABLE_FILES.items():
            file = root / filename
            if file.exists():
                table = pq.read_table(file)
                meta = (table.schema.metadata or {}).get(b"simfarm.timing_columns")
                if meta:
                    timing.update(json.loads(meta))
                tables[name] = table.to_pandas()
            else:
                tables[name] = pd.DataFrame(columns=list(KEY_COLUMNS))
        timing_columns = sorted(timing | set(manifest.get("timing_columns", [])))
    else:
        entries, _ = read_journal(root / JOURNAL)
        tables, timing_columns = build_tables(jobs, entries)
    job_rows = [
        {
            "job_id": j["job_id"],
            "workload": j.get("workload"),
            "config_id": j.get("config_id"),
            "config": j.get("config"),
            "seed": j.get("seed"),
            "status": j.get("status"),
            "error": j.get("error"),
            "steps_done": j.get("steps_done", 0),
            "n_steps": j.get("n_steps"),
            "attempts": j.get("attempts", 0),
        }
        for j in jobs
    ]
    artifacts = sorted(p for p in (root / "artifacts").rglob("*") if p.is_file() and not p.name.startswith("."))
    if (root / "report.html").is_file():
        artifacts.append(root / "report.html")
    return RunResult(
        run_dir=root,
        manifest=manifest,
        rounds=tables["rounds"],
        iterations=tables["iterations"],
        steps=tables["steps"],
        episodes=tables["episodes"],
        jobs=pd.DataFrame(job_rows, columns=[
            "job_id", "workload", "config_id", "config", "seed", "status", "error",
            "steps_done", "n_steps", "attempts",
        ]),
        failed={j["job_id"]: str(j.get("error")) for j in jobs if j.get("status") == "failed"},
        artifacts=artifacts,
        timing_columns=timing_columns,
    )
