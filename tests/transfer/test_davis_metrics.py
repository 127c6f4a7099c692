"""J / F / statistics against hand-worked values, the official OSVOS results, and davis-score errors."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from attmask.eval import records
from attmask.eval.cli import main
from attmask.transfer.davis_io import write_indexed_png
from attmask.transfer.davis_metrics import (
    boundary_f,
    boundary_map,
    disk_radius,
    matched_boundary,
    region_jaccard,
    statistics,
)

pytestmark = pytest.mark.usefixtures("single_thread")

NAMES = ["J&F_mean", "J_mean", "J_recall", "J_decay", "F_mean", "F_recall", "F_decay"]


def test_boundary_map_by_hand() -> None:
    seg = np.zeros((1, 4, 4), dtype=bool)
    seg[0, 1:3, 1:3] = True
    # a pixel is boundary when it differs from its east, south or south-east neighbour;
    # the last column compares with the south one only, the last row with the east one only
    want = np.array([[1, 1, 1, 0],
                     [1, 0, 1, 0],
                     [1, 1, 1, 0],
                     [0, 0, 0, 0]], dtype=bool)
    assert (boundary_map(seg)[0] == want).all()


def _dilate_bruteforce(b: np.ndarray, r: int) -> np.ndarray:
    """Dilation with the disk {dx² + dy² <= r²} by explicit shifts (what cv2.dilate(disk(r)) computes)."""
    h, w = b.shape
    out = np.zeros_like(b)
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            if dx * dx + dy * dy <= r * r:
                shifted = np.zeros_like(b)
                shifted[max(0, dy): h + min(0, dy), max(0, dx): w + min(0, dx)] = \
                    b[max(0, -dy): h - max(0, dy), max(0, -dx): w - max(0, dx)]
                out |= shifted
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_boundary_matching_equals_disk_dilation(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a = np.zeros((40, 50), dtype=bool)
    b = np.zeros((40, 50), dtype=bool)
    a[rng.integers(0, 20):rng.integers(21, 40), rng.integers(0, 25):rng.integers(26, 50)] = True
    b[rng.integers(0, 20):rng.integers(21, 40), rng.integers(0, 25):rng.integers(26, 50)] = True
    ab, bb = boundary_map(a[None])[0], boundary_map(b[None])[0]
    for r in (1, 3, 5):
        assert matched_boundary(ab, bb, r) == int((ab & _dilate_bruteforce(bb, r)).sum())


def test_f_and_j_edge_cases() -> None:
    assert disk_radius(480, 854) == 8  # ceil(0.008 * 979.6)
    m = np.zeros((3, 20, 20), dtype=bool)
    m[:, 5:15, 5:15] = True
    empty = np.zeros_like(m)
    assert boundary_f(m, m).tolist() == [1.0, 1.0, 1.0]
    assert boundary_f(empty, empty).tolist() == [1.0] * 3  # nothing to find, nothing found
    assert boundary_f(m, empty).tolist() == [0.0] * 3  # P 1, R 0
    assert region_jaccard(empty, empty).tolist() == [1.0] * 3
    half = m.copy()
    half[:, 10:] = False  # 50 of the 100 pixels
    assert region_jaccard(m, half).tolist() == pytest.approx([0.5] * 3)
    void = np.zeros_like(m)
    void[:, 10:15, :] = True  # the disagreeing rows are void: excluded
    assert region_jaccard(m, half, void).tolist() == pytest.approx([1.0] * 3)


def test_statistics_by_hand() -> None:
    # n = 8: bins ids = round(linspace(1, 8, 5)) - 1 = [0, 2, 4, 5, 7]: first bin frames 0..2,
    # last bin frames 5..7, so decay = mean(1, 1, 1) - mean(0, 0, 0) = 1; recall = 3/8 frames > 0.5
    mean, recall, decay = statistics(np.array([1, 1, 1, 0.5, 0.5, 0, 0, 0]))
    assert (mean, recall, decay) == pytest.approx((0.5, 3 / 8, 1.0))


def _record(folder: Path) -> dict:
    files = [p for p in folder.glob("*.json") if records.is_record_file(p)]
    assert len(files) == 1
    rec = json.loads(files[0].read_text())
    records.validate(rec)
    return rec


def test_ground_truth_scored_against_itself_is_perfect(data_root: Path, tmp_path: Path) -> None:
    davis = data_root / "davis-mini" / "DAVIS"
    out = tmp_path / "gt"
    assert main(["davis-score", "--results", str(davis / "Annotations" / "480p"), "--data", str(davis),
                 "--out", str(out)]) == 0
    rec = _record(out)
    assert rec["task"] == "davis" and rec["dataset"] == "davis-mini" and rec["checkpoint"] is None
    m = rec["metrics"]
    assert list(m) == NAMES
    for name in ("J&F_mean", "J_mean", "J_recall", "F_mean", "F_recall"):
        assert m[name] == pytest.approx(100.0)
    assert m["J_decay"] == pytest.approx(0.0) and m["F_decay"] == pytest.approx(0.0)


def test_osvos_scores_match_the_official_evaluation(data_root: Path, tmp_path: Path) -> None:
    # Reference values: davis2017-evaluation's algorithm (metrics.py with cv2.dilate and a skimage
    # disk, utils.db_statistics, evaluation.py's means over objects), transcribed in a scratch
    # script and run on these files while developing this module: J&F 81.421985,
    # J 79.589221 / 86.823184 / 13.145013, F 83.254749 / 94.159941 / 11.376377 (M / R / D, percent).
    davis = data_root / "davis-mini" / "DAVIS"
    out = tmp_path / "osvos"
    assert main(["davis-score", "--results", str(data_root / "davis-mini" / "osvos"), "--data", str(davis),
                 "--out", str(out)]) == 0
    rec = _record(out)
    official = [81.421985, 79.589221, 86.823184, 13.145013, 83.254749, 94.159941, 11.376377]
    assert [rec["metrics"][n] for n in NAMES] == pytest.approx(official, abs=1e-5)
    assert rec["protocol"]["scored"] == "existing" and rec["protocol"]["reference"] is True
    # predictions scored (frames 1..n-2) and annotations read (those plus each first frame)
    assert [i["files"] for i in rec["inputs"]] == [241, 246]
    rows = list(csv.DictReader((out / rec["artifacts"]["per_sequence"]).open()))
    assert [r["sequence"] for r in rows] == ["blackswan_1", "car-shadow_1", "drift-chicane_1", "dog_1", "libby_1"]
    assert float(rows[0]["J_mean"]) == pytest.approx(94.302, abs=1e-3)
    assert (out / rec["artifacts"]["inputs_manifest"]).is_file()
    assert not list((data_root / "davis-mini" / "osvos").glob("*.csv"))  # nothing written into the results


def _tiny_davis(root: Path, frames: int = 4) -> Path:
    """A one-sequence DAVIS folder with 20x30 frames and a single object."""
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("toy\n")
    (root / "JPEGImages" / "480p" / "toy").mkdir(parents=True)
    (root / "Annotations" / "480p" / "toy").mkdir(parents=True)
    labels = np.zeros((20, 30), dtype=np.uint8)
    labels[5:15, 5:20] = 1
    for i in range(frames):
        write_indexed_png(root / "Annotations" / "480p" / "toy" / f"{i:05d}.png", labels)
    return root


def _error_line(err: str) -> str:
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("attmask-eval davis-score")]
    assert len(lines) == 1, err
    return lines[0]


def test_bad_results_exit_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    davis = _tiny_davis(tmp_path / "DAVIS")
    results = tmp_path / "res"
    shutil.copytree(davis / "Annotations" / "480p", results)
    args = ["davis-score", "--results", str(results), "--data", str(davis), "--out", str(tmp_path / "o")]
    assert main(args) == 0  # the toy set scores itself
    capsys.readouterr()
    (results / "toy" / "00002.png").unlink()
    assert main(args) == 2
    assert "00002.png: missing prediction" in _error_line(capsys.readouterr().err)
    write_indexed_png(results / "toy" / "00002.png", np.full((20, 30), 2, dtype=np.uint8))
    assert main(args) == 2
    assert "exceeds the sequence's 1 object" in _error_line(capsys.readouterr().err)
    write_indexed_png(results / "toy" / "00002.png", np.zeros((10, 30), dtype=np.uint8))
    assert main(args) == 2
    assert "differs from the sequence's" in _error_line(capsys.readouterr().err)
    assert main([*args[:2], str(tmp_path / "nothing"), *args[3:]]) == 2
    assert "no such results folder" in _error_line(capsys.readouterr().err)


def test_two_objects_are_scored_separately(tmp_path: Path) -> None:
    davis = tmp_path / "DAVIS"
    (davis / "ImageSets" / "2017").mkdir(parents=True)
    (davis / "ImageSets" / "2017" / "val.txt").write_text("pair\n")
    ann = davis / "Annotations" / "480p" / "pair"
    ann.mkdir(parents=True)
    res = tmp_path / "res" / "pair"
    res.mkdir(parents=True)
    gt = np.zeros((20, 30), dtype=np.uint8)
    gt[2:10, 2:12] = 1
    gt[12:18, 15:28] = 2
    only_one = np.where(gt == 2, 0, gt).astype(np.uint8)  # object 2 is never predicted
    for i in range(5):
        write_indexed_png(ann / f"{i:05d}.png", gt)
        write_indexed_png(res / f"{i:05d}.png", only_one)
    out = tmp_path / "o"
    assert main(["davis-score", "--results", str(tmp_path / "res"), "--data", str(davis), "--out", str(out),
                 "--dataset-name", "toy"]) == 0
    rec = _record(out)
    assert rec["dataset"] == "toy"
    rows = {r["sequence"]: r for r in csv.DictReader((out / rec["artifacts"]["per_sequence"]).open())}
    assert set(rows) == {"pair_1", "pair_2"}
    assert float(rows["pair_1"]["J_mean"]) == pytest.approx(100.0) and float(rows["pair_2"]["J_mean"]) == 0.0
    assert float(rows["pair_2"]["F_mean"]) == 0.0  # empty prediction: precision 1, recall 0
    # overall = mean over the two objects
    assert rec["metrics"]["J_mean"] == pytest.approx(50.0) and rec["metrics"]["J&F_mean"] == pytest.approx(50.0)
