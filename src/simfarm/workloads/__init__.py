"""The workload registry: name -> ``build(params, seed)``, and the protocol.

A workload is what one job runs. ``build(params, seed)`` returns an
iterator of steps (the :class:`Workload` protocol)::

    wl = build({"steps": 5}, seed=123)
    rec = next(wl)            # one step -> Record; StopIteration ends the job
    blob = wl.checkpoint()    # bytes: enough to resume after `rec`
    wl2 = build({"steps": 5}, seed=123); wl2.restore(blob)
    next(wl2)                 # bit-identical to next(wl)

Built-in names: ``random-walk`` (this package), ``experiment``
(:mod:`simfarm.experiments`) and ``rollout`` (:mod:`simfarm.envs`). A spec may
also name any user function by import path, ``"mypkg.sims:build"``.

Entries are registered by import path strings and imported on first use, so
importing this module stays cheap (no torch).

Nothing here imports Ray: the farm calls :func:`get` inside its workers.
"""

from __future__ import annotations

import contextvars
import importlib
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from simfarm.errors import SpecError
from simfarm.records import Record

__all__ = [
    "JobContext",
    "Workload",
    "WorkloadInfo",
    "current_job",
    "get",
    "job_context",
    "names",
    "register",
]

#: Tables a workload's records may go to.
TABLES = ("rounds", "iterations", "steps")
#: Worker kinds: which actor class runs the workload.
WORKER_KINDS = ("experiment", "rollout", "generic")


@runtime_checkable
class Workload(Protocol):
    """What ``build(params, seed)`` returns.

    Optional attributes the farm uses when present: ``n_steps`` (total steps,
    for progress and ETA) and ``close()`` (release resources).
    """

    def __iter__(self) -> Iterator[Record]: ...

    def __next__(self) -> Record: ...

    def checkpoint(self) -> bytes: ...

    def restore(self, state: bytes) -> None: ...


Build = Callable[[dict[str, Any], int], Workload]
#: ``validate(params, where) -> params``: raise SpecError naming ``where.key``.
Validate = Callable[[dict[str, Any], str], dict[str, Any]]


@dataclass(frozen=True)
class WorkloadInfo:
    """A registry entry.

    Attributes:
        name: Registry name or the user's import path.
        build_ref: ``build`` or its ``"module:attr"`` path.
        validate_ref: ``validate`` (or its path), or None (params unchecked).
        table: Which tidy table its records go to: rounds | iterations | steps.
        worker: Which actor runs it: experiment | rollout | generic.
        description: One line for ``simfarm inspect`` and the docs.
    """

    name: str
    build_ref: str | Build
    validate_ref: str | Validate | None = None
    table: str = "steps"
    worker: str = "generic"
    description: str = ""

    @property
    def build(self) -> Build:
        """The build function (imported on first use)."""
        return _resolve(self.build_ref, what=f"workload {self.name!r}")

    def validate(self, params: dict[str, Any], where: str) -> dict[str, Any]:
        """Check *params*; return them (possibly normalised).

        Raises:
            SpecError: naming ``where.<key>``, the value and what is allowed.
        """
        if self.validate_ref is None:
            return params
        fn = _resolve(self.validate_ref, what=f"validator of workload {self.name!r}")
        return fn(params, where)


_REGISTRY: dict[str, WorkloadInfo] = {}
_IMPORT_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def register(
    name: str,
    build: str | Build,
    *,
    validate: str | Validate | None = None,
    table: str = "steps",
    worker: str = "generic",
    description: str = "",
) -> WorkloadInfo:
    """Add (or replace) a named workload.

    Args:
        name: Registry name used as ``workload = "<name>"`` in a spec.
        build: ``build(params, seed) -> Workload`` or its ``"module:attr"`` path.
        validate: Optional ``validate(params, where) -> params``.
        table: ``rounds`` | ``iterations`` | ``steps``.
        worker: ``experiment`` | ``rollout`` | ``generic``.
        description: One line of help.

    Returns:
        The new entry.

    Raises:
        ValueError: When *table* or *worker* is not one of the allowed values.
    """
    if table not in TABLES:
        raise ValueError(f"table must be one of {TABLES}, got {table!r}")
    if worker not in WORKER_KINDS:
        raise ValueError(f"worker must be one of {WORKER_KINDS}, got {worker!r}")
    info = WorkloadInfo(name, build, validate, table, worker, description)
    _REGISTRY[name] = info
    return info


def names() -> list[str]:
    """Registered workload names, sorted."""
    return sorted(_REGISTRY)


