"""Every shipped mm preset loads, builds with a real checkpoint, and says what the reference says.

Reference facts (PROTOCOLS.md §4; bytedance/ibot evaluation/README.md and configs): COCO
Cascade Mask R-CNN, AdamW lr 1e-4, wd 0.05; 1x = 12 epochs, steps 8/11, layer decay 0.8, total
batch 32; 3x = 36 epochs, steps 27/33, layer decay 0.75, total batch 16; ADE20K UperNet 512 px,
160k iterations, AdamW lr 3e-5, wd 0.05, layer decay 0.9, 1500 warm-up iterations, poly,
sliding window 512 / 341, total batch 16.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from attmask.transfer.mm_runner import fill_widths, load_preset, preset_names

from .dense_fixtures import tiny_checkpoint

# tiny forwards on a shared 2-core machine: one OpenMP thread keeps them fast (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("single_thread")

COCO = ["cascade_mask_rcnn_vit_coco_1x", "cascade_mask_rcnn_vit_coco_3x", "mask_rcnn_vit_coco_1x",
        "tiny_cascade_mask_rcnn_cpu", "tiny_mask_rcnn_cpu", "demo_mask_rcnn_cpu"]
ADE = ["upernet_vit_ade20k_160k", "linear_vit_ade20k_160k", "tiny_upernet_cpu", "tiny_linear_cpu", "demo_upernet_cpu"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny_ibot.pth")


def test_shipped_presets() -> None:
    assert preset_names("mmdet") == sorted(COCO)
    assert preset_names("mmseg") == sorted(ADE)


def test_coco_reference_presets() -> None:
    for name, epochs, steps, decay, batch in (("cascade_mask_rcnn_vit_coco_1x", 12, [8, 11], 0.8, 32),
                                              ("cascade_mask_rcnn_vit_coco_3x", 36, [27, 33], 0.75, 16)):
        _, _, cfg = load_preset("mmdet", name)
        assert cfg.attmask.reference is True and cfg.attmask.schedule == name[-2:]
        assert cfg.attmask.total_batch_size == batch and cfg.train_dataloader.batch_size * 8 == batch
        assert cfg.train_cfg.max_epochs == epochs and cfg.param_scheduler[1].milestones == steps
        assert cfg.param_scheduler[0].end == 500 and cfg.param_scheduler[0].start_factor == 0.001
        opt = cfg.optim_wrapper
        assert (opt.optimizer.type, opt.optimizer.lr, opt.optimizer.weight_decay) == ("AdamW", 1e-4, 0.05)
        assert opt.paramwise_cfg.layer_decay_rate == decay
        model = cfg.model
        assert model.type == "CascadeRCNN" and model.backbone.type == "AttMaskViT"
        assert model.backbone.drop_path_rate == 0.1 and model.backbone.out_with_norm is False
        heads = model.roi_head.bbox_head
        assert [h.type for h in heads] == ["ConvFCBBoxHead"] * 3
        assert all(h.num_shared_convs == 4 and h.num_shared_fcs == 1 and h.loss_bbox.type == "GIoULoss"
                   and h.loss_bbox.loss_weight == 10.0 and h.reg_decoded_bbox for h in heads)
        assert cfg.test_evaluator.type == "AttMaskCocoMetric"


def test_ade20k_reference_preset() -> None:
    _, _, cfg = load_preset("mmseg", "upernet_vit_ade20k_160k")
    assert cfg.attmask.reference is True and cfg.attmask.total_batch_size == 16
    assert cfg.train_cfg.max_iters == 160000
    warmup, poly = cfg.param_scheduler
    assert (warmup.type, warmup.end, poly.type, poly.power, poly.end) == ("LinearLR", 1500, "PolyLR", 1.0, 160000)
    opt = cfg.optim_wrapper
    assert (opt.optimizer.lr, opt.optimizer.weight_decay, opt.paramwise_cfg.layer_decay_rate) == (3e-5, 0.05, 0.9)
    assert cfg.model.test_cfg.mode == "slide" and cfg.model.test_cfg.stride == (341, 341)
    assert cfg.model.backbone.img_size == 512 and cfg.model.backbone.out_with_norm is True
    _, _, linear = load_preset("mmseg", "linear_vit_ade20k_160k")
    assert linear.attmask.reference is False and linear.model.backbone.frozen is True


@pytest.mark.parametrize("kind,name", [("mmdet", n) for n in COCO] + [("mmseg", n) for n in ADE])
def test_preset_model_builds(kind: str, name: str, ckpt: Path) -> None:
    from mmengine.registry import init_default_scope

    init_default_scope(kind)  # what the Runner does with the config's default_scope
    registry = __import__(f"{kind}.registry", fromlist=["MODELS"]).MODELS
    _, _, cfg = load_preset(kind, name)
    cfg.model.backbone.ckpt = str(ckpt)
    fill_widths(cfg, 64)
    model = registry.build(cfg.model)
    model.init_weights()
    assert model.backbone.embed_dim == 64 and model.backbone.out_indices == (0, 1, 2, 3)
