"""A fixture for tests of many small tensor operations on shared CPUs.

With two intra-op threads on a 2-core machine that other jobs also load, every small parallel
region waits for a descheduled thread: the 104-head linear sweep measured 5-15 iterations/s
with two threads and 180-210 with one. Results do not depend on the thread count beyond float
rounding, and no test here compares timings.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(scope="module")
def single_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
