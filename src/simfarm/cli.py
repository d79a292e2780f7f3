"""``simfarm``: run | inspect | render | report.

Bad input (an invalid spec, a path that is not a run directory) prints one
line on stderr and exits with status 2, never a traceback. ``simfarm run``
exits 0 when every job is done, 1 when any failed (the others still
committed), 130 when interrupted; its last line on stdout is the run
directory's path.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from simfarm.errors import RunDirError, SpecError

__all__ = ["main"]

EXIT_OK, EXIT_FAILED_JOBS, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, like every other bad input
        self.exit(EXIT_BAD_INPUT, f"simfarm: error: {message} (see {self.prog} --help)\n")


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="simfarm", description="A simulation farm on Ray.")
    parser.add_argument("--version", action="version", version=f"simfarm {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="run a spec (no SPEC: the built-in quickstart)")
    run.add_argument("spec", nargs="?", help="TOML spec file (default: the built-in quickstart)")
    run.add_argument("--out", default=None, help="folder for run directories (default: ./simfarm-runs)")
    run.add_argument("--name", help="run name (default: the spec's name)")
    run.add_argument("--address", help="Ray cluster address (default: farm.address, RAY_ADDRESS, or local)")
    run.add_argument("--workers", type=int, help="simulation workers (default: farm.workers or all CPUs)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a spec key, e.g. --set farm.workers=4 --set experiments[0].rounds=3")
    run.add_argument("--resume", metavar="RUN_DIR", help="finish a run whose driver died")
    run.add_argument("--retry-failed", action="store_true", help="with --resume: run failed jobs again")
    run.add_argument("--quiet", action="store_true", help="no progress line")
    run.add_argument("--dashboard", action="store_true", help="start Ray's dashboard on 127.0.0.1")
    run.add_argument("--show-quickstart", action="store_true", help="print the built-in quickstart spec")

    inspect = sub.add_parser("inspect", help="summarise a run directory")
    inspect.add_argument("run_dir")
    inspect.add_argument("--json", action="store_true", help="machine-readable output")

    render = sub.add_parser("render", help="(re)generate artifacts of a stored run")
    render.add_argument("run_dir")
    render.add_argument("--only", help="comma list of gif, mp4, curves, report (default: all enabled)")
    render.add_argument("--workers", type=int, help="render actors (1: no Ray at all)")
    render.add_argument("--quiet", action="store_true", help="no progress line")

    report = sub.add_parser("report", help="(re)write report.html of a stored run")
    report.add_argument("run_dir")
    return parser


def _version() -> str:
    from simfarm import __version__

    return __version__


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``simfarm`` console script; returns the exit status."""
    args = _build_parser().parse_args(argv)
    try:
        if args.command == "run":
            return _cmd_run(args)
        if args.command == "inspect":
            return _cmd_inspect(args)
        if args.command == "render":
            return _cmd_render(args, only=args.only, workers=args.workers, quiet=args.quiet)
        if args.command == "report":
            return _cmd_render(args, only="report", workers=1, quiet=True)
    except (SpecError, RunDirError) as exc:
        print(f"simfarm: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return EXIT_BAD_INPUT


def _cmd_run(args: argparse.Namespace) -> int:
    from simfarm.spec import load_spec, quickstart_text

    if args.show_quickstart:
        print(quickstart_text(), end="")
        return EXIT_OK
    if args.workers is not None and args.workers < 1:
        raise SpecError(f"--workers must be a positive integer, got {args.workers}")
    if args.resume:
        if args.spec or args.overrides or args.name or args.out:
            raise SpecError("--resume takes the spec from the run directory; drop SPEC, --set, --name and --out")
        from simfarm.farm.driver import resume

        result = resume(args.resume, address=args.address, workers=args.workers, quiet=args.quiet,
                        retry_failed=args.retry_failed, dashboard=args.dashboard)
    else:
        if args.retry_failed:
            raise SpecError("--retry-failed goes with --resume RUN_DIR")
        spec = load_spec(args.spec, overrides=args.overrides, name=args.name)
        from simfarm.farm.driver import DEFAULT_OUT, run

        result = run(spec, out=args.out or DEFAULT_OUT, address=args.address, workers=args.workers,
                     quiet=args.quiet, dashboard=args.dashboard)
    if not args.quiet:
        _print_summary(result)
    print(result.run_dir)
    return EXIT_OK if not result.failed and result.status == "done" else EXIT_FAILED_JOBS


def _print_summary(result: Any) -> None:
    counts = {name: len(frame) for name, frame in result.tables().items() if len(frame)}
    tables = ", ".join(f"{n} {name}" for name, n in counts.items()) or "no rows"
    print(f"status: {result.status}; {len(result.jobs)} jobs, {len(result.failed)} failed; {tables}; "
          f"{len(result.artifacts)} artifacts")
    for job_id, error in result.failed.items():
        print(f"  failed {job_id}: {error}")
    report = result.run_dir / "report.html"
    if report.exists():
        print(f"report: {report}")


def _cmd_inspect(args: argparse.Namespace) -> int:
    from simfarm.store import open_run

    result = open_run(args.run_dir)
    summary = _inspect_summary(result)
    if args.json:
        print(json.dumps(summary, indent=2))
        return EXIT_OK
    print(f"run {summary['name']} at {summary['run_dir']}")
    print(f"status: {summary['status']}" + (" (no live driver: resume with simfarm run --resume "
                                            f"{summary['run_dir']})" if summary["stale"] else ""))
    print(f"created {summary['created']}, finished {summary['finished'] or '-'}")
    jobs = summary["jobs"]
    print("jobs: " + ", ".join(f"{n} {status}" for status, n in jobs["by_status"].items()) + f" (of {jobs['total']})")
    for workload, n in jobs["by_workload"].items():
        print(f"  {workload}: {n}")
    for job_id, error in summary["failed"].items():
        print(f"  failed {job_id}: {error}")
    print("tables: " + ", ".join(f"{name} {n} rows" for name, n in summary["tables"].items()))
    print(f"artifacts: {summary['artifacts']}" + (f", {summary['render_failures']} render failures"
                                                  if summary["render_failures"] else ""))
    return EXIT_OK


def _inspect_summary(result: Any) -> dict[str, Any]:
    from simfarm.store import is_live

    manifest = result.manifest
    by_status: dict[str, int] = {}
    by_workload: dict[str, int] = {}
    for _, job in result.jobs.iterrows():
        by_status[job["status"]] = by_status.get(job["status"], 0) + 1
        by_workload[job["workload"]] = by_workload.get(job["workload"], 0) + 1
    status = result.status
    return {
        "run_dir": str(result.run_dir),
        "name": manifest.get("name"),
        "status": status,
        "stale": status == "running" and not is_live(result.run_dir),
        "created": manifest.get("created"),
        "finished": manifest.get("finished"),
        "jobs": {"total": len(result.jobs), "by_status": by_status, "by_workload": by_workload},
        "failed": result.failed,
        "tables": {name: len(frame) for name, frame in result.tables().items()},
        "artifacts": len(result.artifacts),
        "render_failures": sum(1 for r in manifest.get("renders", []) if r.get("status") == "failed"),
        "versions": manifest.get("versions", {}),
    }


def _cmd_render(args: argparse.Namespace, *, only: str | None, workers: int | None, quiet: bool) -> int:
    from simfarm.farm.renderers import render_run
    from simfarm.render.rundir import merge_renders
    from simfarm.store import atomic_write, dumps_json, is_live, read_manifest

    if workers is not None and workers < 1:
        raise SpecError(f"--workers must be a positive integer, got {workers}")
    root = Path(args.run_dir)
    read_manifest(root)  # a clear error for a path that is not a run directory
    if is_live(root):
        raise RunDirError(f"{root} belongs to a live run (its coordinator writes there); wait until it ends")
    try:
        # --workers 1 renders in this process, without Ray.
        entries = render_run(root, only=only, workers=None if workers is None else (0 if workers == 1 else workers),
                             progress=None if quiet else sys.stderr)
    except ValueError as exc:  # a bad --only, or a [render] table that no longer validates
        raise SpecError(str(exc)) from None
    # This process is the run directory's only writer now: record the renders.
    manifest = read_manifest(root)
    manifest["renders"] = sorted(merge_renders(manifest.get("renders", []), entries), key=lambda e: str(e["key"]))
    atomic_write(root / "manifest.json", dumps_json(manifest, indent=1))
    failed = {e["key"]: e["error"] for e in entries if e["status"] == "failed"}
    files = sum(len(e["outputs"]) for e in entries)
    print(f"rendered {len(entries)} task(s), {len(failed)} failed; {files} file(s)")
    for key, error in failed.items():
        print(f"  failed {key}: {str(error).splitlines()[0] if error else ''}", file=sys.stderr)
    print(root)
    return EXIT_OK if not failed else EXIT_FAILED_JOBS


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
