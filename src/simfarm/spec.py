"""Run specs: parse TOML, validate with clear errors, expand grid x seeds into jobs.

A spec is a TOML file (see docs/spec.md for every key)::

    name = "sweep"
    seed = 7
    seeds = 4                      # or a list: [0, 1, 5]

    [[experiments]]
    scenario = "reversal"
    [experiments.grid]
    effect_scale = [0.5, 1.0]      # 2 configs x 4 seeds = 8 jobs

    [[jobs]]
    workload = "random-walk"       # or "mypkg.sims:build"
    steps = 20

    [farm]
    workers = 2

Every error is a :class:`~simfarm.errors.SpecError` whose message names the
key path, the bad value and what is allowed.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simfarm import workloads
from simfarm.errors import SpecError
from simfarm.params import ParamReader, describe
from simfarm.seeding import job_seed

__all__ = [
    "BLOCKS",
    "FarmOptions",
    "JobSpec",
    "RunSpec",
    "apply_overrides",
    "load_spec",
    "parse_spec",
    "quickstart_text",
]

#: Block arrays of a spec, the workload each implies, and the job id prefix.
BLOCKS: dict[str, str | None] = {"experiments": "experiment", "rollouts": "rollout", "jobs": None}
_TOP_KEYS = ("name", "seed", "seeds", "farm", "render", *BLOCKS)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_MAX_JOBS = 100_000


@dataclass(frozen=True)
class FarmOptions:
    """The ``[farm]`` table.

    Attributes:
        workers: Simulation worker actors; None = as many as the cluster's CPUs allow.
        address: Ray cluster to attach to; None = ``RAY_ADDRESS`` or a new local Ray.
        num_cpus_per_worker: CPU reservation of each simulation worker (threads too).
        num_gpus_per_worker: GPU reservation of each RolloutWorker (fractions allowed).
        batch_size: Records a worker buffers before sending a batch.
        flush_seconds: A worker sends what it has at least this often.
        max_in_flight: Unacknowledged batches per worker (backpressure).
        max_job_restarts: A job whose worker process died more often is marked failed.
        coordinator_cpus: CPU reservation of the coordinator actor.
        runtime_env: Ray runtime_env for the simulation workers (env_vars,
            working_dir, py_modules, pip, excludes): how user workload code
            reaches the workers of a cluster.
    """

    workers: int | None = None
    address: str | None = None
    num_cpus_per_worker: float = 1.0
    num_gpus_per_worker: float = 0.0
    batch_size: int = 64
    flush_seconds: float = 1.0
    max_in_flight: int = 2
    max_job_restarts: int = 3
    coordinator_cpus: float = 0.1
    runtime_env: dict[str, Any] | None = None


@dataclass(frozen=True)
class JobSpec:
    """One job: a workload, its validated params, and its seeds.

    Attributes:
        job_id: Stable id, e.g. ``experiment-0003``; names files in the run dir.
        workload: Registry name or ``module:function``.
        table: Where its records go (rounds | iterations | steps).
        worker: Which actor class runs it (experiment | rollout | generic).
        block: Key path of the spec block, e.g. ``experiments[1]``.
        config_id: Shared by jobs that differ only in seed, e.g. ``c004``.
        config: Human label of the config (block and grid values).
        seed: The replicate seed (an entry of the spec's ``seeds``).
        job_seed: The seed passed to ``build``, derived from (run seed, seed).
        params: Validated params with defaults filled in.
        n_steps: Steps the job will run, when the workload can tell.
    """

    job_id: str
    workload: str
    table: str
    worker: str
    block: str
    config_id: str
    config: str
    seed: int
    job_seed: int
    params: dict[str, Any]
    n_steps: int | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON-able dict (the manifest's job entry, minus status fields)."""
        return {
            "job_id": self.job_id,
            "workload": self.workload,
            "table": self.table,
            "worker": self.worker,
            "block": self.block,
            "config_id": self.config_id,
            "config": self.config,
            "seed": self.seed,
            "job_seed": self.job_seed,
            "params": self.params,
            "n_steps": self.n_steps,
        }


@dataclass(frozen=True)
class RunSpec:
    """A validated spec.

    Attributes:
        name: Run name (the run directory's name).
        seed: Root seed.
        seeds: Replicate seeds; every config runs once per entry.
        farm: The ``[farm]`` options.
        render: The ``[render]`` options (:class:`simfarm.render.tasks.RenderOptions`).
        jobs: Expanded jobs, in a stable order.
        raw: The spec as a plain dict (after ``--set`` overrides); stored in
            the manifest and re-validated on ``--resume``.
    """

    name: str
    seed: int
    seeds: tuple[int, ...]
    farm: FarmOptions
    render: Any
    jobs: tuple[JobSpec, ...]
    raw: dict[str, Any] = field(repr=False)

    @property
    def workers_needed(self) -> dict[str, int]:
        """Job count per worker kind."""
        counts: dict[str, int] = {}
        for job in self.jobs:
            counts[job.worker] = counts.get(job.worker, 0) + 1
        return counts


# ---------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------
def quickstart_text() -> str:
    """The built-in quickstart spec (what ``simfarm run`` runs with no SPEC)."""
    return (Path(__file__).parent / "data" / "quickstart.toml").read_text()


def load_spec(
    source: str | Path | Mapping[str, Any] | None = None,
    *,
    overrides: Sequence[str] = (),
    name: str | None = None,
) -> RunSpec:
    """Read, override and validate a spec.

    Args:
        source: A path to a TOML file, a TOML string containing a newline, a
            dict, or None for the built-in quickstart.
        overrides: ``key=value`` strings (``farm.workers=4``,
            ``experiments[0].rounds=3``); values are TOML, bare words are strings.
        name: Replaces the spec's ``name``.

    Returns:
        The validated :class:`RunSpec`.

    Raises:
        SpecError: On unreadable files, TOML syntax errors and invalid values.
    """
    default_name = "quickstart"
    if source is None:
        raw = _parse_toml(quickstart_text(), "the built-in quickstart")
    elif isinstance(source, Mapping):
        raw = copy.deepcopy(dict(source))
        default_name = "run"
    elif isinstance(source, str) and "\n" in source:
        raw = _parse_toml(source, "spec text")
        default_name = "run"
    else:
        path = Path(source)
        if not path.is_file():
            raise SpecError(f"spec file {str(path)!r} does not exist (give a path to a .toml file)")
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise SpecError(f"cannot read spec file {str(path)!r}: {exc}") from None
        raw = _parse_toml(text, str(path))
        default_name = re.sub(r"[^A-Za-z0-9._-]", "-", path.stem) or "run"
    raw = apply_overrides(raw, overrides)
    if name is not None:
        raw["name"] = name
    raw.setdefault("name", default_name)
    return parse_spec(raw)


def _parse_toml(text: str, origin: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{origin} is not valid TOML: {exc}") from None


_PATH_PART = re.compile(r"^([A-Za-z_][\w-]*)((?:\[\d+\])*)$")


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``--set key=value`` overrides to a raw spec dict (returns a copy).

    Raises:
        SpecError: On a malformed override or a path into a missing array item.
    """
    raw = copy.deepcopy(raw)
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise SpecError(f"--set {item!r} must look like key=value (e.g. farm.workers=4)")
        try:
            value = tomllib.loads(f"v = {text.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = text.strip()  # a bare word is a string: --set name=demo
        node: Any = raw
        parts = key.split(".")
        for depth, part in enumerate(parts):
            match = _PATH_PART.match(part)
            if not match:
                raise SpecError(f"--set {item!r}: {part!r} is not a key (use a.b or a[0].b)")
            name, indexes = match.group(1), [int(i) for i in re.findall(r"\[(\d+)\]", match.group(2))]
            last = depth == len(parts) - 1
            if not isinstance(node, dict):
                raise SpecError(f"--set {item!r}: {'.'.join(parts[:depth])} is not a table")
            if not indexes:
                if last:
                    node[name] = value
                else:
                    node = node.setdefault(name, {})
                continue
            container = node.get(name)
            for n, index in enumerate(indexes):
                if not isinstance(container, list) or index >= len(container):
                    size = len(container) if isinstance(container, list) else 0
                    raise SpecError(
                        f"--set {item!r}: {name} has {size} item(s), so [{index}] does not exist"
                    )
                if last and n == len(indexes) - 1:
                    container[index] = value
                else:
                    container = container[index]
            node = container
    return raw


# ---------------------------------------------------------------------------
# Validation and expansion
# ---------------------------------------------------------------------------
def parse_spec(raw: Mapping[str, Any]) -> RunSpec:
    """Validate a raw spec dict and expand its jobs.

    Raises:
        SpecError: Naming the key path, the value and what is allowed.
    """
    top = ParamReader(raw, "")
    name = top.string("name", "run")
    if not _NAME.match(name):
        raise SpecError(
            f"name must be 1-100 characters of letters, digits, '.', '_' or '-' starting with a "
            f"letter or digit (it names the run directory), got {describe(name)}"
        )
    seed = top.integer("seed", 0, minimum=0, maximum=2**63 - 1)
    seeds = _read_seeds(top)
    farm, render_alias = _read_farm(top.table_reader("farm"))
    render = _read_render(top.raw("render", {}), render_alias)
    blocks_present = False
    jobs: list[JobSpec] = []
    counters: dict[str, int] = {}
    config_index = 0
    for block_key, implied in BLOCKS.items():
        entries = top.raw(block_key, None)
        if entries is None:
            continue
        if not isinstance(entries, list) or not all(isinstance(e, Mapping) for e in entries):
            raise SpecError(
                f"{block_key} must be an array of tables ([[{block_key}]] blocks), got {describe(entries)}"
            )
        if not entries:
            raise SpecError(f"{block_key} is an empty array; add a [[{block_key}]] block or remove the key")
        blocks_present = True
        for i, entry in enumerate(entries):
            where = f"{block_key}[{i}]"
            for info, params, label in _expand_block(entry, where, implied):
                config_id = f"c{config_index:03d}"
                config_index += 1
                prefix = info.name if info.name in workloads.names() else "job"
                n_steps = workloads.params_steps(info, params)
                for replicate in seeds:
                    number = counters.get(prefix, 0)
                    counters[prefix] = number + 1
                    jobs.append(
                        JobSpec(
                            job_id=f"{prefix}-{number:04d}",
                            workload=info.name,
                            table=info.table,
                            worker=info.worker,
                            block=where,
                            config_id=config_id,
                            config=label,
                            seed=replicate,
                            job_seed=job_seed(seed, replicate),
                            params=params,
                            n_steps=n_steps,
                        )
                    )
                    if len(jobs) > _MAX_JOBS:
                        raise SpecError(
                            f"the spec expands to more than {_MAX_JOBS} jobs; "
                            "shrink the grids or seeds (or split the sweep into several runs)"
                        )
    top.finish()
    if not blocks_present:
        raise SpecError(
            "the spec has no work: add at least one [[experiments]], [[rollouts]] or [[jobs]] block"
        )
    return RunSpec(
        name=name,
        seed=seed,
        seeds=tuple(seeds),
        farm=farm,
        render=render,
        jobs=tuple(jobs),
        raw=_json_roundtrip(dict(raw)),
    )


def _read_seeds(top: ParamReader) -> list[int]:
    value = top.raw("seeds", 1)
    if isinstance(value, list):
        if not value:
            raise top.fail("seeds", "a positive count or a non-empty list of seeds", value)
        out = [top.check_integer("seeds", v, minimum=0, maximum=2**63 - 1) for v in value]
        if len(set(out)) != len(out):
            raise top.fail("seeds", "a list without duplicates", value)
        return out
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise top.fail("seeds", "a positive count or a non-empty list of non-negative integers", value)
    if value > _MAX_JOBS:
        raise top.fail("seeds", f"at most {_MAX_JOBS}", value)
    return list(range(value))


def _read_farm(r: ParamReader | None) -> tuple[FarmOptions, int | None]:
    """The [farm] options and its ``render_workers`` alias (None when unset)."""
    if r is None:
        return FarmOptions(), None
    address = r.string("address", None, allow_empty=True)
    options = FarmOptions(
        workers=r.integer("workers", None, minimum=1, maximum=10_000, allow_none=True),
        address=address or None,
        num_cpus_per_worker=r.number("num_cpus_per_worker", 1.0, minimum=0.0, exclusive_minimum=True),
        num_gpus_per_worker=r.number("num_gpus_per_worker", 0.0, minimum=0.0),
        batch_size=r.integer("batch_size", 64, minimum=1, maximum=100_000),
        flush_seconds=r.number("flush_seconds", 1.0, minimum=0.0, maximum=3600.0),
        max_in_flight=r.integer("max_in_flight", 2, minimum=1, maximum=1000),
        max_job_restarts=r.integer("max_job_restarts", 3, minimum=0, maximum=1000),
        coordinator_cpus=r.number("coordinator_cpus", 0.1, minimum=0.0, maximum=64.0),
        runtime_env=_read_runtime_env(r.table_reader("runtime_env")),
    )
    # An alias of [render] workers, kept because the farm table is where Ray users look.
    render_workers = r.integer("render_workers", None, minimum=0, maximum=1024, allow_none=True)
    r.finish()
    return options, render_workers


def _read_runtime_env(r: ParamReader | None) -> dict[str, Any] | None:
    """The ``[farm.runtime_env]`` subset simfarm passes to Ray for its workers."""
    if r is None:
        return None
    env: dict[str, Any] = {}
    if r.has("env_vars"):
        env_vars = r.raw("env_vars")
        if not isinstance(env_vars, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in env_vars.items()
        ):
            raise r.fail("env_vars", "a table of string values", env_vars)
        env["env_vars"] = dict(env_vars)
    working_dir = r.string("working_dir", None)
    if working_dir is not None:
        env["working_dir"] = working_dir
    for key in ("py_modules", "pip", "excludes"):
        values = r.string_list(key, None, unique=False)
        if values is not None:
            env[key] = values
    r.finish()
    return env or None


def _read_render(table: Any, render_workers: int | None) -> Any:
    from simfarm.render.options import validate_render

    options = validate_render(table if table is not None else {}, "render")
    if render_workers is not None:
        if isinstance(table, Mapping) and "workers" in table and table["workers"] != render_workers:
            raise SpecError(
                f"farm.render_workers = {render_workers} and render.workers = "
                f"{describe(table['workers'])} disagree; set only one of them"
            )
        options = dataclasses.replace(options, workers=render_workers)
    return options


def _expand_block(
    entry: Mapping[str, Any], where: str, implied: str | None
) -> list[tuple[workloads.WorkloadInfo, dict[str, Any], str]]:
    """Validate one block; return (workload info, params, label) per grid point."""
    entry = dict(entry)
    if implied is None:
        workload_name = entry.pop("workload", None)
        if workload_name is None:
            raise SpecError(
                f"{where}.workload is required: name a registered workload "
                f"({', '.join(workloads.names())}) or 'module.path:build_function'"
            )
        info = workloads.get(workload_name, where=f"{where}.workload")
    else:
        if "workload" in entry:
            raise SpecError(
                f"{where}.workload is not allowed: [[{where.split('[')[0]}]] blocks always run "
                f"the {implied!r} workload (use [[jobs]] to name another one)"
            )
        info = workloads.get(implied, where=where)
    grid = entry.pop("grid", None)
    axes: list[tuple[str, list[Any]]] = []
    if grid is not None:
        if not isinstance(grid, Mapping) or not grid:
            raise SpecError(
                f"{where}.grid must be a table of non-empty lists (e.g. seeds_per = [1, 2]), got {describe(grid)}"
            )
        for path, values in _flatten_grid(grid):
            key_path = f"{where}.grid.{path}"
            if not isinstance(values, list) or not values:
                raise SpecError(f"{key_path} must be a non-empty list of values, got {describe(values)}")
            if _get_path(entry, path) is not _MISSING:
                raise SpecError(
                    f"{where}.{path} is set both as a value and in {where}.grid; keep one of the two"
                )
            axes.append((path, values))
    out = []
    for combo in itertools.product(*(values for _, values in axes)) if axes else [()]:
        params = copy.deepcopy(entry)
        for (path, _), value in zip(axes, combo, strict=True):
            _set_path(params, path, copy.deepcopy(value))
        try:
            params = info.validate(params, where)
        except SpecError as exc:
            if any(f".{path}" in str(exc) for path, _ in axes):
                point = ", ".join(f"{p}={_label_value(v)}" for (p, _), v in zip(axes, combo, strict=True))
                raise SpecError(f"{exc} (grid point {point})") from None
            raise
        if not isinstance(params, dict):
            raise SpecError(f"{where}: the validator of {info.name!r} must return a dict of params")
        _check_json(params, where)
        label = where
        if axes:
            label += " " + " ".join(f"{p}={_label_value(v)}" for (p, _), v in zip(axes, combo, strict=True))
        out.append((info, params, label))
    return out


def _label_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


_MISSING = object()


def _flatten_grid(grid: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    items: list[tuple[str, Any]] = []
    for key, value in grid.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            items.extend(_flatten_grid(value, path + "."))
        else:
            items.append((path, value))
    return items


def _get_path(table: Mapping[str, Any], path: str) -> Any:
    node: Any = table
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _set_path(table: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    node = table
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def _check_json(params: dict[str, Any], where: str) -> None:
    try:
        json.dumps(params, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise SpecError(
            f"{where}: params must be plain TOML values (strings, numbers, booleans, lists, tables); {exc}"
        ) from None


def _json_roundtrip(raw: dict[str, Any]) -> dict[str, Any]:
    # TOML dates/times are the only values JSON cannot hold: keep them as text.
    return json.loads(json.dumps(raw, default=str))
