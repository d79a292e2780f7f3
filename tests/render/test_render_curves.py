"""Curves: PNG read with Pillow, SVG parsed as XML, JSON loaded; NaN/inf skipped."""

from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from simfarm.render.curves import (
    _draw_panel,
    experiment_curves,
    metric_curves,
    moving_average,
    render_curves,
    sweep_curves,
    training_curves,
    write_curves,
)
from simfarm.render.figures import new_figure


def _panel(curves, title):
    return next(p for p in curves.panels if p.title == title)


def test_training_curves_files_read_back(tmp_path, iterations):
    rows = iterations[iterations.job_id == "rollout-0001"]
    curves = training_curves(rows, title="rollout-0001")
    paths = write_curves(curves, tmp_path / "out")
    assert sorted(p.name for p in paths) == ["training_curves.json", "training_curves.png", "training_curves.svg"]
    with Image.open(tmp_path / "out" / "training_curves.png") as im:
        assert im.format == "PNG" and im.size[0] > 600
    root = ET.parse(tmp_path / "out" / "training_curves.svg").getroot()
    assert root.tag.endswith("svg")
    data = json.loads((tmp_path / "out" / "training_curves.json").read_text())
    assert [p["title"] for p in data["panels"]] == ["episode reward", "policy entropy", "losses", "throughput"]
    assert data["xlabel"] == "iteration"
    entropy = data["panels"][1]["series"][0]
    assert entropy["y"][3] is None  # NaN written as null
    losses = {s["label"]: s for s in data["panels"][2]["series"]}
    assert losses["value loss"]["y"][4] is None  # inf too


def test_non_finite_points_are_skipped_not_zeroed(iterations):
    rows = iterations[iterations.job_id == "rollout-0000"]
    panel = _panel(training_curves(rows), "policy entropy")
    fig, _ = new_figure(4, 3)
    ax = fig.add_subplot()
    _draw_panel(ax, panel, "iteration")
    line = ax.get_lines()[0]
    assert 3.0 not in set(line.get_xdata())  # the NaN iteration is left out
    assert min(line.get_ydata()) > 0.05  # and nothing was drawn at zero
    assert len(line.get_xdata()) == len(rows) - 1


def test_missing_columns_mean_missing_panels(iterations):
    rows = iterations[iterations.job_id == "rollout-0000"].drop(columns=["entropy", "moving_average", "steps_per_s"])
    curves = training_curves(rows, window=4)
    assert [p.title for p in curves.panels] == ["episode reward", "losses"]
    reward = _panel(curves, "episode reward")
    assert reward.series[1].label == "moving average (4)"
    expected = pd.Series(rows["episode_reward_mean"].to_numpy()).rolling(4, min_periods=1).mean().to_numpy()
    assert np.allclose(reward.series[1].y, expected)
    assert training_curves(pd.DataFrame({"step": [0, 1], "other": [1.0, 2.0]})) is None


def test_moving_average_ignores_non_finite_values():
    values = [1.0, np.nan, 3.0, np.inf, 5.0, np.nan, np.nan, np.nan]
    out = moving_average(values, 2)
    assert out[0] == 1.0 and out[1] == 1.0 and out[2] == 3.0 and out[3] == 3.0 and out[4] == 5.0
    assert np.isnan(out[6]) and np.isnan(out[7])
    with pytest.raises(ValueError, match="window"):
        moving_average(values, 0)


def test_experiment_curves_panels(rounds):
    rows = rounds[rounds.job_id == "experiment-0001"]
    curves = experiment_curves(rows, title="experiment-0001")
    titles = [p.title for p in curves.panels]
    assert titles == ["regret per visitor (oracle gap)", "policy accuracy", "CATE RMSE", "revenue per visitor",
                      "interval coverage"]
    assert _panel(curves, "interval coverage").references == [0.8]
    assert curves.xlabel == "round"


def test_sweep_median_and_interquartile_band(rounds):
    curves = sweep_curves(rounds, {"oracle_gap_rpv": "regret", "absent_metric": "nothing"}, x="round",
                          labels={"c000": "config zero"})
    assert len(curves.panels) == 1
    series = {s.label: s for s in curves.panels[0].series}
    assert set(series) == {"config zero", "c001"}
    part = rounds[(rounds.config_id == "c001") & (rounds["round"] == 2)]["oracle_gap_rpv"].to_numpy()
    s = series["c001"]
    assert s.y[2] == pytest.approx(np.median(part))
    assert s.lower[2] == pytest.approx(np.quantile(part, 0.25))
    assert s.upper[2] == pytest.approx(np.quantile(part, 0.75))
    assert s.n[2] == 3


def test_sweep_skips_non_finite_values(rounds):
    rounds = rounds.copy()
    mask = (rounds.config_id == "c000") & (rounds["round"] == 0)
    rounds.loc[mask, "cate_rmse"] = [np.nan, np.inf, 0.5]
    curves = sweep_curves(rounds, ["cate_rmse"], x="round")
    s = next(s for s in curves.panels[0].series if s.label == "c000")
    assert s.y[0] == 0.5 and s.n[0] == 1
    with pytest.raises(KeyError, match="config_id"):
        sweep_curves(rounds.drop(columns="config_id"), ["cate_rmse"])


def test_metric_curves_and_byte_identical_rendering(rounds):
    curves = metric_curves(rounds[rounds.job_id == "experiment-0000"], ["cate_rmse", "not_there"], name="m")
    first = render_curves(curves)
    assert render_curves(curves) == first
    assert set(first) == {"m.png", "m.svg", "m.json"}
    ET.fromstring(first["m.svg"])
    Image.open(io.BytesIO(first["m.png"])).verify()
    assert metric_curves(rounds, ["not_there"]) is None
