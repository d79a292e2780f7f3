"""Entry point for `ray submit CLUSTER.yaml scripts/submit_run.py -- SPEC [simfarm run options]`.

`ray submit` runs this file on the cluster's head node; it attaches to the
cluster's Ray (``--address auto``) and runs the spec there, so the
coordinator -- the run directory's only writer -- lives on the head node and
the run directory is written under ``~/simfarm-runs`` there (fetch it with
``ray rsync-down``). Any ``simfarm run`` option may follow the spec path.

With the job API instead (through ``ray dashboard CLUSTER.yaml``)::

    ray job submit --address http://127.0.0.1:8265 -- simfarm run SPEC --out ~/simfarm-runs
"""

from __future__ import annotations

import sys
from pathlib import Path

from simfarm.cli import main


def submit_args(argv: list[str]) -> list[str]:
    """``simfarm run`` arguments for a head-node run of *argv*."""
    args = ["run", *argv]
    if "--address" not in argv:
        args += ["--address", "auto"]
    if "--out" not in argv and "--resume" not in argv:
        args += ["--out", str(Path.home() / "simfarm-runs")]
    return args


if __name__ == "__main__":
    sys.exit(main(submit_args(sys.argv[1:])))
