"""``attmask-eval ade20k`` end to end on the CPU with the real ade20k-mini samples.

Both tiny presets train 2 iterations (on the 3 validation images, named as the training split:
ade20k-mini has no other), test with sliding-window inference and write a valid record. The
linear preset also exercises ``--resume`` (from its iteration-1 checkpoint, through the
restricted checkpoint loader) and ``--test-only`` (re-testing the run's own last checkpoint), and
runs under torchrun with 2 CPU processes (gloo): the multi-GPU path minus the GPUs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from attmask.eval import records
from attmask.eval.checkpoint import sha256_file
from attmask.eval.cli import main

from .dense_fixtures import tiny_checkpoint

# tiny forwards on a shared 2-core machine: one OpenMP thread keeps them fast (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny_ibot.pth")


def run_ade(ckpt: Path, out: Path, preset: str, *extra: str) -> tuple[Path, dict]:
    rc = main(["ade20k", "--ckpt", str(ckpt), "--dataset", "ade20k-mini", "--train-split", "validation",
               "--config", preset, "--out", str(out), "--num-workers", "0", *extra])
    assert rc == 0
    found = list(records.find_records(out))
    assert len(found) == 1
    return found[0]


def check_record(record: dict, ckpt: Path, preset: str, head: str) -> None:
    records.validate(record)
    assert record["task"] == "ade20k" and record["dataset"] == "ade20k-mini" and record["split"] == "validation"
    assert record["checkpoint"]["sha256"] == sha256_file(ckpt)
    assert set(record["metrics"]) == {"mIoU", "mAcc", "aAcc"}
    assert all(0.0 <= v <= 100.0 for v in record["metrics"].values())
    p = record["protocol"]
    assert p["preset"] == preset and p["head"] == head and p["schedule"] == "tiny" and p["iters"] == 2
    assert p["reference"] is False and p["train_split"] == "validation" and p["inference"] == "slide"
    assert p["config_sha256"] == records.protocol_hash(p["config"])
    assert "${DATA}" in json.dumps(p["config"]) and p["config"]["model"]["backbone"]["ckpt"] == "${CKPT}"
    assert record["cost"]["images"] == 2 * 2 + 3


def test_tiny_upernet(ckpt: Path, tmp_path: Path) -> None:
    _, record = run_ade(ckpt, tmp_path, "tiny_upernet_cpu")
    check_record(record, ckpt, "tiny_upernet_cpu", "upernet")
    p = record["protocol"]
    assert p["layer_decay"] == 0.9 and p["lr"] == 3e-5
    head = p["config"]["model"]["decode_head"]
    assert head["type"] == "UPerHead" and head["in_channels"] == [64] * 4 and head["channels"] == 64


def test_tiny_linear_with_resume_and_test_only(ckpt: Path, tmp_path: Path) -> None:
    path, record = run_ade(ckpt, tmp_path, "tiny_linear_cpu")
    check_record(record, ckpt, "tiny_linear_cpu", "linear")
    head = record["protocol"]["config"]["model"]["decode_head"]
    assert head["in_channels"] == [64] * 4 and head["channels"] == 256 and record["protocol"]["layer_decay"] is None
    work = tmp_path / path.stem
    assert (work / "iter_1.pth").is_file() and (work / "iter_2.pth").is_file()
    # interrupted after iteration 1: --resume continues from it and rewrites the same record
    (work / "last_checkpoint").write_text(str(work / "iter_1.pth"))
    path2, resumed = run_ade(ckpt, tmp_path, "tiny_linear_cpu", "--resume")
    assert path2 == path and resumed["protocol_hash"] == record["protocol_hash"]
    logs = sorted(work.glob("*/*.log"))
    assert "resumed epoch: 0, iter: 1" in logs[-1].read_text()
    # --test-only re-tests the last checkpoint of this protocol: the frozen ViT + the same head
    path3, tested = run_ade(ckpt, tmp_path, "tiny_linear_cpu", "--test-only")
    assert path3 == path and tested["metrics"] == pytest.approx(resumed["metrics"], abs=1e-9)


def test_ade20k_mini_needs_a_training_split(ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["ade20k", "--ckpt", str(ckpt), "--dataset", "ade20k-mini", "--config", "tiny_linear_cpu",
               "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--train-split" in err[0]


def test_two_processes_under_torchrun(ckpt: Path, tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "attmask.eval.cli", "ade20k", "--ckpt", str(ckpt), "--dataset", "ade20k-mini",
                           "--train-split", "validation", "--config", "tiny_linear_cpu", "--out", str(tmp_path),
                           "--num-workers", "0", "--device", "cpu"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (path, record), = records.find_records(tmp_path)
    records.validate(record)
    assert record["protocol"]["total_batch_size"] == 4  # 2 images per process x 2 processes
    assert set(record["metrics"]) == {"mIoU", "mAcc", "aAcc"}
    assert (tmp_path / path.stem / "iter_2.pth").is_file()
