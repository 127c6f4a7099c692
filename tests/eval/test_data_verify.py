"""``data verify``: passes on every real mini dataset, fails (exit 1) on damaged copies, exit 2 on bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from attmask.eval.cli import main

MINI = ["cifar10-mini", "hymenoptera", "roxford5k-mini", "rparis6k-mini", "davis-mini", "ade20k-mini"]


def _verify(name: str, root: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    rc = main(["data", "verify", name, "--root", str(root)])
    return rc, capsys.readouterr().out


@pytest.mark.parametrize("name", MINI)
def test_every_mini_dataset_verifies(name: str, data_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out = _verify(name, data_root, capsys)
    assert rc == 0, out
    assert f"PASS {name}" in out and "FAIL" not in out
    assert "checksums: " in out  # the shared folder's SHA256SUMS covers every mini dataset


def test_default_root_is_attmask_data(data_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "verify", "ade20k-mini"]) == 0
    assert str(data_root / "ade20k-mini" / "ADEChallengeData2016") in capsys.readouterr().out


def _copy(data_root: Path, tmp_path: Path, rel: str) -> Path:
    shutil.copytree(data_root / rel, tmp_path / rel)
    return tmp_path / rel


def test_revisitop_with_a_truncated_gnd_fails(data_root: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    folder = _copy(data_root, tmp_path, "revisitop-mini/roxford5k")
    gnd = folder / "gnd_roxford5k.pkl"
    gnd.write_bytes(gnd.read_bytes()[: gnd.stat().st_size // 2])
    rc, out = _verify("roxford5k-mini", tmp_path, capsys)
    assert rc == 1 and "FAIL  gnd: gnd_roxford5k.pkl: not a readable pickle" in out


def test_revisitop_with_a_removed_image_fails(data_root: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    folder = _copy(data_root, tmp_path, "revisitop-mini/rparis6k")
    (folder / "jpg" / "paris_louvre_000081.jpg").unlink()  # a query image
    rc, out = _verify("rparis6k-mini", tmp_path, capsys)
    assert rc == 1 and "154 of 155 listed images present" in out and "missing: paris_louvre_000081.jpg" in out


def test_imagefolder_with_a_removed_image_fails(data_root: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    folder = _copy(data_root, tmp_path, "hymenoptera")
    next(iter(sorted((folder / "val" / "bees").iterdir()))).unlink()
    rc, out = _verify("hymenoptera", tmp_path, capsys)
    assert rc == 1
    assert "FAIL  val: 152 images in 2 classes (expected 153)" in out and "bees 82 (expected 83)" in out
    assert "ok    train: 244 images" in out


def test_davis_with_a_missing_annotation_fails(data_root: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    folder = _copy(data_root, tmp_path, "davis-mini/DAVIS")
    (folder / "Annotations" / "480p" / "dog" / "00017.png").unlink()
    rc, out = _verify("davis-mini", tmp_path, capsys)
    assert rc == 1 and "dog: 60 frames, 59 annotations (differ: 00017)" in out


def test_ade20k_image_without_annotation_fails(data_root: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    folder = _copy(data_root, tmp_path, "ade20k-mini/ADEChallengeData2016")
    (folder / "annotations" / "validation" / "ADE_val_00000002.png").unlink()
    rc, out = _verify("ade20k-mini", tmp_path, capsys)
    assert rc == 1 and "ADE_val_00000002" in out


def test_a_changed_byte_fails_the_sha256sums_check(data_root: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    folder = _copy(data_root, tmp_path, "ade20k-mini/ADEChallengeData2016")
    sums = [line for line in (data_root / "SHA256SUMS").read_text().splitlines() if "./ade20k-mini/" in line]
    (tmp_path / "SHA256SUMS").write_text("\n".join(sums) + "\n")
    csv = folder / "objectInfo150.csv"
    csv.write_bytes(csv.read_bytes().replace(b"wall", b"Wall", 1))
    rc, out = _verify("ade20k-mini", tmp_path, capsys)
    assert rc == 1 and "ok    validation" in out
    assert "FAIL  checksums: 6 of 7 files match" in out and "objectInfo150.csv" in out


def test_bad_input_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "verify", "nosuch", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown dataset 'nosuch'" in err[0]
    assert main(["data", "verify", "davis-mini", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(tmp_path / "davis-mini" / "DAVIS") in err[0] and "data prepare" not in err[0]
    assert main(["data", "verify", "coco2017", "--root", str(tmp_path / "nowhere")]) == 2
    assert "no such data root folder" in capsys.readouterr().err


def test_builtin_digits_verifies(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "verify", "sklearn-digits"]) == 0
    assert "1797 images" in capsys.readouterr().out


def test_coco_layout_checks(data_root: Path, tmp_path: Path) -> None:
    """COCO: image counts per split, instance files parse, every listed image exists (the real GT of coco-eval)."""
    import json

    from attmask.eval.data_verify import verify_folder
    from attmask.eval.datasets import get_spec

    gt = json.loads((data_root / "coco-eval" / "instances_val2014_100.json").read_text())
    coco = tmp_path / "coco"
    (coco / "annotations").mkdir(parents=True)
    for split in ("train2017", "val2017"):
        (coco / split).mkdir()
        for im in gt["images"][:3]:
            (coco / split / im["file_name"]).write_bytes(b"\xff\xd8 stand-in")
        sub = {**gt, "images": gt["images"][:3]}
        (coco / "annotations" / f"instances_{split}.json").write_text(json.dumps(sub))
    expect = {"images": {"train2017": 3, "val2017": 3}}
    checks = verify_folder(get_spec("coco2017"), coco, expect)
    assert all(c.ok for c in checks), [c.line() for c in checks]
    assert any(c.name == "instances_val2017" and "every image present" in c.detail for c in checks)
    (coco / "val2017" / gt["images"][1]["file_name"]).unlink()
    bad = [c for c in verify_folder(get_spec("coco2017"), coco, expect) if not c.ok]
    assert [c.name for c in bad] == ["val2017", "instances_val2017"]
    assert gt["images"][1]["file_name"] in bad[1].detail
