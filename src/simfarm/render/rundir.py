"""Render tasks from a stored run directory, and writing their outputs back.

``simfarm render RUN_DIR`` regenerates artifacts from what a run left on
disk (manifest, tables, snapshots, traces). This module reads those files
into the plain inputs the task builders of :mod:`simfarm.render.tasks`
take, lazily (traces as file references the render process reads), and writes task outputs atomically
(temporary name, then rename) after checking their paths. Re-rendering is
idempotent: the same inputs give the same bytes.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from simfarm.render.paths import check_output_path
from simfarm.store import (
    TABLE_FILES,
    atomic_write,
    load_trace,
    open_run,
    read_manifest,
    read_snapshots,
    safe_path,
    trace_paths,
)
from simfarm.render.tasks import RenderOptions, RenderTask, job_tasks, stored_trace_tasks, sweep_tasks

__all__ = [
    "TABLES",
    "list_artifacts",
    "load_trace",
    "merge_renders",
    "read_manifest",
    "read_snapshots",
    "read_tables",
    "run_dir_tasks",
    "write_outputs",
]

#: Tables a run directory may hold (``<name>.parquet``).
TABLES = tuple(TABLE_FILES)


def read_tables(run_dir: str | Path) -> dict[str, pd.DataFrame]:
    """The run's four tables (empty ones included), as :func:`simfarm.store.open_run` reads them.

    Works for finished runs (Parquet) and unfinished ones (rebuilt from the journal).
    """
    return open_run(run_dir).tables()


def list_artifacts(run_dir: str | Path) -> list[str]:
    """Relative paths (POSIX) of every file under ``artifacts/``, sorted."""
    root = Path(run_dir)
    folder = root / "artifacts"
    if not folder.exists():
        return []
    return sorted(p.relative_to(root).as_posix() for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))


def run_dir_tasks(run_dir: str | Path, options: RenderOptions, *, manifest: Mapping[str, Any] | None = None,
                  tables: Mapping[str, pd.DataFrame] | None = None) -> Iterator[RenderTask]:
    """Every render task of a stored run except the report, lazily.

    Order: per job its episode traces (as file references: render processes
    read the frames), then its
    evolution GIF and curves; finally the sweep-level curves.

    Args:
        run_dir: The run directory.
        options: Render options (e.g. from :func:`~simfarm.render.tasks.options_for_only`).
        manifest: Already-read manifest (read when None).
        tables: Already-read tables (read when None).
    """
    root = Path(run_dir)
    manifest = read_manifest(root) if manifest is None else manifest
    tables = read_tables(root) if tables is None else tables
    timing = manifest.get("timing_columns", [])
    for job in manifest.get("jobs", []):
        job_id = str(job["job_id"])
        if options.episode_gifs or options.mp4:
            for path in trace_paths(root, job_id):
                yield from stored_trace_tasks(job_id, path, options)
        rows = tables.get(str(job.get("table", "steps")))
        job_rows = rows[rows["job_id"] == job_id] if rows is not None and "job_id" in rows.columns else pd.DataFrame()
        snapshots = read_snapshots(root, job_id) if options.gifs else []
        yield from job_tasks(job, job_rows, snapshots, options, timing_columns=timing)
    yield from sweep_tasks(manifest, tables, options)


def write_outputs(run_dir: str | Path, outputs: Mapping[str, bytes]) -> list[str]:
    """Write render outputs under *run_dir*, each atomically; return their paths.

    A file whose content is already the same is left untouched (keeps
    modification times stable on re-render).

    Raises:
        ValueError: For a path outside ``artifacts/`` / ``report.html``.
    """
    root = Path(run_dir)
    written = []
    for rel, data in outputs.items():
        target = safe_path(root, check_output_path(rel))
        if not (target.exists() and target.stat().st_size == len(data) and target.read_bytes() == data):
            atomic_write(target, data, fsync=False)  # pictures can be re-rendered after a power cut
        written.append(rel)
    return written


def merge_renders(existing: Sequence[Mapping[str, Any]], new: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The manifest's ``renders`` list with *new* entries replacing those of the same key."""
    merged = {str(e.get("key")): dict(e) for e in existing}
    for entry in new:
        merged[str(entry.get("key"))] = dict(entry)
    return list(merged.values())