def get(name: str, *, where: str = "workload") -> WorkloadInfo:
    """Look up a registered name or import a user's ``"module:attr"`` build.

    A user's build function may carry optional attributes ``validate``,
    ``table`` and ``worker`` with the meanings of :func:`register`.

    Raises:
        SpecError: When the name is unknown or the import path does not resolve.
    """
    if not isinstance(name, str) or not name:
        raise SpecError(f"{where} must be a workload name or 'module:function', got {name!r}")
    if name in _REGISTRY:
        return _REGISTRY[name]
    if ":" not in name:
        from simfarm.params import did_you_mean

        hint = did_you_mean(name, _REGISTRY)
        hint = hint.replace("allowed keys", "registered workloads")
        raise SpecError(
            f"{where}: unknown workload {name!r}{hint} "
            "(or give your own as 'module.path:build_function')"
        )
    if not _IMPORT_PATH.match(name):
        raise SpecError(f"{where} must look like 'module.path:build_function', got {name!r}")
    build = _resolve(name, what=where)
    table = getattr(build, "table", "steps")
    worker = getattr(build, "worker", "generic")
    if table not in TABLES or worker not in WORKER_KINDS:
        raise SpecError(
            f"{where}: {name} declares table={table!r}, worker={worker!r}; "
            f"allowed tables {TABLES}, workers {WORKER_KINDS}"
        )
    return WorkloadInfo(
        name=name,
        build_ref=build,
        validate_ref=getattr(build, "validate", None),
        table=table,
        worker=worker,
        description=(build.__doc__ or "").strip().splitlines()[0] if build.__doc__ else "",
    )


def _resolve(ref: Any, *, what: str) -> Any:
    if not isinstance(ref, str):
        return ref
    module_name, _, attr = ref.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SpecError(f"{what}: cannot import module {module_name!r} ({exc})") from None
    try:
        obj = getattr(module, attr)
    except AttributeError:
        raise SpecError(f"{what}: module {module_name!r} has no attribute {attr!r}") from None
    if not callable(obj):
        raise SpecError(f"{what}: {ref} is not callable")
    return obj


# ---------------------------------------------------------------------------
# Job context: what the farm knows about the job being built.
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class JobContext:
    """Facts about the running job that are not part of its params.

    Attributes:
        job_id: The farm's id of the job (``""`` outside the farm).
        attempt: 0 the first time the job starts; +1 on every restart.
        num_cpus: CPU reservation of the process running it.
        num_gpus: GPU reservation (fractional allowed); 0 means CPU only.
    """

    job_id: str = ""
    attempt: int = 0
    num_cpus: float = 1.0
    num_gpus: float = 0.0


_CONTEXT: contextvars.ContextVar[JobContext] = contextvars.ContextVar(
    "simfarm_job_context", default=JobContext()
)


def current_job() -> JobContext:
    """The context of the job being built/run (a default outside the farm)."""
    return _CONTEXT.get()


class job_context:  # noqa: N801 - used as a context manager, reads like one
    """``with job_context(JobContext(...)):`` sets :func:`current_job`."""

    def __init__(self, ctx: JobContext) -> None:
        self._ctx = ctx
        self._token: contextvars.Token[JobContext] | None = None

    def __enter__(self) -> JobContext:
        self._token = _CONTEXT.set(self._ctx)
        return self._ctx

    def __exit__(self, *exc: object) -> None:
        assert self._token is not None
        _CONTEXT.reset(self._token)


def estimated_steps(workload: Any) -> int | None:
    """``workload.n_steps`` when it declares one."""
    n = getattr(workload, "n_steps", None)
    return int(n) if isinstance(n, int) else None


def params_steps(info: WorkloadInfo, params: Mapping[str, Any]) -> int | None:
    """Total steps a job will run, from its params, when the workload says.

    Workloads may expose ``steps_for(params) -> int`` next to ``build`` in the
    same module; without it the farm's ETA counts jobs only.
    """
    if not isinstance(info.build_ref, str):
        fn = getattr(info.build_ref, "steps_for", None)
    else:
        module_name = info.build_ref.partition(":")[0]
        fn = getattr(importlib.import_module(module_name), "steps_for", None)
    if fn is None:
        return None
    try:
        return int(fn(dict(params)))
    except Exception:  # an estimate only: never fail a run over it
        return None


register(
    "random-walk",
    "simfarm.workloads.random_walk:build",
    validate="simfarm.workloads.random_walk:validate",
    table="steps",
    worker="generic",
    description="A seeded Gaussian random walk with optional CPU work and fault injection.",
)
register(
    "experiment",
    "simfarm.experiments.workload:build",
    validate="simfarm.experiments.workload:validate",
    table="rounds",
    worker="experiment",
    description="A sim-mode sequential adaptive experiment (one step per round).",
)
register(
    "rollout",
    "simfarm.envs.workload:build",
    validate="simfarm.envs.workload:validate",
    table="iterations",
    worker="rollout",
    description="Batched environment rollouts or policy-gradient training (one step per iteration).",
)
