"""``coco-score`` and the COCO metric core against cocoapi's own reference numbers.

``$ATTMASK_DATA/coco-eval`` holds real COCO val2014 ground truth for 100 images, cocoapi's "fake"
bbox / segm results and ``val2014_fake_eval_res.txt``, the summary cocoapi printed for them. Every
one of its 12 bbox and 12 segm numbers (3 decimals, fractions) must be reproduced by the CLI.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from attmask.eval import records
from attmask.eval.checkpoint import sha256_file
from attmask.eval.cli import main
from attmask.transfer.coco_metric import coco_summary, load_ground_truth, metric_names

GT = "instances_val2014_100.json"
RESULTS = {"bbox": "instances_val2014_fakebbox100_results.json", "segm": "instances_val2014_fakesegm100_results.json"}


def reference_summary(path: Path) -> dict[str, dict[str, float]]:
    """The 12 numbers per type of cocoapi's printed summary, in COCOeval.stats order."""
    out: dict[str, dict[str, float]] = {}
    for block in path.read_text().split("type=")[1:]:
        kind = block.split()[0]
        values = [float(v) for v in re.findall(r"\] = (-?\d\.\d+)", block)]
        if kind in ("bbox", "segm"):
            assert len(values) == 12
            out[kind] = dict(zip(metric_names(kind), values))
    return out


@pytest.fixture(scope="module")
def coco_eval(data_root: Path) -> Path:
    return data_root / "coco-eval"


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_coco_score_reproduces_cocoapi_summary(coco_eval: Path, tmp_path: Path, iou_type: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    expected = reference_summary(coco_eval / "val2014_fake_eval_res.txt")[iou_type]
    gt, res = coco_eval / GT, coco_eval / RESULTS[iou_type]
    rc = main(["coco-score", "--gt", str(gt), "--results", str(res), "--iou-type", iou_type, "--out", str(tmp_path)])
    assert rc == 0
    found = list(records.find_records(tmp_path))
    assert len(found) == 1
    path, record = found[0]
    records.validate(record)
    assert record["task"] == "coco" and record["checkpoint"] is None
    assert record["dataset"] == "instances_val2014_100" and record["split"] == "val2014_100"
    assert record["protocol"]["scored"] == "existing" and record["protocol"]["max_dets"] == [1, 10, 100]
    assert record["protocol"]["iou_types"] == [iou_type] and record["protocol"]["reference"] is True
    assert record["inputs"] == [{"path": str(gt.resolve()), "sha256": sha256_file(gt)},
                                {"path": str(res.resolve()), "sha256": sha256_file(res)}]
    assert set(record["metrics"]) == set(expected)
    for name, value in expected.items():  # percent, to cocoapi's 3 printed decimals
        assert round(record["metrics"][name] / 100, 3) == pytest.approx(value, abs=1e-9), name
    assert path.name.startswith("coco-instances_val2014_100-")
    printed = capsys.readouterr().out
    assert f"{iou_type}_AP " in printed and "record:" in printed


def test_headline_numbers(coco_eval: Path) -> None:
    gt = load_ground_truth(coco_eval / GT)
    bbox = coco_summary(gt, json.loads((coco_eval / RESULTS["bbox"]).read_text()), "bbox")
    segm = coco_summary(gt, json.loads((coco_eval / RESULTS["segm"]).read_text()), "segm")
    assert round(bbox["bbox_AP"], 1) == 50.5 and round(segm["segm_AP"], 1) == 32.0


def test_default_iou_types_follow_the_results(coco_eval: Path, tmp_path: Path) -> None:
    # segm results carry segmentations: both types are scored (bbox from the masks' boxes)
    rc = main(["coco-score", "--gt", str(coco_eval / GT), "--results", str(coco_eval / RESULTS["segm"]),
               "--out", str(tmp_path / "segm")])
    assert rc == 0
    (_, record), = records.find_records(tmp_path / "segm")
    assert record["protocol"]["iou_types"] == ["bbox", "segm"]
    assert set(record["metrics"]) == set(metric_names("bbox") + metric_names("segm"))
    rc = main(["coco-score", "--gt", str(coco_eval / GT), "--results", str(coco_eval / RESULTS["bbox"]),
               "--out", str(tmp_path / "bbox")])
    assert rc == 0
    (_, record), = records.find_records(tmp_path / "bbox")
    assert record["protocol"]["iou_types"] == ["bbox"]


def test_empty_results_score_zero(coco_eval: Path) -> None:
    gt = load_ground_truth(coco_eval / GT)
    out = coco_summary(gt, [], "bbox")
    assert out["bbox_AP"] == 0.0 and out["bbox_AR100"] == 0.0


def test_bad_inputs_exit_2(coco_eval: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5}]))
    rc = main(["coco-score", "--gt", str(coco_eval / GT), "--results", str(bad), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "image ids absent from the ground truth" in err[0] and str(bad) in err[0]
    bad.write_text("{not json")
    rc = main(["coco-score", "--gt", str(coco_eval / GT), "--results", str(bad), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "not valid JSON" in err[0]
    rc = main(["coco-score", "--gt", str(coco_eval / RESULTS["bbox"]), "--results", str(coco_eval / RESULTS["bbox"]),
               "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "ground truth" in err[0]
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").glob("*.json"))
