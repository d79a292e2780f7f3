"""Every random number in a run derives from (run seed, job seed, step).

A job's seed is derived from the run's root seed and the job's replicate
seed (the entry of the spec's ``seeds``), never from the job's position in
the schedule, the worker that runs it, or how often it was restarted. Jobs
of different configs that share a replicate seed therefore share their
random streams (common random numbers), which makes config comparisons
paired. Within a job, step ``k`` draws from ``step_rng(job_seed, k)``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["job_seed", "step_rng", "step_seed_sequence", "torch_seed"]


def job_seed(root_seed: int, replicate_seed: int) -> int:
    """The integer seed a workload's ``build(params, seed)`` receives.

    Args:
        root_seed: The spec's ``seed``.
        replicate_seed: The job's entry of the spec's ``seeds``.

    Returns:
        A non-negative integer below 2**63.
    """
    state = np.random.SeedSequence((int(root_seed), int(replicate_seed))).generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))


def step_seed_sequence(seed: int, step: int) -> np.random.SeedSequence:
    """The ``SeedSequence`` for one step of one job."""
    return np.random.SeedSequence((int(seed), int(step)))


def step_rng(seed: int, step: int) -> np.random.Generator:
    """A fresh numpy ``Generator`` for one step of one job."""
    return np.random.default_rng(step_seed_sequence(seed, step))


def torch_seed(seed: int, step: int = 0) -> int:
    """A 63-bit integer for ``torch.Generator.manual_seed`` at (seed, step)."""
    state = step_seed_sequence(seed, step).generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))
