"""Curves: training curves of rollout jobs, experiment curves, sweeps across seeds.

A figure is described as plain data first -- a :class:`CurveSet` of
:class:`Panel` s of :class:`Series` -- and then rendered by matplotlib to PNG
and SVG, with the same data written as JSON beside them. Builders read tidy
tables (one row per step) and use the columns that are there: a missing
metric means a missing panel, never an error.

Non-finite values (NaN, inf) are left out of lines, bands and averages:
they never show up as zeros. In the JSON they are ``null``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from simfarm.render.figures import figure_bytes, new_figure, series_colors, style
from simfarm.render.jsonio import json_bytes

__all__ = [
    "CurveSet",
    "Panel",
    "Series",
    "experiment_curves",
    "metric_curves",
    "moving_average",
    "render_curves",
    "sweep_curves",
    "training_curves",
    "write_curves",
]

#: Experiment metrics and their panel titles, in display order.
EXPERIMENT_METRICS: dict[str, str] = {
    "oracle_gap_rpv": "regret per visitor (oracle gap)",
    "policy_accuracy": "policy accuracy",
    "cate_rmse": "CATE RMSE",
}
#: Rollout metrics shown across seeds.
ROLLOUT_METRICS: dict[str, str] = {
    "episode_reward_mean": "episode reward",
    "moving_average": "episode reward, moving average",
    "entropy": "policy entropy",
}
_LEGEND_LABEL_MAX = 48


@dataclass
class Series:
    """One line (optionally with a band) of a panel.

    Attributes:
        label: Legend text.
        x: x values.
        y: y values (non-finite ones are skipped when drawing).
        lower: Lower edge of a shaded band (or None).
        upper: Upper edge of the band.
        n: Number of values behind each point (seeds of a sweep), or None.
        raw: Draw thin and translucent (the noisy series under its average).
        color: Matplotlib colour, or None for the panel's next colour.
    """

    label: str
    x: np.ndarray
    y: np.ndarray
    lower: np.ndarray | None = None
    upper: np.ndarray | None = None
    n: np.ndarray | None = None
    raw: bool = False
    color: str | None = None

    def has_data(self) -> bool:
        """Whether at least one point is finite."""
        return bool(np.isfinite(_floats(self.y)).any())


@dataclass
class Panel:
    """One axes: a title, a y label, its series, optional horizontal guides."""

    title: str
    ylabel: str
    series: list[Series]
    references: list[float] = field(default_factory=list)


@dataclass
class CurveSet:
    """One figure: file stem *name*, a title, the shared x label, its panels."""

    name: str
    title: str
    xlabel: str
    panels: list[Panel]

    def to_json(self) -> dict:
        """The plotted data as a JSON-able dict (non-finite values become None)."""
        def arr(a: np.ndarray | None) -> list | None:
            return None if a is None else _floats(a).tolist()

        return {
            "name": self.name,
            "title": self.title,
            "xlabel": self.xlabel,
            "panels": [
                {
                    "title": p.title,
                    "ylabel": p.ylabel,
                    "references": list(p.references),
                    "series": [
                        {"label": s.label, "x": arr(s.x), "y": arr(s.y), "lower": arr(s.lower),
                         "upper": arr(s.upper), "n": None if s.n is None else np.asarray(s.n).tolist(),
                         "raw": s.raw}
                        for s in p.series
                    ],
                }
                for p in self.panels
            ],
        }


def _floats(values: object) -> np.ndarray:
    return np.asarray(pd.to_numeric(pd.Series(np.asarray(values).ravel()), errors="coerce"), dtype=float)


def moving_average(values: Sequence[float] | np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over the last *window* finite values at each position.

    Non-finite values count as missing: they neither enter the mean nor
    become zeros. A position whose window holds no finite value is NaN.

    Raises:
        ValueError: When *window* is not a positive integer.
    """
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"window must be a positive integer, got {window!r}")
    y = _floats(values)
    finite = np.isfinite(y)
    sums = np.concatenate([[0.0], np.cumsum(np.where(finite, y, 0.0))])
    counts = np.concatenate([[0], np.cumsum(finite)])
    hi = np.arange(1, len(y) + 1)
    lo = np.maximum(hi - window, 0)
    n = counts[hi] - counts[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, (sums[hi] - sums[lo]) / np.maximum(n, 1), np.nan)


def _column(rows: pd.DataFrame, name: str) -> np.ndarray | None:
    """Column *name* as floats, or None when absent or without a finite value."""
    if name not in rows.columns:
        return None
    values = _floats(rows[name])
    return values if np.isfinite(values).any() else None


def _x_axis(rows: pd.DataFrame, preferred: str) -> tuple[str, np.ndarray]:
    name = preferred if preferred in rows.columns else "step"
    if name not in rows.columns:
        return "index", np.arange(len(rows), dtype=float)
    return name, _floats(rows[name])


def _sorted_rows(rows: pd.DataFrame, x: str) -> pd.DataFrame:
    return rows.sort_values(x, kind="stable") if x in rows.columns else rows


