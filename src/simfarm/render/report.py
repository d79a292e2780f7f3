"""``report.html``: one self-contained page per run.

The page shows the run's status and spec, every job's status (failed jobs
with their error), summary tables (the last step of every job, and per
config the median across seeds), and every artifact: sweep curves first,
then per config and per job the evolution GIF, curves, episode GIFs and
MP4 videos. Artifacts are referenced by relative links (the report sits at
the run directory's root), so the page opens from disk in any browser and
survives copying the run directory elsewhere. No scripts, no external
resources. Every string that comes from the spec or the data is escaped.
"""

from __future__ import annotations

import html
import json
import math
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import quote

import numpy as np
import pandas as pd

from simfarm.render.paths import REPORT, safe_component

__all__ = ["build_report", "group_artifacts"]

_ID_COLUMNS = ("job_id", "config_id", "step", "seed")
_PREFERRED = (
    "round", "iteration", "oracle_gap_rpv", "policy_accuracy", "cate_rmse", "rpv_policy", "rpv_uniform",
    "rpv_oracle", "coverage_80", "coverage_95", "episode_reward_mean", "moving_average", "entropy",
    "policy_loss", "value_loss", "steps_per_s",
)
_MAX_SUMMARY_METRICS = 12
_EPISODE_STEM = re.compile(r"^(?P<prefix>.*)_episode_(?P<episode>\d+)_reward_(?P<reward>-?\w+)$")

