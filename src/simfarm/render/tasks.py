"""Render tasks: self-contained render jobs whose result is file bytes.

The farm's coordinator never renders; it builds :class:`RenderTask` s from
plain data (a committed trace, a finished job's rows and snapshots, the
run's tables) and hands them to render actors, which run :func:`run_task`
and return ``{relative path: bytes}``. The coordinator (or the
``simfarm render`` process) is the single writer of the run directory.
A task carries its inputs as data, with one exception: an episode trace
already stored in the run directory travels as its file's path and size
(:func:`stored_trace_tasks`), because shipping 50 MB of frames through
Ray's object store costs the sender about as much CPU as drawing the GIF.
The render process reads such a file itself (never unpickling it); where
it cannot (another node, no shared file system) it raises
:class:`TraceFileUnavailable` and the pool sends the frames instead.

Output paths are relative: ``artifacts/<job_id>/<file>``,
``artifacts/sweep/<file>`` or ``report.html``. They are built only from
job ids (reduced to safe characters), integers and fixed words, and
:func:`run_task` refuses any other path.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from simfarm.errors import SpecError
from simfarm.records import EpisodeTrace
from simfarm.render.options import ONLY_CHOICES, RenderOptions, options_for_only, validate_render
from simfarm.render.paths import artifact_path, check_output_path, safe_component

__all__ = [
    "ONLY_CHOICES",
    "RENDER_KINDS",
    "RenderOptions",
    "RenderTask",
    "check_output_path",
    "job_tasks",
    "options_for_only",
    "report_task",
    "run_task",
    "safe_component",
    "stored_trace_tasks",
    "sweep_tasks",
    "trace_tasks",
    "TraceFileUnavailable",
    "validate_render",
]

#: Every task kind :func:`run_task` knows.
RENDER_KINDS = ("episode_gif", "episode_mp4", "evolution_gif", "job_curves", "sweep_curves", "report")
#: Columns every tidy table has; they are never plotted as metrics.
ID_COLUMNS = ("job_id", "config_id", "step", "seed")
#: Most panels a generic (``steps`` table) curve figure gets.
MAX_GENERIC_PANELS = 12


@dataclass
class RenderTask:
    """One render job.

    Attributes:
        kind: One of :data:`RENDER_KINDS`.
        key: Unique and stable (``"rollout-0001/episode-00012"``); recorded
            in the manifest's ``renders``.
        job_id: The job it belongs to (None for run-level tasks).
        inputs: Plain data: dicts, lists, numpy arrays, DataFrames, EpisodeTrace.
        options: The run's render options.
    """

    kind: str
    key: str
    job_id: str | None
    inputs: dict[str, Any] = field(default_factory=dict)
    options: RenderOptions = field(default_factory=RenderOptions)


# ---------------------------------------------------------------------------
# Builders: what to render, from plain data
# ---------------------------------------------------------------------------
def trace_tasks(job_id: str, trace: EpisodeTrace, options: RenderOptions) -> list[RenderTask]:
    """Tasks for one committed episode trace: its GIF (+JSON) and, with
    ``options.mp4``, its MP4. The tasks carry the trace's frames.

    Returns:
        Zero, one or two tasks, keyed ``<job_id>/episode-NNNNN[/mp4]``.
    """
    return _episode_tasks(job_id, trace.summary(), trace.metadata, {"trace": trace}, options)


def stored_trace_tasks(job_id: str, path: str | Path, options: RenderOptions, *,
                       summary: Mapping[str, Any] | None = None,
                       metadata: Mapping[str, Any] | None = None) -> list[RenderTask]:
    """Like :func:`trace_tasks` for a trace stored as ``.npz``, read by the render process.

    The tasks carry the file's absolute path and size instead of its frames;
    :func:`run_task` loads the file (``allow_pickle=False``) and raises
    :class:`TraceFileUnavailable` when it is missing or has another size.

    Args:
        job_id: The trace's job.
        path: The ``.npz`` file (as the store writes it).
        options: Render options.
        summary, metadata: The trace's :meth:`~EpisodeTrace.summary` and
            metadata when the caller has them; else read from the file's
            small ``meta`` member (the frames are not read).

    Raises:
        OSError, KeyError, ValueError: When the file is unreadable or not a trace.
    """
    from simfarm.store import read_trace_meta

    path = Path(path).resolve()
    if summary is None or metadata is None:
        meta = read_trace_meta(path)
        summary, metadata = meta, meta.get("metadata", {})
    inputs = {"trace_file": str(path), "trace_file_size": path.stat().st_size}
    return _episode_tasks(job_id, summary, metadata, inputs, options)


def _episode_tasks(job_id: str, summary: Mapping[str, Any], metadata: Any, inputs: dict[str, Any],
                   options: RenderOptions) -> list[RenderTask]:
    key = f"{job_id}/episode-{int(summary['episode']):05d}"
    env = metadata.get("env") if isinstance(metadata, Mapping) else None
    inputs = {**inputs, "prefix": str(env) if env else "episode"}
    tasks = []
    if options.episode_gifs:
        tasks.append(RenderTask("episode_gif", key, job_id, inputs, options))
    if options.mp4 and int(summary.get("frame_count", 0)):
        tasks.append(RenderTask("episode_mp4", f"{key}/mp4", job_id, inputs, options))
    return tasks


class TraceFileUnavailable(OSError):
    """A task's stored trace file cannot be read here (another node, or it changed)."""


