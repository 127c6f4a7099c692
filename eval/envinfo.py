"""The record's ``env``: versions of what produced a number, the git revision and the device."""

from __future__ import annotations

import platform
import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

MM_PACKAGES = ("mmengine", "mmcv", "mmdet", "mmsegmentation")


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def faiss_version() -> str | None:
    for dist in ("faiss-gpu", "faiss-cpu", "faiss"):
        v = _version(dist)
        if v is not None:
            return f"{dist} {v}"
    return None


@lru_cache(maxsize=1)
def git_revision() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    rev = out.stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                           capture_output=True, text=True, timeout=10)
    return rev + ("+dirty" if dirty.returncode == 0 and dirty.stdout.strip() else "")


def device_name(device: torch.device | str) -> str:
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.machine()})"


def collect(device: torch.device | str = "cpu") -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": _version("timm") or "missing",
        "faiss": faiss_version(),
        "mm": {name: _version(name) for name in MM_PACKAGES},
        "git": git_revision(),
        "device": device_name(device),
    }