_CSS = """
:root { --ink:#111827; --muted:#6b7280; --line:#e5e7eb; --bg:#f9fafb; --card:#fff; --accent:#2563eb; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
       color:var(--ink); background:var(--bg); }
header { background:#111827; color:#f9fafb; padding:20px 32px; }
header h1 { margin:0 0 4px; font-size:22px; }
header .meta { color:#d1d5db; font-size:13px; }
nav { padding:8px 32px; background:#fff; border-bottom:1px solid var(--line); position:sticky; top:0; z-index:1; }
nav a { margin-right:16px; color:var(--accent); text-decoration:none; font-weight:600; }
main { padding:16px 32px 48px; max-width:1500px; }
section { margin-top:28px; }
h2 { font-size:18px; border-bottom:2px solid var(--line); padding-bottom:4px; }
h3 { font-size:16px; margin:22px 0 6px; }
h4 { font-size:14px; margin:14px 0 6px; color:#374151; }
table { border-collapse:collapse; background:var(--card); font-size:13px; margin:6px 0 12px; }
th, td { border:1px solid var(--line); padding:4px 8px; text-align:left; vertical-align:top; }
th { background:#f3f4f6; font-weight:600; }
td.num { text-align:right; font-variant-numeric:tabular-nums; }
.badge { display:inline-block; padding:1px 8px; border-radius:10px; font-size:12px; font-weight:600; }
.s-done { background:#dcfce7; color:#166534; } .s-failed { background:#fee2e2; color:#991b1b; }
.s-running { background:#dbeafe; color:#1e40af; } .s-pending { background:#f3f4f6; color:#374151; }
.s-interrupted { background:#fef3c7; color:#92400e; }
pre { background:#f3f4f6; padding:8px 10px; border-radius:6px; overflow:auto; font-size:12px; max-height:420px; }
pre.error { background:#fef2f2; color:#991b1b; white-space:pre-wrap; max-height:200px; }
.grid { display:grid; grid-template-columns:repeat(auto-fill,minmax(260px,1fr)); gap:12px; }
.wide { display:grid; grid-template-columns:repeat(auto-fill,minmax(560px,1fr)); gap:12px; }
figure { margin:0; background:var(--card); border:1px solid var(--line); border-radius:8px; padding:8px; }
figure img, figure video { display:block; max-width:100%; height:auto; margin:0 auto; }
figcaption { font-size:12px; color:var(--muted); margin-top:4px; }
figcaption a { color:var(--accent); }
.job { background:var(--card); border:1px solid var(--line); border-radius:10px; padding:4px 14px 12px; margin:10px 0; }
.job > summary { cursor:pointer; font-weight:600; padding:8px 0; }
.note { color:var(--muted); }
.scroll { overflow-x:auto; max-width:100%; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _href(path: str) -> str:
    return _e(quote(path, safe="/._-~"))


def _badge(status: Any) -> str:
    text = str(status or "unknown")
    return f'<span class="badge s-{_e(re.sub(r"[^a-z]", "", text.lower()))}">{_e(text)}</span>'


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, int | np.integer):
        return f"{int(value):,}"
    if isinstance(value, float | np.floating):
        v = float(value)
        if not math.isfinite(v):
            return "–"
        return f"{v:,.0f}" if abs(v) >= 1e5 else f"{v:.4g}"
    return str(value)


def _table(frame: pd.DataFrame, *, max_rows: int = 500) -> str:
    if frame is None or frame.empty:
        return '<p class="note">no rows</p>'
    head = "".join(f"<th>{_e(c)}</th>" for c in frame.columns)
    numeric = [pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c]) for c in frame.columns]
    body = []
    for row in frame.head(max_rows).itertuples(index=False):
        cells = "".join(
            f'<td class="num">{_e(_fmt(v))}</td>' if num else f"<td>{_e(_fmt(v))}</td>"
            for v, num in zip(row, numeric, strict=True)
        )
        body.append(f"<tr>{cells}</tr>")
    more = f'<p class="note">{len(frame) - max_rows} more rows not shown</p>' if len(frame) > max_rows else ""
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>{more}'


def _flat_keys(params: Mapping[str, Any], prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for k, v in params.items():
        keys |= _flat_keys(v, f"{prefix}{k}.") if isinstance(v, Mapping) else {f"{prefix}{k}"}
    return keys


def _metrics(frame: pd.DataFrame, manifest: Mapping[str, Any]) -> list[str]:
    skip = set(_ID_COLUMNS) | set(manifest.get("timing_columns", [])) - {"steps_per_s"}
    for job in manifest.get("jobs", []):
        skip |= _flat_keys(job.get("params") or {})
    cols = [c for c in frame.columns if c not in skip and pd.api.types.is_numeric_dtype(frame[c])
            and not pd.api.types.is_bool_dtype(frame[c])]
    cols.sort(key=lambda c: (_PREFERRED.index(c) if c in _PREFERRED else len(_PREFERRED), c))
    return cols[:_MAX_SUMMARY_METRICS]


def group_artifacts(artifacts: Sequence[str]) -> tuple[dict[str, list[str]], list[str], list[str]]:
    """Split artifact paths into ``({job_id: paths}, sweep paths, other paths)``.

    ``artifacts/<job_id>/...`` belongs to that job, ``artifacts/sweep/...``
    to the run; anything else is "other".
    """
    by_job: dict[str, list[str]] = defaultdict(list)
    sweep: list[str] = []
    other: list[str] = []
    for path in sorted(artifacts):
        parts = PurePosixPath(path).parts
        if len(parts) >= 3 and parts[0] == "artifacts":
            (sweep if parts[1] == "sweep" else by_job[parts[1]]).append(path)
        elif path != REPORT:
            other.append(path)
    return dict(by_job), sweep, other


def _by_stem(paths: Sequence[str]) -> dict[str, dict[str, str]]:
    stems: dict[str, dict[str, str]] = defaultdict(dict)
    for path in paths:
        p = PurePosixPath(path)
        stems[str(p.with_suffix(""))][p.suffix.lower().lstrip(".")] = path
    return stems


def _links(files: Mapping[str, str], skip: str = "") -> str:
    """`` · JSON · PNG`` links to the files of one stem (empty when none)."""
    links = [f'<a href="{_href(path)}">{_e(ext.upper())}</a>' for ext, path in sorted(files.items()) if ext != skip]
    return "".join(f" · {link}" for link in links)


def _caption(stem: str) -> str:
    name = PurePosixPath(stem).name
    m = _EPISODE_STEM.match(name)
    if m:
        return f"episode {int(m['episode'])} · reward {m['reward']}"
    return name.replace("_", " ")


def _figure(stem: str, files: Mapping[str, str]) -> tuple[str, str]:
    """``(kind, html)`` for one artifact stem; kind orders the page."""
    caption = _e(_caption(stem))
    if "svg" in files or "png" in files:
        img = files.get("png") or files["svg"]
        source = ""
        if "svg" in files and "png" in files:  # the browser picks the SVG, the PNG is the fallback
            source = f'<source srcset="{_href(files["svg"])}" type="image/svg+xml">'
        body = f'<picture>{source}<img src="{_href(img)}" alt="{caption}" loading="lazy"></picture>'
        return "curves", f"<figure>{body}<figcaption>{caption}{_links(files)}</figcaption></figure>"
    if "gif" in files:
        kind = "evolution" if PurePosixPath(stem).name == "evolution" else "episode"
        body = f'<img src="{_href(files["gif"])}" alt="{caption}" loading="lazy">'
        return kind, f"<figure>{body}<figcaption>{caption}{_links(files, 'gif')}</figcaption></figure>"
    if "mp4" in files:
        body = f'<video controls muted loop playsinline preload="metadata" src="{_href(files["mp4"])}"></video>'
        return "video", f"<figure>{body}<figcaption>{caption} (MP4){_links(files, 'mp4')}</figcaption></figure>"
    note = '<p class="note">no animation (see the metadata for why)</p>' if "json" in files else ""
    return "data", f"<figure>{note}<figcaption>{caption}{_links(files)}</figcaption></figure>"


def _artifact_block(paths: Sequence[str]) -> str:
    """The figures of one job (or of the sweep), grouped by kind."""
    sections: dict[str, list[str]] = defaultdict(list)
    stems = _by_stem(paths)
    # An MP4 beside a GIF of the same stem gets its own figure too.
    for stem, files in stems.items():
        mp4 = {k: v for k, v in files.items() if k == "mp4"}
        rest = {k: v for k, v in files.items() if k != "mp4"}
        if rest:
            kind, fig = _figure(stem, rest)
            sections[kind].append(fig)
        if mp4 and rest:
            sections["video"].append(_figure(stem, mp4)[1])
        elif mp4:
            kind, fig = _figure(stem, mp4)
            sections[kind].append(fig)
    # Evolution and curves share one grid of wide cells; animations of
    # episodes and videos get a grid of small cells.
    groups = (("Evolution and curves", ("evolution", "curves"), "wide"), ("Episodes", ("episode",), "grid"),
              ("Videos", ("video",), "grid"), ("Data", ("data",), "grid"))
    out = []
    for title, kinds, css in groups:
        figures = [fig for kind in kinds for fig in sections.get(kind, [])]
        if figures:
            out.append(f'<h4>{title}</h4><div class="{css}">{"".join(figures)}</div>')
    return "".join(out) or '<p class="note">no artifacts</p>'


def _jobs_table(jobs: Sequence[Mapping[str, Any]]) -> str:
    if not jobs:
        return '<p class="note">no jobs</p>'
    rows = []
    for job in jobs:
        steps = f"{_fmt(job.get('steps_done'))} / {_fmt(job.get('n_steps'))}"
        error = job.get("error")
        err = f'<pre class="error">{_e(error)}</pre>' if error else ""
        rows.append(
            f'<tr><td><a href="#job-{_e(job.get("job_id"))}">{_e(job.get("job_id"))}</a></td>'
            f"<td>{_e(job.get('workload', ''))}</td><td>{_e(job.get('config', ''))}</td>"
            f'<td class="num">{_e(_fmt(job.get("seed")))}</td><td>{_badge(job.get("status"))}</td>'
            f'<td class="num">{_e(steps)}</td><td class="num">{_e(_fmt(job.get("attempts")))}</td><td>{err}</td></tr>'
        )
    head = "".join(f"<th>{h}</th>" for h in ("job", "workload", "config", "seed", "status", "steps", "attempts", "error"))
    head = f"<tr>{head}</tr>"
    return f'<div class="scroll"><table><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table></div>'


def _summary(manifest: Mapping[str, Any], finals: Mapping[str, pd.DataFrame], episodes: pd.DataFrame | None) -> str:
    labels = {str(j.get("config_id")): str(j.get("config") or j.get("config_id")) for j in manifest.get("jobs", [])}
    parts = []
    for name in ("rounds", "iterations", "steps"):
        frame = finals.get(name)
        if frame is None or frame.empty:
            continue
        metrics = _metrics(frame, manifest)
        parts.append(f"<h3>{_e(name)}: last step of every job</h3>")
        if "config_id" in frame.columns and metrics:
            clean = frame[["config_id", *metrics]].replace([np.inf, -np.inf], np.nan)
            by_config = clean.groupby("config_id", sort=True)
            medians = by_config[metrics].median()
            medians.insert(0, "jobs", by_config.size())
            medians.insert(0, "config", [labels.get(str(c), str(c)) for c in medians.index])
            parts.append("<h4>median across seeds, per config</h4>")
            parts.append(_table(medians.reset_index()))
        cols = [c for c in ("job_id", "config_id", "seed", "step") if c in frame.columns] + metrics
        parts.append(f"<details><summary>every job ({len(frame)})</summary>{_table(frame[cols])}</details>")
    if episodes is not None and not episodes.empty and "job_id" in episodes.columns:
        agg: dict[str, Any] = {"episodes": ("job_id", "size")}
        if "episode_reward" in episodes.columns:
            agg |= {"mean_reward": ("episode_reward", "mean"), "best_reward": ("episode_reward", "max")}
        if "solved" in episodes.columns:
            agg["solved_share"] = ("solved", "mean")
        if "step_count" in episodes.columns:
            agg["mean_steps"] = ("step_count", "mean")
        frame = episodes.replace([np.inf, -np.inf], np.nan).groupby("job_id", sort=True).agg(**agg).reset_index()
        parts.append("<h3>captured episodes</h3>" + _table(frame))
    return "".join(parts) or '<p class="note">no tables yet</p>'


def _render_failures(renders: Sequence[Mapping[str, Any]]) -> str:
    failed = [r for r in renders if r.get("status") == "failed"]
    if not failed:
        return ""
    rows = "".join(
        f"<tr><td>{_e(r.get('key'))}</td><td>{_e(r.get('task') or r.get('kind') or '')}</td>"
        f"<td>{_e(r.get('job_id') or '')}</td>"
        f'<td><pre class="error">{_e(r.get("error") or "")}</pre></td></tr>'
        for r in failed
    )
    return (
        '<section id="render-failures"><h2>Render failures</h2>'
        '<p class="note">These artifacts could not be drawn; the simulation results are not affected.</p>'
        f"<table><thead><tr><th>render</th><th>kind</th><th>job</th><th>error</th></tr></thead><tbody>{rows}"
        "</tbody></table></section>"
    )


def build_report(
    manifest: Mapping[str, Any],
    finals: Mapping[str, pd.DataFrame],
    artifacts: Sequence[str],
    *,
    episodes: pd.DataFrame | None = None,
) -> str:
    """The run report as one HTML document.

    Args:
        manifest: The run's manifest (name, status, spec, jobs, renders, versions, host).
        finals: Per table, rows to summarise (normally the last step of every job).
        artifacts: Relative paths of the artifacts to embed (``artifacts/...``).
        episodes: Rows of the episodes table (job_id, episode_reward, solved, ...), or None.

    Returns:
        The HTML text (UTF-8, no external resources, relative links only).
    """
    name = manifest.get("name", "run")
    jobs = list(manifest.get("jobs", []))
    by_job, sweep, other = group_artifacts(artifacts)
    renders = list(manifest.get("renders", []))
    failed_renders: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for r in renders:
        if r.get("status") == "failed" and r.get("job_id"):
            failed_renders[str(r["job_id"])].append(r)

    meta = [f"status {_badge(manifest.get('status'))}"]
    for key in ("created", "finished"):
        if manifest.get(key):
            meta.append(f"{key} {_e(manifest[key])}")
    if "seed" in manifest:
        meta.append(f"seed {_e(manifest['seed'])}")
    counts: dict[str, int] = defaultdict(int)
    for job in jobs:
        counts[str(job.get("status"))] += 1
    meta.append(", ".join(f"{n} {_e(s)}" for s, n in sorted(counts.items())) + f" of {len(jobs)} jobs")

    configs: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for job in jobs:
        configs[str(job.get("config_id", "-"))].append(job)
    config_html = []
    for config_id, config_jobs in configs.items():
        label = config_jobs[0].get("config") or config_id
        blocks = []
        for job in config_jobs:
            jid = str(job.get("job_id"))
            errors = "".join(
                f'<p>render <code>{_e(r.get("key"))}</code> failed:</p><pre class="error">{_e(r.get("error"))}</pre>'
                for r in failed_renders.get(jid, [])
            )
            job_error = f'<pre class="error">{_e(job["error"])}</pre>' if job.get("error") else ""
            blocks.append(
                f'<details class="job" id="job-{_e(jid)}" open><summary>{_e(jid)} · seed {_e(_fmt(job.get("seed")))} · '
                f'{_badge(job.get("status"))}</summary>{job_error}{errors}'
                f"{_artifact_block(by_job.get(safe_component(jid), []))}</details>"
            )
        config_html.append(f"<h3>{_e(label)} <small class='note'>({_e(config_id)})</small></h3>{''.join(blocks)}")
    known = {safe_component(str(j.get("job_id"))) for j in jobs}
    orphans = [p for jid, paths in by_job.items() if jid not in known for p in paths] + other

    spec = json.dumps(manifest.get("spec", {}), indent=2, sort_keys=True, default=str)
    env_rows = [(f"version {k}", v) for k, v in sorted((manifest.get("versions") or {}).items())]
    env_rows += [(f"host {k}", v) for k, v in sorted((manifest.get("host") or {}).items())]
    env_table = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in env_rows)

    body = [
        f"<header><h1>{_e(name)}</h1><div class='meta'>{' · '.join(meta)}</div></header>",
        '<nav><a href="#jobs">Jobs</a><a href="#summary">Summary</a><a href="#sweep">Across seeds</a>'
        '<a href="#configs">By config</a><a href="#spec">Spec</a></nav><main>',
        f'<section id="jobs"><h2>Jobs</h2>{_jobs_table(jobs)}</section>',
        _render_failures(renders),
        f'<section id="summary"><h2>Summary</h2>{_summary(manifest, finals, episodes)}</section>',
        '<section id="sweep"><h2>Across seeds</h2>'
        f'{_artifact_block(sweep) if sweep else "<p class=note>no run-level curves</p>"}</section>',
        f'<section id="configs"><h2>By config</h2>{"".join(config_html) or "<p class=note>no jobs</p>"}</section>',
    ]
    if orphans:
        body.append(f'<section id="other"><h2>Other artifacts</h2>{_artifact_block(orphans)}</section>')
    body.append(f'<section id="spec"><h2>Spec</h2><pre>{_e(spec)}</pre>')
    if env_table:
        body.append(f"<h3>Environment</h3><table>{env_table}</table>")
    body.append("</section></main>")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(name)} · simfarm report</title><style>{_CSS}</style></head><body>"
        + "".join(body)
        + "</body></html>\n"
    )
