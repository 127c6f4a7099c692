"""Shared fixtures. Real data comes from $ATTMASK_DATA; its absence is a failure, not a skip."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """GPU-only tests skip only when no CUDA device exists; nothing else skips by default."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (none available)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def data_root() -> Path:
    env = os.environ.get("ATTMASK_DATA")
    if not env:
        pytest.fail("$ATTMASK_DATA is not set: point it at the shared data folder (../shared/data)")
    root = Path(env)
    if not root.is_dir():
        pytest.fail(f"$ATTMASK_DATA={env} is not a folder")
    return root


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Feature caches of tests live in a per-session temporary folder, never in the user's cache."""
    monkeypatch.setenv("ATTMASK_CACHE", str(tmp_path_factory.getbasetemp() / "feature-cache"))
    monkeypatch.setenv("ATTMASK_BUILTIN", str(tmp_path_factory.getbasetemp() / "builtin-datasets"))
