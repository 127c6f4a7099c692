"""Pre-training tests run on one torch thread: on a shared 2-core machine, two OpenMP threads that
lose their core to another process spin at every barrier and a step becomes 5-10x slower; one thread
is predictable (and the tiny models gain little from two)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
