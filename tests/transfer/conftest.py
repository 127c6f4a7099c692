"""Fixtures of the transfer tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Run the (small) tensor work of a test on one thread (modules opt in with ``pytestmark``).

    On a shared 2-core machine, OpenMP threads that wait for a descheduled sibling make tiny
    forwards tens of times slower; one thread keeps these tests' run time predictable.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
