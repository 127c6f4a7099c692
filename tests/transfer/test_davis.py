"""davis end to end on davis-mini at reduced resolution: masks, CSV, record; reference flag."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from attmask.eval import records
from attmask.eval.cli import build_parser, main
from attmask.transfer.davis import TASK
from attmask.transfer.davis_io import voc_palette

pytestmark = pytest.mark.usefixtures("single_thread")

NAMES = ["J&F_mean", "J_mean", "J_recall", "J_decay", "F_mean", "F_recall", "F_decay"]


def _records(folder: Path) -> list[dict]:
    out = []
    for p in sorted(folder.glob("*.json")):
        if records.is_record_file(p):
            rec = json.loads(p.read_text())
            records.validate(rec)
            out.append(rec)
    return out


def test_davis_end_to_end_reduced(data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATTMASK_DATA", str(data_root))
    run = tmp_path / "run"
    argv = ["davis", "--ckpt", "random:vit_tiny", "--dataset", "davis-mini", "--short-side", "96",
            "--sequences", "blackswan", "--max-frames", "5", "--out", str(run)]
    assert main(argv) == 0
    [rec] = _records(run)
    assert rec["task"] == "davis" and rec["dataset"] == "davis-mini" and rec["split"] == "val"
    assert list(rec["metrics"]) == NAMES
    assert all(np.isfinite(v) for v in rec["metrics"].values())
    assert 0 <= rec["metrics"]["J_mean"] <= 100 and 0 <= rec["metrics"]["F_mean"] <= 100
    p = rec["protocol"]
    assert p["reference"] is False and p["short_side"] == 96 and p["sequences"] == ["blackswan"]
    assert (p["n_last_frames"], p["radius"], p["topk"], p["temperature"]) == (7, 12, 5, 0.1)
    masks = run / rec["artifacts"]["masks"]
    pngs = sorted((masks / "blackswan").glob("*.png"))
    assert [q.name for q in pngs] == [f"{i:05d}.png" for i in range(5)]
    for q in pngs:
        with Image.open(q) as im:
            assert im.mode == "P" and im.size == (854, 480)
            assert im.getpalette()[:9] == voc_palette()[:3].reshape(-1).tolist()
            assert set(np.unique(np.array(im)).tolist()) <= {0, 1}
    first_gt = np.array(Image.open(data_root / "davis-mini/DAVIS/Annotations/480p/blackswan/00000.png"))
    assert (np.array(Image.open(pngs[0])) == first_gt).all()  # frame 0 is the given annotation
    rows = list(csv.DictReader((run / rec["artifacts"]["per_sequence"]).open()))
    assert [r["sequence"] for r in rows] == ["blackswan_1"] and rows[0]["frames"] == "3"

    # a second run of the same protocol replaces the masks folder; no temporary folder is left
    assert main(argv) == 0
    [rec2] = _records(run)
    assert rec2["metrics"] == pytest.approx(rec["metrics"])
    assert sorted(p.name for p in run.iterdir() if p.is_dir()) == [masks.name]


@pytest.mark.parametrize("extra, reference", [
    ((), True),
    (("--short-side", "240"), False),
    (("--topk", "7"), False),
    (("--size-mask-neighborhood", "0"), False),
    (("--max-frames", "10"), False),
    (("--tile", "4", "--frame-batch", "2"), True),  # speed-only options
])
def test_reference_flag(data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, extra: tuple,
                        reference: bool) -> None:
    monkeypatch.setenv("ATTMASK_DATA", str(data_root))
    args = build_parser().parse_args(["davis", "--ckpt", "random:vit_tiny", "--dataset", "davis-mini",
                                      "--out", str(tmp_path), *extra])
    plan = TASK.plan(args, None)
    assert plan.protocol["reference"] is reference
    assert plan.dataset == "davis-mini" and plan.split == "val"


def test_unknown_sequence_exits_2(data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("ATTMASK_DATA", str(data_root))
    code = main(["davis", "--ckpt", "random:vit_tiny", "--dataset", "davis-mini", "--sequences", "bmx-trees",
                 "--out", str(tmp_path / "o")])
    assert code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "bmx-trees" in err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())