def with_trace_loaded(task: RenderTask) -> RenderTask:
    """*task* with its stored trace file read into ``inputs["trace"]`` (a no-op otherwise).

    Raises:
        TraceFileUnavailable: When the file is not readable here either.
    """
    if "trace_file" not in task.inputs or "trace" in task.inputs:
        return task
    return replace(task, inputs={**task.inputs, "trace": _task_trace(task)})


def _task_trace(task: RenderTask) -> EpisodeTrace:
    trace = task.inputs.get("trace")
    if trace is not None:
        return trace
    from simfarm.store import load_trace

    path = Path(task.inputs["trace_file"])
    expected = int(task.inputs["trace_file_size"])
    try:
        size = path.stat().st_size
    except OSError:
        raise TraceFileUnavailable(f"trace file {path} is not readable in this process") from None
    if size != expected:
        raise TraceFileUnavailable(f"trace file {path} has {size} bytes here, the task expects {expected}")
    return load_trace(path)


def _flat_params(params: Mapping[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for k, v in params.items():
        name = f"{prefix}{k}"
        if isinstance(v, Mapping):
            keys += _flat_params(v, f"{name}.")
        else:
            keys.append(name)
    return keys


def metric_columns(rows: pd.DataFrame, params: Mapping[str, Any] | None = None,
                   timing_columns: Sequence[str] = ()) -> list[str]:
    """Numeric columns of a tidy table that are metrics: not ids, params or timings."""
    skip = set(ID_COLUMNS) | set(_flat_params(params or {})) | set(timing_columns)
    return [c for c in rows.columns if c not in skip and pd.api.types.is_numeric_dtype(rows[c])
            and not pd.api.types.is_bool_dtype(rows[c])]


def job_tasks(job: Mapping[str, Any], rows: pd.DataFrame, snapshots: Sequence[Mapping[str, Any]],
              options: RenderOptions, *, timing_columns: Sequence[str] = ()) -> list[RenderTask]:
    """Tasks for a finished job: its evolution GIF (experiments with
    snapshots) and its curves.

    Args:
        job: The manifest's job entry (``job_id``, ``table``, ``params``, ``config``...).
        rows: The job's rows of its table (any order).
        snapshots: Its round snapshots in round order (may be empty).
        options: Render options.
        timing_columns: The manifest's ``timing_columns``; only
            ``steps_per_s`` of them is plotted (rollout throughput).

    Returns:
        Tasks keyed ``<job_id>/evolution`` and ``<job_id>/curves``.
    """
    job_id = str(job["job_id"])
    table = str(job.get("table", "steps"))
    title = f"{job_id} · {job.get('config') or job.get('workload', '')}".strip(" ·")
    tasks: list[RenderTask] = []
    if options.gifs and snapshots:
        tasks.append(RenderTask("evolution_gif", f"{job_id}/evolution", job_id,
                                {"history": list(snapshots), "title": title}, options))
    if options.curves and len(rows):
        metrics = metric_columns(rows, job.get("params"), [t for t in timing_columns if t != "steps_per_s"])
        x = {"rounds": "round", "iterations": "iteration"}.get(table, "step")
        keep = [c for c in dict.fromkeys([x, "step", *metrics]) if c in rows.columns]
        tasks.append(RenderTask("job_curves", f"{job_id}/curves", job_id,
                                {"rows": rows[keep].reset_index(drop=True), "table": table,
                                 "metrics": metrics, "title": title}, options))
    return tasks


def _config_labels(manifest: Mapping[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for job in manifest.get("jobs", []):
        cid = job.get("config_id")
        if cid is not None and str(cid) not in labels:
            labels[str(cid)] = str(job.get("config") or cid)
    return labels


def sweep_tasks(manifest: Mapping[str, Any], tables: Mapping[str, pd.DataFrame],
                options: RenderOptions) -> list[RenderTask]:
    """Run-level curves across seeds: one task per table with two or more jobs.

    Args:
        manifest: The run's manifest (for config labels, params and timing columns).
        tables: ``{"rounds": df, "iterations": df, "steps": df, ...}``; absent or empty ones are skipped.
        options: Render options (nothing without ``options.curves``).

    Returns:
        Tasks keyed ``sweep/<table>``.
    """
    if not options.curves:
        return []
    from simfarm.render.curves import EXPERIMENT_METRICS, ROLLOUT_METRICS

    labels = _config_labels(manifest)
    timings = [t for t in manifest.get("timing_columns", []) if t != "steps_per_s"]
    tasks = []
    for table, x in (("rounds", "round"), ("iterations", "iteration"), ("steps", "step")):
        rows = tables.get(table)
        if rows is None or rows.empty or "config_id" not in rows.columns or rows["job_id"].nunique() < 2:
            continue
        if table == "rounds":
            metrics = {**EXPERIMENT_METRICS, "coverage_80": "80% interval coverage", "coverage_95": "95% interval coverage"}
        elif table == "iterations":
            metrics = dict(ROLLOUT_METRICS)
        else:
            params: dict[str, Any] = {}
            for job in manifest.get("jobs", []):
                params.update(job.get("params") or {})
            metrics = {m: m.replace("_", " ") for m in metric_columns(rows, params, timings)[:MAX_GENERIC_PANELS]}
        metrics = {m: t for m, t in metrics.items() if m in rows.columns}
        if not metrics:
            continue
        keep = [c for c in dict.fromkeys(["job_id", "config_id", "seed", "step", x, *metrics]) if c in rows.columns]
        used = set(rows["config_id"].astype(str))
        tasks.append(RenderTask("sweep_curves", f"sweep/{table}", None, {
            "rows": rows[keep].reset_index(drop=True), "table": table, "x": x, "metrics": metrics,
            "labels": {k: v for k, v in labels.items() if k in used},
            "title": f"{manifest.get('name', 'run')}: {table} across seeds",
        }, options))
    return tasks


def _final_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """The last step of every job (what the report's summary tables show)."""
    if "job_id" not in rows.columns:
        return rows.tail(0)
    ordered = rows.sort_values(["job_id", "step"], kind="stable") if "step" in rows.columns else rows
    return ordered.groupby("job_id", sort=True).tail(1).reset_index(drop=True)


def report_task(manifest: Mapping[str, Any], tables: Mapping[str, pd.DataFrame], artifacts: Sequence[str],
                options: RenderOptions) -> RenderTask:
    """The report task (run it last, once the artifacts exist).

    Args:
        manifest: The run's manifest (spec, jobs, renders, ...).
        tables: The run's tables; reduced here to the last row per job
            (and to a few columns of ``episodes``) before shipping.
        artifacts: Relative paths of the files present under ``artifacts/``.
        options: Render options.

    Returns:
        A task keyed ``report`` that writes ``report.html``.
    """
    finals = {name: _final_rows(df) for name, df in tables.items()
              if name in ("rounds", "iterations", "steps") and df is not None and not df.empty}
    episodes = tables.get("episodes")
    episode_cols = ["job_id", "config_id", "step", "episode", "episode_reward", "step_count", "solved"]
    if episodes is not None and not episodes.empty:
        episodes = episodes[[c for c in episode_cols if c in episodes.columns]].reset_index(drop=True)
    else:
        episodes = None
    return RenderTask("report", "report", None, {
        "manifest": dict(manifest), "finals": finals, "episodes": episodes,
        "artifacts": sorted(str(a) for a in artifacts),
    }, options)


# ---------------------------------------------------------------------------
# Running a task
# ---------------------------------------------------------------------------
def _evolution_outputs(task: RenderTask) -> dict[str, bytes]:
    from simfarm.render.evolution import evolution_frames
    from simfarm.render.gif import DEFAULT_EVOLUTION_FPS, encode_gif

    fps = task.options.fps or DEFAULT_EVOLUTION_FPS
    frames = evolution_frames(task.inputs["history"])
    out = {artifact_path(task.job_id, "evolution.gif"): encode_gif(frames, fps)[0]}
    if task.options.mp4:
        from simfarm.render.video import encode_mp4

        # Players handle sub-1 fps videos badly: repeat frames to reach >= 1 fps.
        repeat = max(1, math.ceil(1.0 / fps))
        out[artifact_path(task.job_id, "evolution.mp4")] = encode_mp4(np.repeat(frames, repeat, axis=0), fps * repeat)
    return out


def _episode_outputs(task: RenderTask) -> dict[str, bytes]:
    from simfarm.render.gif import episode_gif_files

    trace = _task_trace(task)
    files = episode_gif_files(trace, prefix=task.inputs.get("prefix", "episode"), fps=task.options.fps,
                              max_frames=task.options.max_frames, extra={"job_id": task.job_id})
    return {artifact_path(task.job_id, name): data for name, data in files.items()}


def _episode_mp4_outputs(task: RenderTask) -> dict[str, bytes]:
    from simfarm.render.gif import episode_stem
    from simfarm.render.video import encode_mp4

    trace = _task_trace(task)
    frames = np.asarray(trace.frames)
    if task.options.max_frames is not None:
        frames = frames[: task.options.max_frames]
    if len(frames) == 0:
        return {}
    stem = episode_stem(trace, task.inputs.get("prefix", "episode"))
    return {artifact_path(task.job_id, f"{stem}.mp4"): encode_mp4(frames, task.options.fps or trace.fps)}


def _job_curve_outputs(task: RenderTask) -> dict[str, bytes]:
    from simfarm.render.curves import experiment_curves, metric_curves, render_curves, training_curves

    rows: pd.DataFrame = task.inputs["rows"]
    table = task.inputs.get("table", "steps")
    title = task.inputs.get("title") or (task.job_id or "job")
    if table == "rounds":
        curves = experiment_curves(rows, title=title, name="curves_experiment")
    elif table == "iterations":
        curves = training_curves(rows, title=title, name="curves_training")
    else:
        metrics = list(task.inputs.get("metrics") or [])[:MAX_GENERIC_PANELS]
        curves = metric_curves(rows, metrics, title=title, name="curves_metrics")
    if curves is None:
        return {}
    return {artifact_path(task.job_id, name): data for name, data in render_curves(curves).items()}


def _sweep_outputs(task: RenderTask) -> dict[str, bytes]:
    from simfarm.render.curves import render_curves, sweep_curves

    table = safe_component(task.inputs["table"])
    curves = sweep_curves(task.inputs["rows"], task.inputs["metrics"], x=task.inputs.get("x", "step"),
                          labels=task.inputs.get("labels"), title=task.inputs.get("title", "sweep"),
                          name=f"{table}_curves")
    if curves is None:
        return {}
    return {artifact_path(None, name): data for name, data in render_curves(curves).items()}


def _report_outputs(task: RenderTask) -> dict[str, bytes]:
    from simfarm.render.report import build_report

    html = build_report(task.inputs["manifest"], task.inputs.get("finals", {}), task.inputs.get("artifacts", []),
                        episodes=task.inputs.get("episodes"))
    return {"report.html": html.encode("utf-8")}


_RUNNERS = {
    "episode_gif": _episode_outputs,
    "episode_mp4": _episode_mp4_outputs,
    "evolution_gif": _evolution_outputs,
    "job_curves": _job_curve_outputs,
    "sweep_curves": _sweep_outputs,
    "report": _report_outputs,
}


def run_task(task: RenderTask) -> dict[str, bytes]:
    """Render *task*.

    Returns:
        ``{relative path: file bytes}`` (possibly empty when there was
        nothing to draw, e.g. curves without any finite value). The same
        task gives byte-identical outputs.

    Raises:
        SpecError: For an unknown task kind.
        ValueError: For an output path outside the allowed layout.
        Exception: Whatever rendering raised; the caller records it and the
            run's results are unaffected.
    """
    runner = _RUNNERS.get(task.kind)
    if runner is None:
        raise SpecError(f"render task {task.key!r}: unknown kind {task.kind!r}; known kinds: {', '.join(RENDER_KINDS)}")
    outputs = runner(task)
    return {check_output_path(path): data for path, data in outputs.items()}