# ---------------------------------------------------------------------------
# Builders
# ---------------------------------------------------------------------------
def training_curves(rows: pd.DataFrame, *, title: str = "training", window: int = 10,
                    name: str = "training_curves") -> CurveSet | None:
    """Training curves of one rollout job from its ``iterations`` rows.

    Panels (each only when its columns are present): episode reward (raw
    ``episode_reward_mean``, its moving average -- the ``moving_average``
    column, else computed over *window* iterations -- and the min/max band),
    ``entropy``, losses (``policy_loss``, ``value_loss`` and other
    ``*_loss`` columns), and ``steps_per_s``. The x axis is ``iteration``
    (else ``step``).

    Returns:
        The :class:`CurveSet`, or None when no panel has data.
    """
    rows = _sorted_rows(rows, "iteration" if "iteration" in rows.columns else "step")
    xname, x = _x_axis(rows, "iteration")
    panels: list[Panel] = []
    reward = _column(rows, "episode_reward_mean")
    if reward is not None:
        avg = _column(rows, "moving_average")
        avg_label = "moving average"
        if avg is None:
            avg, avg_label = moving_average(reward, window), f"moving average ({window})"
        lo, hi = _column(rows, "episode_reward_min"), _column(rows, "episode_reward_max")
        series = [Series("episode reward (mean)", x, reward, raw=True, color="#264653")]
        if lo is not None and hi is not None:
            series[0].lower, series[0].upper = lo, hi
        series.append(Series(avg_label, x, avg, color="#2a9d8f"))
        panels.append(Panel("episode reward", "reward", series))
    entropy = _column(rows, "entropy")
    if entropy is not None:
        panels.append(Panel("policy entropy", "nats", [Series("entropy", x, entropy, color="#e76f51")]))
    loss_names = [c for c in ("policy_loss", "value_loss") if c in rows.columns]
    loss_names += sorted(c for c in rows.columns if c.endswith("_loss") and c not in loss_names)
    losses = [Series(c.replace("_", " "), x, v) for c in loss_names if (v := _column(rows, c)) is not None]
    if losses:
        panels.append(Panel("losses", "loss", losses))
    speed = _column(rows, "steps_per_s")
    if speed is not None:
        panels.append(Panel("throughput", "env steps / s", [Series("steps/s", x, speed, color="#457b9d")]))
    if not panels:
        return None
    return CurveSet(name=name, title=title, xlabel=xname, panels=panels)


def experiment_curves(rows: pd.DataFrame, *, title: str = "experiment",
                      name: str = "experiment_curves") -> CurveSet | None:
    """Curves of one experiment job over its rounds (``rounds`` rows).

    Panels when present: regret per visitor (``oracle_gap_rpv``), policy
    accuracy, CATE RMSE, revenue per visitor (``rpv_policy`` /
    ``rpv_uniform`` / ``rpv_oracle``) and interval coverage
    (``coverage_80``, ``coverage_95`` with their nominal levels as guides).

    Returns:
        The :class:`CurveSet`, or None when no panel has data.
    """
    rows = _sorted_rows(rows, "round" if "round" in rows.columns else "step")
    xname, x = _x_axis(rows, "round")
    panels: list[Panel] = []
    for column, panel_title in EXPERIMENT_METRICS.items():
        values = _column(rows, column)
        if values is not None:
            panels.append(Panel(panel_title, column, [Series(column, x, values)]))
    rpv = [Series(c, x, v) for c in ("rpv_policy", "rpv_uniform", "rpv_oracle") if (v := _column(rows, c)) is not None]
    if rpv:
        panels.append(Panel("revenue per visitor", "revenue / visitor", rpv))
    coverage: list[Series] = []
    references: list[float] = []
    for level in (80, 95):
        values = _column(rows, f"coverage_{level}")
        if values is not None:
            coverage.append(Series(f"{level}% intervals", x, values))
            references.append(level / 100)
    if coverage:
        panels.append(Panel("interval coverage", "coverage", coverage, references))
    if not panels:
        return None
    return CurveSet(name=name, title=title, xlabel=xname, panels=panels)


def metric_curves(rows: pd.DataFrame, metrics: Sequence[str], *, title: str = "metrics",
                  name: str = "metric_curves", x: str = "step") -> CurveSet | None:
    """One panel per metric column over *x*, for any workload's rows.

    Returns:
        The :class:`CurveSet`, or None when none of *metrics* has data.
    """
    rows = _sorted_rows(rows, x)
    xname, xs = _x_axis(rows, x)
    panels = [Panel(m.replace("_", " "), m, [Series(m, xs, v)]) for m in metrics if (v := _column(rows, m)) is not None]
    if not panels:
        return None
    return CurveSet(name=name, title=title, xlabel=xname, panels=panels)


