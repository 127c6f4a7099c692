"""Result records: one JSON file per task run, validated against the shipped schema, atomic.

File name: ``RUN_DIR/<task>-<dataset>-<first 8 hex of protocol_hash>.json`` so protocol variants
never overwrite each other. ``protocol_hash`` is the sha256 of the protocol's canonical JSON.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema

from .atomic import atomic_write_json, read_json
from .errors import BadInput
from .resources import config_root

SCHEMA_ID = "attmask.record/1"


@lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    return json.loads((config_root() / "record.schema.json").read_text())


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str, allow_nan=False)


def protocol_hash(protocol: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(protocol).encode()).hexdigest()


def _safe_component(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", text)


def record_filename(task: str, dataset: str, phash: str) -> str:
    return f"{_safe_component(task)}-{_safe_component(dataset)}-{phash[:8]}.json"


def record_stem(task: str, dataset: str, protocol: dict[str, Any]) -> str:
    """The record's file name without ``.json``: the prefix of a task's side files (masks, sweeps...)."""
    return record_filename(task, dataset, protocol_hash(protocol))[: -len(".json")]


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def validate(record: dict[str, Any]) -> None:
    """Raise ``jsonschema.ValidationError`` unless ``record`` matches the schema and its own hash."""
    jsonschema.validate(record, schema())
    if protocol_hash(record["protocol"]) != record["protocol_hash"]:
        raise jsonschema.ValidationError("protocol_hash does not match the protocol")
    for name, value in record["metrics"].items():
        if not math.isfinite(value):
            raise jsonschema.ValidationError(f"metric {name} is not finite")


def write(run_dir: str | os.PathLike[str], record: dict[str, Any]) -> Path:
    validate(record)
    path = Path(run_dir) / record_filename(record["task"], record["dataset"], record["protocol_hash"])
    atomic_write_json(path, record)
    return path


def read(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate one record; a malformed one is a BadInput naming the file."""
    record = read_json(path, "record")
    try:
        validate(record)
    except jsonschema.ValidationError as exc:
        raise BadInput(path, f"not a valid attmask record: {exc.message}") from None
    return record


def is_record_file(path: Path) -> bool:
    if path.suffix != ".json" or path.name.startswith("."):
        return False
    try:
        with open(path, encoding="utf-8") as fh:
            head = fh.read(4096)
    except (OSError, UnicodeDecodeError):
        return False
    return f'"{SCHEMA_ID}"' in head


def find_records(run_dir: str | os.PathLike[str]) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Every record under ``run_dir`` (recursively, sorted), validated."""
    root = Path(run_dir)
    if not root.is_dir():
        raise BadInput(root, "no such run folder")
    for path in sorted(root.rglob("*.json")):
        if is_record_file(path):
            yield path, read(path)
