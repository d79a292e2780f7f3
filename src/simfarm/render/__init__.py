"""Pure rendering: evolution and episode GIFs, curves, MP4s, the Animator, the run report.

Nothing here imports Ray (the Animator reaches render actors through
``simfarm.farm.renderers`` only when asked for more than one worker).
Submodules import matplotlib, Pillow and PyAV lazily where they can, so
``import simfarm.render`` stays cheap.

Main entry points:

- :func:`experiment_evolution_gif`, :func:`episode_gif` -- GIF artifacts;
- :func:`write_mp4` -- H.264 MP4 through PyAV;
- :func:`training_curves`, :func:`experiment_curves`, :func:`sweep_curves`,
  :func:`metric_curves` + :func:`render_curves` / :func:`write_curves`;
- :class:`Animator`, :class:`IndexedFrameParams` -- frame-parallel animations;
- :class:`RenderTask`, :class:`RenderOptions`, :func:`run_task` and the
  builders :func:`trace_tasks`, :func:`stored_trace_tasks`, :func:`job_tasks`, :func:`sweep_tasks`,
  :func:`report_task` -- what the farm hands to render actors.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = [
    "Animator",
    "CurveSet",
    "IndexedFrameParams",
    "Panel",
    "RenderOptions",
    "RenderTask",
    "Series",
    "build_report",
    "encode_gif",
    "encode_mp4",
    "episode_gif",
    "experiment_curves",
    "experiment_evolution_gif",
    "job_tasks",
    "metric_curves",
    "moving_average",
    "options_for_only",
    "render_curves",
    "report_task",
    "run_task",
    "stored_trace_tasks",
    "sweep_curves",
    "sweep_tasks",
    "trace_tasks",
    "training_curves",
    "validate_render",
    "write_curves",
    "write_gif",
    "write_mp4",
]

_WHERE = {
    "Animator": "animator",
    "IndexedFrameParams": "animator",
    "CurveSet": "curves",
    "Panel": "curves",
    "Series": "curves",
    "experiment_curves": "curves",
    "metric_curves": "curves",
    "moving_average": "curves",
    "render_curves": "curves",
    "sweep_curves": "curves",
    "training_curves": "curves",
    "write_curves": "curves",
    "encode_gif": "gif",
    "episode_gif": "gif",
    "experiment_evolution_gif": "gif",
    "write_gif": "gif",
    "encode_mp4": "video",
    "write_mp4": "video",
    "build_report": "report",
    "RenderOptions": "options",
    "RenderTask": "tasks",
    "job_tasks": "tasks",
    "options_for_only": "options",
    "report_task": "tasks",
    "run_task": "tasks",
    "sweep_tasks": "tasks",
    "trace_tasks": "tasks",
    "stored_trace_tasks": "tasks",
    "validate_render": "options",
}

if TYPE_CHECKING:  # pragma: no cover - for type checkers and editors only
    from simfarm.render.animator import *  # noqa: F403
    from simfarm.render.curves import *  # noqa: F403
    from simfarm.render.gif import *  # noqa: F403
    from simfarm.render.options import *  # noqa: F403
    from simfarm.render.report import *  # noqa: F403
    from simfarm.render.tasks import *  # noqa: F403
    from simfarm.render.video import *  # noqa: F403


def __getattr__(name: str) -> Any:
    # Lazy: the coordinator imports the task builders without paying for matplotlib.
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'simfarm.render' has no attribute {name!r}")
    return getattr(importlib.import_module(f"simfarm.render.{module}"), name)


def __dir__() -> list[str]:
    return sorted(__all__)
