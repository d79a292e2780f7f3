"""Fixtures for the env tests: one torch thread per test.

Small tensors gain nothing from a second thread, and on a busy 2-core CI
machine OpenMP's spinning threads make them many times slower; the farm sets
the thread count per job the same way (``torch.set_num_threads(num_cpus)``).
"""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Run each test with ``torch.set_num_threads(1)``; restore the setting after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
