"""Starting a local Ray that is reachable from this machine only."""

from __future__ import annotations

import os
import warnings
from typing import Any

import ray

__all__ = ["init_local_ray"]

_LOOPBACK = ("127.0.0.1", "::1", "localhost")
_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def init_local_ray(num_cpus: int, *, dashboard: bool = False, **kwargs: Any) -> str:
    """``ray.init`` a new single-node Ray whose every port listens on loopback.

    By default Ray takes the machine's network address as its node address,
    so its dashboard agent (which serves the job API), GCS and raylet listen
    on a public interface. A local farm needs none of that: Ray's own switch
    for single-machine use (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, read
    when ray is imported, hence also set on the loaded constant) makes it
    pick 127.0.0.1.

    Args:
        num_cpus: Logical CPUs of the local Ray.
        dashboard: Start the dashboard's web UI (on 127.0.0.1).
        **kwargs: More ``ray.init`` arguments.

    Returns:
        The node address Ray chose (``127.0.0.1`` unless Ray ignored the switch,
        in which case a warning says so).
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    previous_env = os.environ.get(_SWITCH)
    constants: Any = None
    try:
        from ray._private import ray_constants as constants

        previous_constant = constants.ENABLE_RAY_CLUSTER
    except (ImportError, AttributeError):  # a Ray without the switch: checked below
        constants = None
    os.environ[_SWITCH] = "0"
    if constants is not None:
        constants.ENABLE_RAY_CLUSTER = False
    try:
        ray.init(num_cpus=num_cpus, include_dashboard=dashboard, dashboard_host="127.0.0.1", **kwargs)
    finally:
        # Only this start-up needs it; a later ray.init(address=...) must see the default.
        if previous_env is None:
            os.environ.pop(_SWITCH, None)
        else:
            os.environ[_SWITCH] = previous_env
        if constants is not None:
            constants.ENABLE_RAY_CLUSTER = previous_constant
    address = str(ray.get_runtime_context().worker.node.node_ip_address)
    if address not in _LOOPBACK:
        warnings.warn(
            f"the local Ray listens on {address}, not only on loopback; firewall its ports "
            "if this machine is reachable from untrusted networks",
            RuntimeWarning,
            stacklevel=2,
        )
    return address
