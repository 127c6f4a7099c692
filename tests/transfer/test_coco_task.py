"""``attmask-eval coco`` end to end on the CPU: the tiny presets train, test and write a valid record.

Data: a COCO-2017-layout set made from real DAVIS frames and masks (``dense_fixtures.davis_coco``:
8 training and 3 test images, categories car / bird / dog). Backbone: a random tiny ViT saved as
an iBOT checkpoint. The numbers of such a run mean nothing; what is checked is the pipeline:
strict checkpoint import into the detector, training steps, COCOeval through the shared metric
core (the written results re-score identically with ``coco-score``), the record and its protocol.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from attmask.eval import records
from attmask.eval.checkpoint import sha256_file
from attmask.eval.cli import main
from attmask.transfer.coco_metric import metric_names

from .dense_fixtures import davis_coco, tiny_checkpoint

# tiny forwards on a shared 2-core machine: one OpenMP thread keeps them fast (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("single_thread")

SPLITS = {
    "train2017": {"blackswan": [0, 20], "car-shadow": [0, 20], "dog": [0, 30], "drift-chicane": [10, 40]},
    "val2017": {"blackswan": [40], "car-shadow": [35], "libby": [10]},
}


@pytest.fixture(scope="module")
def coco_root(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return davis_coco(data_root, tmp_path_factory.mktemp("davis_coco"), SPLITS)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny_ibot.pth")


def run_coco(ckpt: Path, root: Path, out: Path, preset: str, *extra: str) -> tuple[Path, dict]:
    rc = main(["coco", "--ckpt", str(ckpt), "--data", str(root), "--dataset-name", "davis-coco",
               "--config", preset, "--out", str(out), "--num-workers", "0", *extra])
    assert rc == 0
    found = list(records.find_records(out))
    assert len(found) == 1
    return found[0]


def check_record(record: dict, ckpt: Path, root: Path, preset: str) -> None:
    records.validate(record)
    assert record["task"] == "coco" and record["dataset"] == "davis-coco" and record["split"] == "val2017"
    assert record["checkpoint"]["sha256"] == sha256_file(ckpt) and record["checkpoint"]["key"] == "teacher"
    names = set(metric_names("bbox") + metric_names("segm"))
    assert {"bbox_AP", "segm_AP", "bbox_AR100", "segm_AR100"} <= set(record["metrics"]) <= names
    assert all(0.0 <= v <= 100.0 for v in record["metrics"].values())
    p = record["protocol"]
    assert p["preset"] == preset and p["schedule"] == "tiny" and p["reference"] is False
    assert p["num_classes"] == 3 and p["iou_types"] == ["bbox", "segm"] and p["max_dets"] == [1, 10, 100]
    assert p["layer_decay"] == 0.8 and p["optimizer"] == "AdamW" and p["total_batch_size"] == 2
    assert p["config_sha256"] == records.protocol_hash(p["config"])
    text = json.dumps(p["config"])
    assert str(root) not in text and str(ckpt) not in text  # machine paths are placeholders
    assert p["config"]["model"]["backbone"]["ckpt"] == "${CKPT}"
    assert p["config"]["model"]["neck"]["in_channels"] == [64, 64, 64, 64]  # the tiny ViT's embed dim


@pytest.mark.parametrize("preset", ["tiny_cascade_mask_rcnn_cpu", "tiny_mask_rcnn_cpu"])
def test_tiny_preset_trains_tests_and_records(ckpt: Path, coco_root: Path, tmp_path: Path, preset: str) -> None:
    out = tmp_path / "run"
    path, record = run_coco(ckpt, coco_root, out, preset)
    check_record(record, ckpt, coco_root, preset)
    art = record["artifacts"]
    for key in ("config", "checkpoint", "results_bbox", "results_segm"):
        assert (out / art[key]).is_file(), key
    assert (out / path.stem / "epoch_1.pth").is_file()
    # the results the task wrote re-score to the same numbers through coco-score (one metric core)
    for iou_type in ("bbox", "segm"):
        rc = main(["coco-score", "--gt", str(coco_root / "annotations" / "instances_val2017.json"),
                   "--results", str(out / art[f"results_{iou_type}"]), "--iou-type", iou_type,
                   "--out", str(tmp_path / f"rescore-{iou_type}")])
        assert rc == 0
        (_, rescored), = records.find_records(tmp_path / f"rescore-{iou_type}")
        ours = {k: v for k, v in record["metrics"].items() if k.startswith(iou_type)}
        assert rescored["metrics"] == pytest.approx(ours, abs=1e-9)
    if preset == "tiny_mask_rcnn_cpu":
        # --test-only with the fine-tuned checkpoint, loaded strictly: same model, same numbers
        _, tested = run_coco(ckpt, coco_root, tmp_path / "test_only", preset, "--test-only",
                             "--finetuned", str(out / art["checkpoint"]))
        assert tested["protocol"]["test_only"] is True and tested["protocol"]["train_split"] is None
        assert tested["protocol"]["finetuned"] == sha256_file(out / art["checkpoint"])
        assert tested["metrics"] == pytest.approx(record["metrics"], abs=1e-6)


def test_detector_keeps_the_loaded_backbone(ckpt: Path) -> None:
    """Built from the preset through mmdet's registry and initialised as the Runner does."""
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope

    from attmask.transfer.mm_runner import load_preset

    init_default_scope("mmdet")
    _, _, cfg = load_preset("mmdet", "tiny_cascade_mask_rcnn_cpu")
    cfg.model.backbone.ckpt = str(ckpt)
    cfg.model.neck.in_channels = [64] * 4
    model = MODELS.build(cfg.model)
    model.init_weights()
    raw = torch.load(ckpt, weights_only=True)["teacher"]
    for name in ("blocks.0.attn.qkv.weight", "blocks.3.mlp.fc2.bias", "patch_embed.proj.weight", "cls_token"):
        assert torch.equal(model.backbone.vit.state_dict()[name], raw[f"backbone.{name}"]), name


def test_wrong_dataset_kind_and_missing_split(ckpt: Path, coco_root: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["coco", "--ckpt", str(ckpt), "--dataset", "ade20k-mini", "--config", "tiny_mask_rcnn_cpu",
               "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "dataset 'ade20k-mini' is a ade20k dataset, not a coco one" in err[0]
    rc = main(["coco", "--ckpt", str(ckpt), "--data", str(coco_root), "--train-split", "train2014",
               "--config", "tiny_mask_rcnn_cpu", "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "instances_train2014.json" in err[0]
