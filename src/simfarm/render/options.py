"""The ``[render]`` spec table: :class:`RenderOptions`, read strictly.

Kept apart from the task builders (which need pandas) so that the
coordinator and the spec reader can consult the options cheaply: a run with
rendering off never loads pandas in its coordinator before the tables are
written.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from simfarm.params import ParamReader, describe

__all__ = ["ONLY_CHOICES", "RenderOptions", "options_for_only", "rendering_on", "validate_render"]

#: Values of ``simfarm render --only``.
ONLY_CHOICES = ("gif", "mp4", "curves", "report")


@dataclass(frozen=True)
class RenderOptions:
    """The spec's ``[render]`` table.

    Attributes:
        gifs: Experiment evolution GIFs.
        episode_gifs: A GIF (+ metadata JSON) per captured episode.
        curves: Per-job and sweep-level curves (PNG, SVG, JSON).
        mp4: MP4 videos of captured episodes and evolutions besides the GIFs.
        report: ``report.html`` when the run finishes.
        fps: Playback rate for every animation; None: each artifact's own
            (the trace's fps; 0.2 rounds/s for evolutions).
        max_frames: Cap on frames per episode animation; None: all.
        workers: Number of RenderWorker actors (0: render in the calling process).
    """

    gifs: bool = True
    episode_gifs: bool = True
    curves: bool = True
    mp4: bool = False
    report: bool = True
    fps: float | None = None
    max_frames: int | None = None
    workers: int = 1


def validate_render(table: Mapping[str, Any] | None, where: str = "render") -> RenderOptions:
    """Read a ``[render]`` table strictly.

    Args:
        table: The table (None or ``{}``: all defaults).
        where: Its key path, for messages.

    Returns:
        The :class:`RenderOptions`.

    Raises:
        SpecError: For an unknown key (with a close-match hint) or a bad
            value, e.g. ``render.workers must be a non-negative integer, got -1``.
    """
    r = ParamReader(table if table is not None else {}, where)
    defaults = RenderOptions()
    options = RenderOptions(
        gifs=r.boolean("gifs", defaults.gifs),
        episode_gifs=r.boolean("episode_gifs", defaults.episode_gifs),
        curves=r.boolean("curves", defaults.curves),
        mp4=r.boolean("mp4", defaults.mp4),
        report=r.boolean("report", defaults.report),
        # None is accepted too: a normalised spec read back from JSON says null.
        fps=r.number("fps", None, minimum=0.0, exclusive_minimum=True, maximum=1000.0, allow_none=True),
        max_frames=r.integer("max_frames", None, minimum=1, allow_none=True),
        workers=r.integer("workers", defaults.workers, minimum=0, maximum=1024),
    )
    r.finish()
    return options


def options_for_only(options: RenderOptions, only: Iterable[str] | str | None) -> RenderOptions:
    """Restrict *options* to the artifact families of ``simfarm render --only``.

    ``gif`` keeps evolution and episode GIFs, ``mp4`` MP4s, ``curves``
    curves, ``report`` the report. A family named here is switched on even
    when the spec had it off; families not named are switched off.

    Raises:
        ValueError: For a name outside :data:`ONLY_CHOICES`.
    """
    if only is None:
        return options
    names = [n.strip() for n in (only.split(",") if isinstance(only, str) else only) if n.strip()]
    unknown = [n for n in names if n not in ONLY_CHOICES]
    if unknown or not names:
        raise ValueError(f"--only takes a comma-separated subset of {', '.join(ONLY_CHOICES)}, got {describe(only)}")
    return replace(
        options,
        gifs="gif" in names,
        episode_gifs="gif" in names,
        mp4="mp4" in names,
        curves="curves" in names,
        report="report" in names,
    )


def rendering_on(options: RenderOptions) -> bool:
    """Whether *options* ask for any artifact at all."""
    return bool(options.gifs or options.episode_gifs or options.curves or options.mp4 or options.report)
