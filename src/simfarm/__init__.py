"""simfarm: a simulation farm on Ray.

``simfarm.run(spec)`` runs every job of a spec on Ray actors and returns a
:class:`~simfarm.store.RunResult`; ``simfarm.open_run(path)`` reads one back
from disk. The plain libraries (``simfarm.experiments``, ``simfarm.envs``,
``simfarm.render``) work without Ray; importing ``simfarm`` does not start or
import Ray until ``run`` is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["RunResult", "RunSpec", "load_spec", "open_run", "run", "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from simfarm.farm.driver import run
    from simfarm.spec import RunSpec, load_spec
    from simfarm.store import RunResult, open_run

_LAZY = {
    "run": ("simfarm.farm.driver", "run"),
    "RunSpec": ("simfarm.spec", "RunSpec"),
    "load_spec": ("simfarm.spec", "load_spec"),
    "RunResult": ("simfarm.store", "RunResult"),
    "open_run": ("simfarm.store", "open_run"),
}


def __getattr__(name: str) -> Any:
    # Lazy so that `import simfarm.experiments` never pays for Ray.
    if name in _LAZY:
        import importlib

        module_name, attr = _LAZY[name]
        return getattr(importlib.import_module(module_name), attr)
    raise AttributeError(f"module 'simfarm' has no attribute {name!r}")
