"""The demo pipeline in a reduced form: every artefact exists and every record validates.

Runs ``attmask-eval demo`` with a suite of the demo's shape (pre-train with AttMask-High, a random
init baseline; every task) shrunk to seconds: 2 pre-training steps on 20 images per class, subsets,
tiny resolutions and iteration counts. The full demo (``make demo``) is the same code path.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from attmask.eval import records
from attmask.eval.cli import main
from attmask.eval.regress import load_reference
from attmask.eval.suite import load_suite

ARCH = "vit_d128_l4_h2_patch4_32"
PRETRAIN_OVERRIDES = ["subset=20", "eval_every=1", "nb_knn=[10,20]", "batch_size_per_gpu=32", "local_crops_number=2",
                      "num_workers=0", "log_every=1"]


def _suite(tmp: Path, with_data: bool) -> Path:
    dataset = "cifar10-mini" if with_data else "sklearn-digits"
    pre = {"config": "cifar10mini_cpu_attmask_high", "epochs": 1, "max-steps": 2,
           "positional": [*PRETRAIN_OVERRIDES, f"dataset={dataset}"]}
    cls = {"dataset": dataset, "resize": 32, "crop": 32, "subset": 20, "test-subset": 10}
    tasks = [
        {"task": "knn", "args": {**cls, "ks": [10, 20]}},
        {"task": "linear", "args": {**cls, "iterations": 20, "lrs": [0.01, 0.1], "feature-sets": ["cls"],
                                    "weight-decays": [0.0]}},
        {"task": "fewshot", "args": {"dataset": dataset, "resize": 32, "crop": 32, "test-subset": 10, "shots": [1, 5]}},
    ]
    if with_data:
        tasks += [
            {"task": "retrieval", "needs": ["roxford5k-mini"],
             "args": {"dataset": "roxford5k-mini", "imsize": 48, "no-multiscale": True}},
            {"task": "davis", "needs": ["davis-mini"],
             "args": {"dataset": "davis-mini", "short-side": 32, "long-multiple": 32, "sequences": ["blackswan"],
                      "max-frames": 3}},
            {"task": "coco", "needs": ["davis-mini"],
             "args": {"data": "{out}/data/davis-mini-coco", "dataset-name": "davis-mini-coco",
                      "config": "demo_mask_rcnn_cpu", "cfg-options": ["train_cfg.max_epochs=1"]}},
            {"task": "ade20k", "needs": ["ade20k-mini"],
             "args": {"dataset": "ade20k-mini", "train-split": "validation", "config": "demo_upernet_cpu",
                      "cfg-options": ["train_cfg.max_iters=2"]}},
            {"task": "ade20k", "needs": ["ade20k"], "args": {"dataset": "ade20k"}},
        ]
    suite = {"name": "demo-test", "checkpoints": [{"label": "attmask_high", "pretrain": pre},
                                                   {"label": "random_init", "ckpt": f"random:{ARCH}"}],
             "tasks": tasks}
    path = tmp / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    return path


def _check_records(out: Path) -> list[dict]:
    found = list(records.find_records(out))
    for _path, rec in found:
        records.validate(rec)
        assert rec["protocol"]["reference"] is False  # every demo number is a reduced-setting number
    return [rec for _, rec in found]


@pytest.mark.usefixtures("data_root")
def test_demo_pipeline_with_the_mini_datasets(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    # a registry entry whose folder is missing is skipped with its reason, not run
    suite = _suite(tmp_path, with_data=True)
    out = tmp_path / "demo"
    rc = main(["demo", "--suite", str(suite), "--out", str(out), "--device", "cpu"])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "skipping ade20k:" in text and "ade20k/ADEChallengeData2016" in text
    recs = _check_records(out)
    tasks = {(r["task"], r["dataset"]) for r in recs}
    for expected in [("pretrain", "cifar10-mini"), ("knn", "cifar10-mini"), ("linear", "cifar10-mini"),
                     ("fewshot", "cifar10-mini"), ("retrieval", "roxford5k-mini"), ("davis", "davis-mini"),
                     ("coco", "davis-mini-coco"), ("ade20k", "ade20k-mini")]:
        assert expected in tasks, expected
    per_ckpt = {label: sum(1 for p, _ in records.find_records(out / label) if p.parent == out / label)
                for label in ("attmask_high", "random_init")}
    assert per_ckpt == {"attmask_high": 7, "random_init": 7}  # knn, linear, fewshot, retrieval, davis, coco, ade20k
    for artefact in ("report.md", "report.csv", "report.png", "knn_curves.png"):
        assert (out / artefact).stat().st_size > 0, artefact
    assert len(list((out / "visualize").glob("*.png"))) == 6
    assert (out / "attmask_high" / "pretrain" / "checkpoint.pth").is_file()
    md = (out / "report.md").read_text()
    assert "| attmask_high | random_init |" in md
    assert "where everything is:" in text and str(out / "report.md") in text
    # resume: a second run does no work
    assert main(["demo", "--suite", str(suite), "--out", str(out), "--device", "cpu"]) == 0
    assert capsys.readouterr().out.count("skipped ") >= 14


def test_demo_without_data_runs_the_digits(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ATTMASK_DATA", raising=False)
    out = tmp_path / "demo"
    rc = main(["demo", "--suite", str(_suite(tmp_path, with_data=False)), "--out", str(out), "--device", "cpu"])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "$ATTMASK_DATA is not set" in text and "retrieval, DAVIS, COCO and ADE20K need the mini datasets" in text
    recs = _check_records(out)
    assert {(r["task"], r["dataset"]) for r in recs} == {("pretrain", "sklearn-digits"), ("knn", "sklearn-digits"),
                                                        ("linear", "sklearn-digits"), ("fewshot", "sklearn-digits")}
    assert json.loads(next((out / "random_init").glob("knn-*.json")).read_text())["metrics"]["top1@k20"] > 20
    assert (out / "report.md").exists() and (out / "knn_curves.png").exists()


def _protocol(constraints: dict) -> dict:
    """A record protocol that holds the dotted constraints of a reference entry."""
    protocol: dict = {}
    for key, value in constraints.items():
        node = protocol
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return protocol


def test_shipped_demo_references_cover_the_demo_suite() -> None:
    suite = load_suite("demo")
    tasks = {t.task for t in suite.tasks}
    for c in suite.checkpoints:
        setting, refs = load_reference(f"demo_{c.label}")
        assert setting == f"demo_{c.label}"
        assert {r.task for r in refs} == tasks, c.label
        assert all(r.protocol.get("reference") is False for r in refs)  # mini-benchmark numbers, never the paper's


def test_demo_regresses_each_checkpoint_against_its_reference(tmp_path: Path) -> None:
    from attmask.eval.demo import _regress
    from attmask.eval.records import protocol_hash, write

    suite = load_suite("demo")
    for label, shift in (("attmask_high", 0.0), ("rand", None)):  # rand: one metric beyond its tolerance
        _, refs = load_reference(f"demo_{label}")
        for i, ref in enumerate(refs):
            value = ref.value + (ref.tolerance + 1.0 if shift is None and i == 0 else 0.0)
            protocol = _protocol(ref.protocol)
            write(tmp_path / label, {
                "schema": "attmask.record/1", "task": ref.task, "dataset": ref.dataset, "split": "test",
                "metrics": {ref.metric: value}, "protocol": protocol, "protocol_hash": protocol_hash(protocol),
                "checkpoint": {"path": f"/ck/{label}.pth", "sha256": "0" * 64, "key": "teacher", "arch": ARCH},
                "env": {"python": "3.11", "torch": "2", "timm": "1", "faiss": None, "mm": {}, "git": None,
                        "device": "cpu"},
                "cost": {"wall_s": 1.0, "images": 1, "peak_mem_mb": 1.0},
                "started": "2026-01-01T00:00:00+00:00", "finished": "2026-01-01T00:00:01+00:00"})
    ok, lines = _regress("demo", suite, tmp_path)  # random_init has no folder: not regressed
    assert not ok and len(lines) == 2
    assert lines[0].startswith("regress against demo_attmask_high:") and "8 pass, 0 fail" in lines[0]
    assert lines[1].startswith("regress against demo_rand:") and "7 pass, 1 fail" in lines[1]
