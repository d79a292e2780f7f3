"""GIF artifacts read back with Pillow: evolution GIF, episode GIF + JSON, the encoder."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image, ImageSequence

from simfarm.render.gif import (
    encode_gif,
    episode_gif,
    episode_gif_files,
    episode_stem,
    experiment_evolution_gif,
    frame_durations_ms,
)
from simfarm.render.samples import sample_history, sample_trace


def _frames(data: bytes) -> list[np.ndarray]:
    with Image.open(io.BytesIO(data)) as im:
        return [np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(im)]


def _durations(data: bytes) -> list[int]:
    with Image.open(io.BytesIO(data)) as im:
        out = []
        for f in ImageSequence.Iterator(im):
            out.append(f.info["duration"])
        return out


# -- evolution GIF -------------------------------------------------------------
def test_evolution_gif_one_frame_per_round(tmp_path, history):
    path = experiment_evolution_gif(history, tmp_path / "sub" / "evolution.gif")
    assert path == tmp_path / "sub" / "evolution.gif"
    with Image.open(path) as im:
        assert im.n_frames == len(history)
        assert im.info["loop"] == 0
        sizes = {f.size for f in ImageSequence.Iterator(im)}
    assert len(sizes) == 1  # one canvas for every frame
    assert _durations(path.read_bytes()) == [5000] * len(history)  # default 0.2 rounds/s


def test_evolution_gif_same_bytes_from_dicts_objects_and_reruns(tmp_path, history, history_reloaded, to_objects):
    a = experiment_evolution_gif(history, tmp_path / "a.gif", fps=1).read_bytes()
    b = experiment_evolution_gif(history_reloaded, tmp_path / "b.gif", fps=1).read_bytes()
    c = experiment_evolution_gif([to_objects(s) for s in history], tmp_path / "c.gif", fps=1).read_bytes()
    assert a == b == c
    frames = _frames(a)
    assert not np.array_equal(frames[0], frames[1])  # rounds differ on screen


def test_evolution_canvas_is_sized_for_the_widest_tree(tmp_path):
    narrow = experiment_evolution_gif(sample_history(3, max_leaves=2), tmp_path / "n.gif")
    wide = experiment_evolution_gif(sample_history(6, max_leaves=8), tmp_path / "w.gif")
    with Image.open(narrow) as n, Image.open(wide) as w:
        assert w.size[0] > n.size[0]


def test_evolution_gif_without_any_tree_and_empty_history(tmp_path, history):
    path = experiment_evolution_gif(history[:1], tmp_path / "one.gif")
    with Image.open(path) as im:
        assert im.n_frames == 1
    with pytest.raises(ValueError, match="history is empty"):
        experiment_evolution_gif([], tmp_path / "none.gif")
    with pytest.raises(ValueError, match="fps"):
        experiment_evolution_gif(history, tmp_path / "bad.gif", fps=0)


# -- episode GIF ---------------------------------------------------------------
def test_episode_gif_and_metadata(tmp_path, trace):
    files = episode_gif(trace, tmp_path, prefix="cartpole")
    stem = "cartpole_episode_0007_reward_20"
    assert files["gif"].name == f"{stem}.gif" and files["json"].name == f"{stem}.json"
    with Image.open(files["gif"]) as im:
        assert im.n_frames == 20
        assert im.size == (64, 48)
    meta = json.loads(files["json"].read_text())
    assert meta["episode"] == 7 and meta["step_count"] == 20 and meta["solved"] is True
    assert meta["frame_count"] == 20 and meta["gif_frames"] == 20 and meta["frames_rendered"] == 20
    assert meta["actions"] == trace.actions.tolist()
    assert meta["episode_reward"] == 20.0 and meta["avg_reward"] == pytest.approx(18.0)
    assert meta["fps"] == 25.0 and meta["metadata"]["env"] == "boxworld"
    # Few colours: the shared palette is exact, frames decode losslessly.
    assert meta["exact_colors"] is True
    decoded = _frames(files["gif"].read_bytes())
    assert all(np.array_equal(d, f) for d, f in zip(decoded, trace.frames, strict=True))
    assert sum(_durations(files["gif"].read_bytes())) == pytest.approx(20 * 40, abs=10)  # 25 fps


def test_episode_gif_max_frames_and_fps_override(trace):
    files = episode_gif_files(trace, prefix="x", fps=10, max_frames=5)
    gif = files["x_episode_0007_reward_20.gif"]
    with Image.open(io.BytesIO(gif)) as im:
        assert im.n_frames == 5
    assert _durations(gif) == [100] * 5
    meta = json.loads(files["x_episode_0007_reward_20.json"])
    assert meta["frame_count"] == 20 and meta["frames_rendered"] == 5 and meta["fps"] == 10.0
    with pytest.raises(ValueError, match="max_frames"):
        episode_gif_files(trace, max_frames=0)


def test_episode_without_frames_writes_json_with_warning(tmp_path, trace):
    trace.frames = np.zeros((0, 48, 64, 3), dtype=np.uint8)
    with pytest.warns(UserWarning, match="no frames"):
        files = episode_gif(trace, tmp_path)
    assert "gif" not in files
    assert list(tmp_path.glob("*.gif")) == []
    meta = json.loads(files["json"].read_text())
    assert "warning" in meta and meta["gif"] is None and meta["frame_count"] == 0


def test_identical_consecutive_frames_are_counted_honestly(trace):
    # Frames 5..9 repeat frame 5: the file holds fewer frames, the same total time.
    trace.frames[6:10] = trace.frames[5]
    files = episode_gif_files(trace, prefix="dup")
    gif = next(v for k, v in files.items() if k.endswith(".gif"))
    meta = json.loads(next(v for k, v in files.items() if k.endswith(".json")))
    with Image.open(io.BytesIO(gif)) as im:
        assert im.n_frames == meta["gif_frames"] == 16
    assert meta["frame_count"] == 20
    assert sum(_durations(gif)) == sum(frame_durations_ms(20, 25.0))


def test_rich_frames_are_quantised_close_and_deterministic():
    trace = sample_trace(0, n_frames=6, height=40, width=50, rich=True)
    smooth = np.linspace(0, 255, 40 * 50 * 3).reshape(40, 50, 3).astype(np.uint8)
    frames = np.stack([np.roll(smooth, k * 7, axis=1) for k in range(6)])
    frames[3] = trace.frames[3]  # one noisy frame: far more than 256 colours
    data, info = encode_gif(frames, fps=12)
    assert info.exact_colors is False and info.frames_written == 6
    decoded = np.stack(_frames(data))
    assert np.abs(decoded[0].astype(int) - frames[0].astype(int)).mean() < 6
    assert encode_gif(frames, fps=12)[0] == data


def test_frame_durations_track_the_rate():
    d30 = frame_durations_ms(30, 30)
    assert set(d30) <= {30, 40} and sum(d30) == 1000
    assert frame_durations_ms(3, 100) == [20, 20, 20]  # browsers slow down faster frames
    assert frame_durations_ms(2, 0.2) == [5000, 5000]
    for bad in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="fps"):
            frame_durations_ms(3, bad)


def test_episode_stem_is_safe(trace):
    trace.episode_reward = -3.6
    assert episode_stem(trace, "../../etc/pass wd") == "etc-pass-wd_episode_0007_reward_-4"
    trace.episode_reward = float("nan")
    assert episode_stem(trace, "") == "episode_episode_0007_reward_nan"


def test_encode_gif_rejects_bad_input():
    with pytest.raises(ValueError, match="without frames"):
        encode_gif(np.zeros((0, 4, 4, 3), np.uint8), 10)
    with pytest.raises(ValueError, match="shape"):
        encode_gif(np.zeros((2, 4, 4), np.uint8)[..., None].repeat(2, -1), 10)


def test_evolution_gif_of_a_real_experiment(tmp_path):
    # Our own experiments package: live snapshots and their JSON reloads draw the same GIF.
    workload = pytest.importorskip("simfarm.experiments.workload")
    snapshot = pytest.importorskip("simfarm.experiments.snapshot")
    params = workload.validate({"scenario": "clustered", "treatments": ["control", "a", "b"], "rounds": 3,
                                "visitors_per_round": 1500}, "experiments[0]")
    records = list(workload.build(params, 0))
    raw = [r.snapshot for r in records]
    reloaded = [snapshot.snapshot_from_json(json.loads(json.dumps(s))) for s in raw]
    a = experiment_evolution_gif(raw, tmp_path / "a.gif").read_bytes()
    assert experiment_evolution_gif(reloaded, tmp_path / "b.gif").read_bytes() == a
    with Image.open(tmp_path / "a.gif") as im:
        assert im.n_frames == len(records) == 3
