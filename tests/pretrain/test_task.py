"""The ``pretrain`` task through the harness's CLI and runner: trains, records, resumes, hands over the checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from attmask.eval.checkpoint import load_backbone
from attmask.eval.cli import main as eval_main
from attmask.eval.records import validate
from attmask.eval.tasks import discover_tasks

from .helpers import TINY


def write_config(path: Path, **overrides: object) -> Path:
    import yaml

    path.write_text(yaml.safe_dump({"base": "cifar10mini_cpu_rand", **TINY, **overrides}))
    return path


def test_pretrain_task_records_and_resumes(tmp_path: Path, data_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert discover_tasks()["pretrain"].name == "pretrain"
    cfg = write_config(tmp_path / "tiny.yaml", eval_every=2, nb_knn=[10, 20], pred_shape="rand")
    out = tmp_path / "run"
    assert eval_main(["pretrain", "--config", str(cfg), "--out", str(out), "--max-steps", "4"]) == 0
    assert eval_main(["pretrain", "--config", str(cfg), "--out", str(out)]) == 0  # resumes to the end
    records = sorted(out.glob("pretrain-cifar10-mini-*.json"))
    assert len(records) == 2  # max_steps is part of the protocol: two protocol hashes
    full = [json.loads(p.read_text()) for p in records if json.loads(p.read_text())["protocol"]["max_steps"] is None]
    assert len(full) == 1
    rec = full[0]
    validate(rec)
    assert rec["task"] == "pretrain" and rec["dataset"] == "cifar10-mini" and rec["checkpoint"] is None
    assert rec["protocol"]["reference"] is False and rec["protocol"]["pred_shape"] == "rand"
    assert rec["artifacts"] == {"checkpoint": "checkpoint.pth"} and rec["inputs"][0]["path"].endswith("tiny.yaml")
    m = rec["metrics"]
    assert {"loss", "loss_cls", "loss_patch", "teacher_entropy", "knn_top1@k20"} <= set(m)
    assert 0 <= m["knn_top1@k20"] <= 100
    bb = load_backbone(str(out / rec["artifacts"]["checkpoint"]))
    assert bb.info.format == "attmask"
    # a finished run is not trained again: the task only re-reads its logs
    assert eval_main(["pretrain", "--config", str(cfg), "--out", str(out)]) == 0
    assert "pretrain cifar10-mini" in capsys.readouterr().out


def test_pretrain_task_bad_config_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert eval_main(["pretrain", "--config", "no_such_preset", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "not a file and not a shipped pretrain preset" in err and "\n" not in err
