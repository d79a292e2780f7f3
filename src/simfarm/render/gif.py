"""GIF artifacts: the encoder, the experiment evolution GIF, the episode GIF.

Encoding (:func:`encode_gif`):

- one shared palette for all frames (:mod:`simfarm.render.palette`), so
  Pillow neither quantises every frame on its own nor re-optimises
  palettes, and colours do not flicker;
- frame durations in whole centiseconds (the format's unit), at least
  20 ms (browsers slow down shorter frames to 100 ms), spread so that the
  cumulative time tracks the requested rate;
- consecutive identical frames are merged here, their durations summed --
  Pillow would merge them anyway -- so the number of frames the file holds
  is known and reported honestly (:class:`GifInfo`);
- ``loop=0`` (loop forever); the output is byte-identical for equal input.
"""

from __future__ import annotations

import io
import math
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from simfarm.records import EpisodeTrace
from simfarm.render.jsonio import json_bytes
from simfarm.render.palette import palettise

__all__ = [
    "DEFAULT_EVOLUTION_FPS",
    "GifInfo",
    "encode_gif",
    "episode_gif",
    "episode_gif_files",
    "episode_stem",
    "evolution_gif_bytes",
    "experiment_evolution_gif",
    "frame_durations_ms",
    "write_gif",
]

#: Rounds per second of the evolution GIF: each round stays 5 s on screen.
DEFAULT_EVOLUTION_FPS = 0.2
_MIN_DURATION_MS = 20


@dataclass(frozen=True)
class GifInfo:
    """What :func:`encode_gif` wrote.

    Attributes:
        frames_in: Frames it was given.
        frames_written: Frames the file holds (``PIL.Image.n_frames``):
            fewer than ``frames_in`` when consecutive frames were identical.
        durations_ms: Duration of each written frame.
        exact_colors: Whether the palette kept every colour exactly.
        size: ``(width, height)`` in pixels.
    """

    frames_in: int
    frames_written: int
    durations_ms: tuple[int, ...]
    exact_colors: bool
    size: tuple[int, int]


