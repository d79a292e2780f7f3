"""Shared fixtures. Ray-using test modules take `ray_cluster` (one local Ray per module)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")
# Keep test-started Ray quiet and off the network.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


@pytest.fixture(scope="module")
def ray_local():
    """A real local Ray with 2 CPUs for one test module, shut down after it."""
    import ray

    from simfarm.farm.local import init_local_ray

    if ray.is_initialized():
        ray.shutdown()
    init_local_ray(2, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()
