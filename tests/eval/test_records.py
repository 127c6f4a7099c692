"""Records: schema, hash, file names, atomicity (a killed writer never leaves a half-written file)."""

from __future__ import annotations

import copy
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import pytest

from attmask.eval import records
from attmask.eval.errors import BadInput
from attmask.eval.options import add_task_arguments
from attmask.eval.runner import run_task

from .fake_tasks import CountTask


def _run(tmp: Path, *argv: str) -> tuple[Path, dict]:
    import argparse

    parser = argparse.ArgumentParser()
    task = CountTask()
    add_task_arguments(parser, task)
    args = parser.parse_args(["--ckpt", "random:vit_d64_l2_h2_patch8_32", "--out", str(tmp), "--device", "cpu", *argv])
    path, record = run_task(task, args)
    assert path is not None
    return path, record


def test_runner_writes_a_valid_record(tmp_path: Path) -> None:
    path, record = _run(tmp_path)
    on_disk = json.loads(path.read_text())
    assert on_disk == record
    records.validate(on_disk)
    assert path.name == f"count-synthetic-{record['protocol_hash'][:8]}.json"
    assert record["protocol_hash"] == records.protocol_hash(record["protocol"])
    assert record["checkpoint"]["arch"] == "vit_d64_l2_h2_patch8_32"
    assert record["checkpoint"]["path"] == "random:vit_d64_l2_h2_patch8_32:seed=0"
    assert record["cost"]["images"] == 7 and record["cost"]["wall_s"] >= 0
    assert record["env"]["torch"] and record["env"]["device"].startswith("cpu")
    assert record["metrics"] == {"score": 50.0, "width": 64.0}


def test_protocol_variants_never_overwrite(tmp_path: Path) -> None:
    a, _ = _run(tmp_path, "--value", "10")
    b, _ = _run(tmp_path, "--value", "20")
    c, _ = _run(tmp_path, "--value", "10", "--reduced")
    assert len({a, b, c}) == 3
    assert sorted(p.name for p in tmp_path.glob("*.json")) == sorted([a.name, b.name, c.name])
    assert json.loads(c.read_text())["protocol"]["reference"] is False


@pytest.mark.parametrize("mutation", ["no-reference", "bad-hash", "fraction-metric-name", "nan", "extra-field",
                                      "null-checkpoint-without-inputs", "string-metric"])
def test_schema_rejects_malformed_records(mutation: str, tmp_path: Path) -> None:
    _, good = _run(tmp_path)
    r = copy.deepcopy(good)
    if mutation == "no-reference":
        del r["protocol"]["reference"]
        r["protocol_hash"] = records.protocol_hash(r["protocol"])
    elif mutation == "bad-hash":
        r["protocol_hash"] = "0" * 64
    elif mutation == "fraction-metric-name":
        r["metrics"] = {}
    elif mutation == "nan":
        r["metrics"]["score"] = float("nan")
    elif mutation == "extra-field":
        r["surprise"] = 1
    elif mutation == "null-checkpoint-without-inputs":
        r["checkpoint"] = None
    elif mutation == "string-metric":
        r["metrics"]["score"] = "50"
    with pytest.raises((jsonschema.ValidationError, ValueError)):
        records.validate(r)


def test_scoring_record_with_inputs_is_valid(tmp_path: Path) -> None:
    _, r = _run(tmp_path)
    r = copy.deepcopy(r)
    r["checkpoint"] = None
    r["inputs"] = [{"path": "/x/gnd.pkl", "sha256": "a" * 64}]
    records.validate(r)


def test_killed_writer_leaves_no_half_written_record(tmp_path: Path) -> None:
    target = tmp_path / "knn-x-00000000.json"
    target.write_text('{"old": true}\n')
    script = f"""
import time
from attmask.eval.atomic import atomic_open
with atomic_open({str(target)!r}, "w") as fh:
    for i in range(10_000):
        fh.write('{{"partial": ' + str(i) + '}}\\n'); fh.flush()
        time.sleep(0.001)
"""
    proc = subprocess.Popen([sys.executable, "-c", script])
    time.sleep(1.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert target.read_text() == '{"old": true}\n'  # untouched: the new content never appeared
    assert not (tmp_path / "knn-x-00000000.json.tmp").exists()


def test_find_records_reads_recursively_and_reports_bad_files(tmp_path: Path) -> None:
    _run(tmp_path / "a")
    _run(tmp_path / "b" / "deeper")
    (tmp_path / "notes.json").write_text('{"not": "a record"}')
    found = list(records.find_records(tmp_path))
    assert len(found) == 2
    bad = tmp_path / "c" / "count-x-11111111.json"
    bad.parent.mkdir()
    bad.write_text('{"schema": "attmask.record/1", "task": "count"}')
    from attmask.eval.errors import BadInput

    with pytest.raises(BadInput, match="not a valid attmask record"):
        list(records.find_records(tmp_path))


@pytest.mark.parametrize("content, problem", [
    (None, "no such file (expected record)"),
    (b"{\"task\": ", "not valid JSON (Expecting value at line 1)"),
    (b"\xff\xfe\x00", "cannot read record"),
    (b"[1, 2]", "not a valid attmask record"),
])
def test_unreadable_records_are_one_line_bad_input(tmp_path: Path, content: bytes | None, problem: str) -> None:
    path = tmp_path / "r.json"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(BadInput) as info:
        records.read(path)
    assert str(info.value).startswith(f"{path}: {problem}")