def frame_durations_ms(n_frames: int, fps: float) -> list[int]:
    """Per-frame GIF durations (multiples of 10 ms, >= 20 ms) for *fps*.

    The durations alternate where needed (30 fps: 30, 40, 30, 30, 40, ...)
    so that frame *k* starts within 10 ms of ``k / fps``; rates above 50 fps
    are slowed to 50 fps.

    Raises:
        ValueError: When *fps* is not a positive finite number.
    """
    if not (isinstance(fps, int | float) and math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    step_cs = max(100.0 / float(fps), _MIN_DURATION_MS / 10)
    starts = np.round(np.arange(n_frames + 1) * step_cs)
    durations = np.maximum(np.diff(starts), _MIN_DURATION_MS / 10) * 10
    return [int(d) for d in durations]


def _as_frames(frames: Any) -> np.ndarray:
    if isinstance(frames, np.ndarray):
        array = frames
    else:
        array = np.stack([np.asarray(f) for f in frames]) if len(frames) else np.empty((0, 0, 0, 3), np.uint8)
    if array.ndim == 3:  # grey frames (T, H, W) -> RGB
        array = np.repeat(array[..., None], 3, axis=-1)
    if array.ndim != 4 or array.shape[-1] not in (3, 4):
        raise ValueError(f"frames must have shape (T, H, W, 3), got {array.shape}")
    if array.shape[-1] == 4:
        array = array[..., :3]
    if array.dtype != np.uint8:
        array = np.clip(np.nan_to_num(array), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(array)


def encode_gif(frames: np.ndarray | Sequence[np.ndarray], fps: float) -> tuple[bytes, GifInfo]:
    """Encode RGB frames as an animated GIF in memory.

    Args:
        frames: ``uint8 (T, H, W, 3)`` (RGBA and grey are accepted; other
            dtypes are clipped to 0..255), ``T >= 1``.
        fps: Frames per second (see :func:`frame_durations_ms`).

    Returns:
        ``(gif_bytes, info)``.

    Raises:
        ValueError: When there are no frames, their shape is wrong, or fps is invalid.
    """
    array = _as_frames(frames)
    if array.shape[0] == 0:
        raise ValueError("cannot encode a GIF without frames")
    durations = np.asarray(frame_durations_ms(array.shape[0], fps))
    pal = palettise(array)
    idx = pal.indices
    # Keep frame k when it differs from frame k-1; a dropped frame's time
    # goes to the kept frame before it.
    changed = np.ones(idx.shape[0], dtype=bool)
    if idx.shape[0] > 1:
        changed[1:] = (idx[1:] != idx[:-1]).reshape(idx.shape[0] - 1, -1).any(axis=1)
    keep = np.flatnonzero(changed)
    merged = np.add.reduceat(durations, keep)
    palette = pal.palette_bytes()
    height, width = idx.shape[1:]
    images = []
    for k in keep:
        image = Image.frombuffer("P", (width, height), idx[k].tobytes(), "raw", "P", 0, 1)
        image.putpalette(palette)
        images.append(image)
    buf = io.BytesIO()
    images[0].save(
        buf,
        format="GIF",
        save_all=True,
        append_images=images[1:],
        duration=[int(d) for d in merged],
        loop=0,
        optimize=False,  # the palette is already shared and tight
        disposal=1,  # leave each frame in place: delta frames paint over it
        interlace=False,
    )
    info = GifInfo(
        frames_in=int(array.shape[0]),
        frames_written=len(keep),
        durations_ms=tuple(int(d) for d in merged),
        exact_colors=pal.exact,
        size=(int(width), int(height)),
    )
    return buf.getvalue(), info


def write_gif(frames: np.ndarray | Sequence[np.ndarray], path: str | Path, fps: float) -> GifInfo:
    """:func:`encode_gif` to a file (parent folders created).

    Returns:
        The :class:`GifInfo` of the written file.
    """
    data, info = encode_gif(frames, fps)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    return info


# ---------------------------------------------------------------------------
# Experiment evolution
# ---------------------------------------------------------------------------
def evolution_gif_bytes(history: Sequence[Any], fps: float = DEFAULT_EVOLUTION_FPS) -> tuple[bytes, GifInfo]:
    """The evolution GIF of *history* in memory (see :func:`experiment_evolution_gif`).

    Raises:
        ValueError: When *history* is empty or fps is invalid.
    """
    from simfarm.render.evolution import evolution_frames  # matplotlib only when drawing

    return encode_gif(evolution_frames(history), fps)


def experiment_evolution_gif(
    history: Sequence[Any], output_path: str | Path, fps: float = DEFAULT_EVOLUTION_FPS
) -> Path:
    """Render an experiment's round-by-round evolution as an animated GIF.

    One frame per round: the cell allocation of the rounds so far as
    stacked bars (cells and their weights, the current round highlighted)
    and, when the round fitted one, its policy tree (splits; per leaf its
    share and the Optimized cell's arm probabilities). Frame title
    ``round i/N``. All frames share one canvas sized for the widest and
    deepest tree of the history.

    Args:
        history: Round snapshots, consumed duck-typed (``cells_shipped``,
            ``next_recommendation.tree`` possibly None, as keys or
            attributes): our live ``Experiment`` objects, snapshot JSON
            dicts, ``snapshot_from_json`` objects, pytyche ``Experiment``.
        output_path: Destination ``.gif`` (parent folders are created).
        fps: Rounds per second; the default shows each round for 5 s.

    Returns:
        ``output_path`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: When *history* is empty or *fps* is not positive.
    """
    data, _ = evolution_gif_bytes(history, fps)
    path = Path(output_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# ---------------------------------------------------------------------------
# Episodes
# ---------------------------------------------------------------------------
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def episode_stem(trace: EpisodeTrace, prefix: str = "episode") -> str:
    """File stem ``<prefix>_episode_NNNN_reward_R`` for *trace*.

    *prefix* is reduced to letters, digits, ``-`` and ``_`` (others become
    ``-``); R is the episode reward rounded to an integer (``nan`` when not
    finite).
    """
    safe = _UNSAFE.sub("-", prefix).strip("-_") or "episode"
    reward = float(trace.episode_reward)
    reward_text = str(int(round(reward))) if math.isfinite(reward) else "nan"
    return f"{safe}_episode_{int(trace.episode):04d}_reward_{reward_text}"


def episode_gif_files(
    trace: EpisodeTrace,
    *,
    prefix: str = "episode",
    fps: float | None = None,
    max_frames: int | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, bytes]:
    """The episode GIF and its metadata JSON, as ``{file name: bytes}``.

    Args:
        trace: The captured episode.
        prefix: First part of the file stem (see :func:`episode_stem`).
        fps: Playback rate; None uses ``trace.fps``.
        max_frames: Keep at most this many frames (from the start); None keeps all.
        extra: More JSON-able fields for the metadata (job id, ...).

    Returns:
        ``{"<stem>.gif": ..., "<stem>.json": ...}``; without frames only the
        JSON, carrying a ``"warning"``.

    Raises:
        ValueError: When *fps* or *max_frames* is not positive, or frames
            have the wrong shape.
    """
    if max_frames is not None and (isinstance(max_frames, bool) or int(max_frames) < 1):
        raise ValueError(f"max_frames must be a positive integer or None, got {max_frames!r}")
    rate = float(trace.fps if fps is None else fps)
    frames = np.asarray(trace.frames)
    shown = frames if max_frames is None else frames[: int(max_frames)]
    stem = episode_stem(trace, prefix)
    meta: dict[str, Any] = {
        "episode": int(trace.episode),
        "env_id": int(trace.env_id),
        "episode_reward": float(trace.episode_reward),
        "avg_reward": float(trace.avg_reward),
        "step_count": int(trace.step_count),
        "solved": bool(trace.solved),
        "frame_count": int(len(frames)),
        "frames_rendered": int(len(shown)),
        "fps": rate,
        "actions": np.asarray(trace.actions).tolist(),
        "metadata": dict(trace.metadata),
        **(extra or {}),
    }
    files: dict[str, bytes] = {}
    if len(shown) == 0:
        meta["gif"] = None
        meta["gif_frames"] = 0
        meta["warning"] = (
            "this episode has no frames, so no GIF was written; capture frames by rendering the "
            "environment in rgb_array mode for the episodes you want to see"
        )
    else:
        data, info = encode_gif(shown, rate)
        files[f"{stem}.gif"] = data
        meta["gif"] = f"{stem}.gif"
        # Identical consecutive frames are stored once with a longer duration.
        meta["gif_frames"] = info.frames_written
        meta["gif_size"] = list(info.size)
        meta["exact_colors"] = info.exact_colors
    files[f"{stem}.json"] = json_bytes(meta)
    return files


def episode_gif(
    trace: EpisodeTrace,
    output_dir: str | Path,
    *,
    prefix: str = "episode",
    fps: float | None = None,
    max_frames: int | None = None,
) -> dict[str, Path]:
    """Write an episode's GIF and metadata JSON into *output_dir*.

    Args: as :func:`episode_gif_files`.

    Returns:
        ``{"gif": path, "json": path}``; no ``"gif"`` key when the trace has
        no frames (a :class:`UserWarning` is issued and the JSON carries a
        ``"warning"`` field).
    """
    files = episode_gif_files(trace, prefix=prefix, fps=fps, max_frames=max_frames)
    out_dir = Path(output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for name, data in files.items():
        path = out_dir / name
        path.write_bytes(data)
        written[name.rsplit(".", 1)[1]] = path
    if "gif" not in written:
        warnings.warn(f"episode {trace.episode} has no frames: wrote {written['json'].name} only", stacklevel=2)
    return written

