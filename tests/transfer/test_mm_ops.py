"""mmcv 2.1.0's compiled ops load and compute on the CPU (the detectors need nms and RoIAlign).

mmcv is built from source by ``make install`` (tools/install_mm.sh); a build without ops (or with
ops that fail to load) would only show up deep inside mmdet. Expected values are computed by hand.
"""

from __future__ import annotations

import torch


def test_compiled_extension_loads() -> None:
    from mmcv.utils import ext_loader

    ext = ext_loader.load_ext("_ext", ["nms", "roi_align_forward"])
    assert hasattr(ext, "nms") and hasattr(ext, "roi_align_forward")


def test_nms_on_cpu() -> None:
    from mmcv.ops import nms

    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 9]], dtype=torch.float32)
    scores = torch.tensor([0.9, 0.8, 0.7, 0.95])
    dets, keep = nms(boxes, scores, iou_threshold=0.5)
    # box 3 (0.95) suppresses box 0 (IoU 90/100 = 0.9) and box 1 (IoU 81/(90+100-81) = 0.74);
    # box 2 does not overlap anything.
    assert keep.tolist() == [3, 2]
    torch.testing.assert_close(dets[:, 4], torch.tensor([0.95, 0.7]))
    torch.testing.assert_close(dets[:, :4], boxes[[3, 2]])


def test_roi_align_on_cpu() -> None:
    from mmcv.ops import RoIAlign, roi_align

    ys, xs = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
    feat = (xs + 10 * ys)[None, None]  # f(y, x) = x + 10 y: bilinear interpolation of it is exact
    rois = torch.tensor([[0.0, 0.0, 0.0, 4.0, 4.0]])  # (batch index, x1, y1, x2, y2)
    out = roi_align(feat, rois, (2, 2), 1.0, 1, "avg", True)
    # aligned: the box starts at -0.5; bins of 2 px; one sample at each bin centre: x, y in {0.5, 2.5}
    expected = torch.tensor([[[[0.5 + 5, 2.5 + 5], [0.5 + 25, 2.5 + 25]]]])
    torch.testing.assert_close(out, expected)
    module = RoIAlign(output_size=(2, 2), spatial_scale=1.0, sampling_ratio=1, aligned=True)
    torch.testing.assert_close(module(feat, rois), expected)
    # gradients flow back to the feature map (training uses the backward op)
    feat = feat.clone().requires_grad_(True)
    roi_align(feat, rois, (2, 2), 1.0, 1, "avg", True).sum().backward()
    assert feat.grad is not None and abs(float(feat.grad.sum()) - 4.0) < 1e-5
