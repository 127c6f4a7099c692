"""Packaged configuration files (``attmask.configs``), reached by name or by path.

``find_config("suites", "demo")`` returns the shipped ``configs/suites/demo.yaml``; an existing
file path is accepted as well, so users can keep their own presets anywhere.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .errors import BadInput

CONFIG_PACKAGE = "attmask.configs"


def config_root() -> Path:
    return Path(str(resources.files(CONFIG_PACKAGE)))


def available(kind: str, suffixes: tuple[str, ...] = (".yaml", ".yml")) -> list[str]:
    folder = config_root() / kind
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.iterdir() if p.suffix in suffixes and not p.name.startswith("_"))


def find_config(kind: str, name_or_path: str | os.PathLike[str], suffixes: tuple[str, ...] = (".yaml", ".yml")) -> Path:
    """Resolve a preset name (``configs/<kind>/<name>.yaml``) or an existing file path."""
    candidate = Path(name_or_path)
    if candidate.is_file():
        return candidate
    if candidate.suffix in suffixes or os.sep in str(name_or_path):
        raise BadInput(name_or_path, f"no such {kind} file")
    for suffix in suffixes:
        packaged = config_root() / kind / f"{name_or_path}{suffix}"
        if packaged.is_file():
            return packaged
    names = ", ".join(available(kind, suffixes)) or "(none shipped)"
    raise BadInput(name_or_path, f"not a file and not a shipped {kind} preset (available: {names})")


def load_yaml(path: str | os.PathLike[str]) -> Any:
    """Read a YAML file; a syntax error or unreadable file is a BadInput naming the file."""
    try:
        with open(path, encoding="utf-8") as fh:
            return yaml.safe_load(fh)
    except FileNotFoundError:
        raise BadInput(path, "no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(path, f"cannot read: {exc}") from None
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BadInput(path, f"invalid YAML: {first}") from None