def sweep_curves(rows: pd.DataFrame, metrics: Mapping[str, str] | Sequence[str], *, x: str = "step",
                 labels: Mapping[str, str] | None = None, title: str = "sweep",
                 name: str = "sweep_curves", group: str = "config_id") -> CurveSet | None:
    """Across seeds: per config the median of each metric at each *x*,
    with the interquartile range (25 %-75 %) as a band.

    Args:
        rows: Tidy rows of many jobs: *group*, *x* and the metric columns.
        metrics: Column names (or ``{column: panel title}``); absent ones are skipped.
        x: The x column (``step``, ``round``, ``iteration``).
        labels: Legend text per config id (default: the id).
        title: Figure title.
        name: File stem.
        group: The column that identifies a config.

    Returns:
        The :class:`CurveSet`, or None when no metric has data.

    Raises:
        KeyError: When *rows* lacks the *group* column.
    """
    if group not in rows.columns:
        raise KeyError(f"sweep rows need a {group!r} column; columns are {sorted(rows.columns)}")
    titles = dict(metrics) if isinstance(metrics, Mapping) else {m: m.replace("_", " ") for m in metrics}
    xname = x if x in rows.columns else "step"
    configs = sorted(rows[group].astype(str).unique())
    colors = dict(zip(configs, series_colors(len(configs)), strict=True))
    labels = dict(labels or {})
    panels: list[Panel] = []
    for metric, panel_title in titles.items():
        if metric not in rows.columns:
            continue
        frame = pd.DataFrame({
            "config": rows[group].astype(str).to_numpy(),
            "x": _floats(rows[xname]),
            "y": _floats(rows[metric]),
        })
        frame = frame[np.isfinite(frame["y"]) & np.isfinite(frame["x"])]
        if frame.empty:
            continue
        grouped = frame.groupby(["config", "x"], sort=True)["y"]
        stats = grouped.quantile([0.25, 0.5, 0.75]).unstack()
        stats["n"] = grouped.count()
        series = []
        for config in configs:
            if config not in stats.index.get_level_values(0):
                continue
            part = stats.loc[config]
            series.append(Series(
                label=labels.get(config, config),
                x=part.index.to_numpy(dtype=float),
                y=part[0.5].to_numpy(),
                lower=part[0.25].to_numpy(),
                upper=part[0.75].to_numpy(),
                n=part["n"].to_numpy(dtype=int),
                color=colors[config],
            ))
        panels.append(Panel(f"{panel_title} (median, IQR across seeds)", metric, series))
    if not panels:
        return None
    return CurveSet(name=name, title=title, xlabel=xname, panels=panels)


# ---------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------
def _short(label: str) -> str:
    return label if len(label) <= _LEGEND_LABEL_MAX else label[: _LEGEND_LABEL_MAX - 1] + "…"


def _draw_panel(ax: object, panel: Panel, xlabel: str) -> None:
    colors = iter(series_colors(len(panel.series) + 1))
    for s in panel.series:
        color = s.color or next(colors)
        x, y = _floats(s.x), _floats(s.y)
        ok = np.isfinite(x) & np.isfinite(y)
        if s.lower is not None and s.upper is not None:
            lo, hi = _floats(s.lower), _floats(s.upper)
            band = np.isfinite(x) & np.isfinite(lo) & np.isfinite(hi)
            if band.any():
                ax.fill_between(x[band], lo[band], hi[band], color=color, alpha=0.15 if s.raw else 0.22,
                                linewidth=0)
        if ok.any():
            ax.plot(x[ok], y[ok], color=color, label=_short(s.label),
                    linewidth=1.2 if s.raw else 2.0, alpha=0.45 if s.raw else 1.0,
                    marker="o" if ok.sum() == 1 else None, markersize=3)
    for ref in panel.references:
        ax.axhline(ref, color="#6b7280", linestyle="--", linewidth=0.9)
    ax.set_title(panel.title, loc="left")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(panel.ylabel)
    if len(panel.series) > 1:
        ax.legend(fontsize=7, frameon=False, loc="best")


def render_curves(curves: CurveSet) -> dict[str, bytes]:
    """PNG, SVG and JSON of *curves*: ``{"<name>.png": ..., "<name>.svg": ..., "<name>.json": ...}``.

    Deterministic: the same curves give the same bytes.
    """
    n = max(len(curves.panels), 1)
    ncols = 1 if n == 1 else 2
    nrows = math.ceil(n / ncols)
    with style():
        fig, _canvas = new_figure(6.2 * ncols, 3.3 * nrows + 0.5, dpi=100)
        fig.set_layout_engine("constrained")
        axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
        for ax, panel in zip(axes, curves.panels, strict=False):
            _draw_panel(ax, panel, curves.xlabel)
        for ax in axes[len(curves.panels):]:
            ax.set_visible(False)
        fig.suptitle(curves.title, fontweight="bold")
        out = {
            f"{curves.name}.png": figure_bytes(fig, "png"),
            f"{curves.name}.svg": figure_bytes(fig, "svg"),
        }
    out[f"{curves.name}.json"] = json_bytes(curves.to_json())
    return out


def write_curves(curves: CurveSet, output_dir: str | Path) -> list[Path]:
    """:func:`render_curves` into *output_dir* (created); returns the paths written."""
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for file_name, data in render_curves(curves).items():
        path = folder / file_name
        path.write_bytes(data)
        paths.append(path)
    return paths
