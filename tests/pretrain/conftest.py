"""Pre-training tests run on one torch thread (the root conftest's ``single_thread``): on a shared
2-core machine two OpenMP threads that lose their core to another process spin at every barrier and
a step becomes 5-10x slower; one thread is predictable (and the tiny models gain little from two)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True, scope="module")
def _pretrain_on_one_thread(single_thread: None) -> None:
    """Every pre-training test module uses ``single_thread``."""
