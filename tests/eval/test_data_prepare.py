"""``data prepare``: downloads from a local HTTP server / file:// mirror, conversion, atomic install.

Nothing here touches the internet: the recipes are the real ones (``data_sources.recipe``) with
their URLs pointed at a server the test runs on 127.0.0.1 (``mirror=``), and, where the test's
tiny archives cannot match the published checksums and counts, those replaced in the recipe
object (``dataclasses.replace``); download, install and verify are the code a real run executes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from attmask.eval.cli import main
from attmask.eval.data_cmd import DOWNLOADS, prepare
from attmask.eval.data_sources import PARIS_CORRUPT, Recipe, recipe
from attmask.eval.downloads import Checksum
from attmask.eval.errors import BadInput, TaskFailed

from .data_fixtures import CIFAR10_CLASSES, FileServer, ade_zip, cifar100_tarball, cifar_tarball, md5, sha1

TRAIN_LABELS = [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]  # one image per class, in 5 batches
TEST_LABELS = [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]
TINY_CIFAR = {"images": {"train": 10, "test": 10}, "per_class": {"train": 1, "test": 1}, "classes": CIFAR10_CLASSES}


def _with_checksums(rec: Recipe, algo: str, payloads: dict[str, bytes], expect: dict) -> Recipe:
    """The recipe with the test archives' own digests and counts (URLs untouched)."""
    files = tuple(dataclasses.replace(f, checksum=Checksum(algo, hashlib.new(algo, payloads[f.filename]).hexdigest(),
                                                           "test archive"))
                  if f.checksum is not None else f for f in rec.files)
    return dataclasses.replace(rec, files=files, expect=expect)


def _leftovers(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if ".staging-" in p.name or p.suffix == ".part")


def test_cifar10_over_http_resumes_a_dropped_transfer_converts_and_is_idempotent(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tarball, images = cifar_tarball(TRAIN_LABELS, TEST_LABELS)
    root = tmp_path / "data"
    with FileServer() as server:
        server.files["/cifar-10-python.tar.gz"] = tarball
        server.drop_once.add("/cifar-10-python.tar.gz")
        rec = _with_checksums(recipe("cifar10", mirror=server.url), "md5", {"cifar-10-python.tar.gz": tarball},
                              TINY_CIFAR)
        assert prepare(rec, root, progress=False) == 0
        # first transfer dropped halfway, the second resumed at the byte where it stopped
        assert [r for _, r in server.requests] == [None, f"bytes={len(tarball) // 2}-"]

        # ImageFolder layout, class names from the meta, <index>.png = the image's index in its split
        for split, labels in (("train", sum(TRAIN_LABELS, [])), ("test", TEST_LABELS)):
            for index, label in enumerate(labels):
                png = root / "cifar10" / split / CIFAR10_CLASSES[label] / f"{index:05d}.png"
                assert np.array_equal(np.asarray(Image.open(png)), images[split][index]), png
        assert sorted(p.name for p in (root / "cifar10" / "train").iterdir()) == CIFAR10_CLASSES
        assert not (root / DOWNLOADS).exists() and _leftovers(root) == []  # archive deleted, nothing staged
        assert "PASS cifar10" in capsys.readouterr().out

        # idempotent: a verified copy is not downloaded again
        n_requests = len(server.requests)
        assert prepare(rec, root, progress=False) == 0
        assert len(server.requests) == n_requests
        assert "already prepared" in capsys.readouterr().out


def test_resumes_an_existing_part_file(tmp_path: Path) -> None:
    tarball, _ = cifar_tarball(TRAIN_LABELS, TEST_LABELS, seed=1)
    root = tmp_path / "data"
    part = root / DOWNLOADS / "cifar-10-python.tar.gz.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(tarball[:1000])  # an earlier, interrupted run
    with FileServer() as server:
        server.files["/cifar-10-python.tar.gz"] = tarball
        rec = _with_checksums(recipe("cifar10", mirror=server.url), "md5", {"cifar-10-python.tar.gz": tarball},
                              TINY_CIFAR)
        assert prepare(rec, root, progress=False, keep_archives=True) == 0
        assert server.requests == [("/cifar-10-python.tar.gz", "bytes=1000-")]
    assert (root / DOWNLOADS / "cifar-10-python.tar.gz").read_bytes() == tarball  # --keep-archives
    assert (root / "cifar10" / "test" / "airplane" / "00009.png").is_file()


def test_cifar100_uses_the_fine_labels_and_their_names(tmp_path: Path) -> None:
    tarball, fine, images = cifar100_tarball()
    with FileServer() as server:
        server.files["/cifar-100-python.tar.gz"] = tarball
        rec = _with_checksums(recipe("cifar100", mirror=server.url), "md5", {"cifar-100-python.tar.gz": tarball},
                              {"images": {"train": 100, "test": 100}, "per_class": {"train": 1, "test": 1}})
        assert prepare(rec, tmp_path, progress=False) == 0
    assert sorted(p.name for p in (tmp_path / "cifar100" / "test").iterdir()) == fine
    png = tmp_path / "cifar100" / "test" / fine[42] / "00042.png"
    assert np.array_equal(np.asarray(Image.open(png)), images["test"][42])


def test_bad_checksum_is_rejected_with_nothing_written(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The real recipe (published md5) through the CLI: the test's tarball cannot match it."""
    tarball, _ = cifar_tarball(TRAIN_LABELS, TEST_LABELS)
    root = tmp_path / "data"
    with FileServer() as server:
        server.files["/cifar-10-python.tar.gz"] = tarball
        rc = main(["data", "prepare", "cifar10", "--root", str(root), "--mirror", server.url, "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert "cifar-10-python.tar.gz: md5 mismatch: expected c58f30108f718f92721af3b95e74349a" in err[0]
    assert not root.exists()  # no dataset, no staging folder, no download left behind


def test_http_404_and_no_network_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from .data_fixtures import closed_port_url

    root = tmp_path / "data"
    with FileServer() as server:
        rc = main(["data", "prepare", "ade20k", "--root", str(root), "--mirror", server.url, "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "ADEChallengeData2016.zip: HTTP 404" in err[0]
    mirror = closed_port_url("").rstrip("/")
    rc = main(["data", "prepare", "ade20k", "--root", str(root), "--mirror", mirror, "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "cannot connect" in err[0] and "no network" in err[0]
    assert not root.exists()


# --------------------------------------------------------------------------- a zip dataset (ADE20K)

TINY_ADE = {"images": {"training": 2, "validation": 1}}


def _ade_recipe(mirror: str, payload: bytes) -> Recipe:
    return _with_checksums(recipe("ade20k", mirror=mirror), "sha1", {"ADEChallengeData2016.zip": payload}, TINY_ADE)


def test_ade20k_zip_from_a_file_mirror_with_resume_and_idempotence(tmp_path: Path) -> None:
    payload = ade_zip()
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "ADEChallengeData2016.zip").write_bytes(payload)
    root = tmp_path / "data"
    (root / DOWNLOADS).mkdir(parents=True)
    (root / DOWNLOADS / "ADEChallengeData2016.zip.part").write_bytes(payload[:100])
    rec = _ade_recipe(mirror.as_uri(), payload)
    assert prepare(rec, root, progress=False) == 0
    target = root / "ade20k" / "ADEChallengeData2016"
    assert sorted(p.name for p in (target / "images" / "training").iterdir()) == [
        "ADE_train_00000001.jpg", "ADE_train_00000002.jpg"]
    assert (target / "annotations" / "validation" / "ADE_val_00000001.png").is_file()
    assert (target / "objectInfo150.txt").is_file() and not (root / DOWNLOADS).exists()
    # idempotent, even with the mirror gone
    (mirror / "ADEChallengeData2016.zip").unlink()
    assert prepare(rec, root, progress=False) == 0


def test_zip_with_wrong_content_is_not_installed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Checksum right but an annotation missing: the staged copy fails verification and is removed."""
    payload = ade_zip(drop_annotation="ADE_train_00000002")
    with FileServer() as server:
        server.files["/ADEChallengeData2016.zip"] = payload
        rec = _ade_recipe(server.url, payload)
        with pytest.raises(TaskFailed, match="fails verification"):
            prepare(rec, tmp_path / "data", progress=False)
    assert "ADE_train_00000002" in capsys.readouterr().out
    assert not (tmp_path / "data" / "ade20k").exists() and _leftovers(tmp_path / "data") == []
    assert (tmp_path / "data" / DOWNLOADS / "ADEChallengeData2016.zip").is_file()  # verified download kept


def test_zip_member_escaping_the_folder_is_refused(tmp_path: Path) -> None:
    payload = ade_zip(extra_member="ADEChallengeData2016/../../evil.txt")
    with FileServer() as server:
        server.files["/ADEChallengeData2016.zip"] = payload
        with pytest.raises(BadInput, match="unsafe member path"):
            prepare(_ade_recipe(server.url, payload), tmp_path / "data", progress=False)
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "data" / "ade20k").exists()


def test_existing_copy_that_fails_verification_is_not_overwritten(tmp_path: Path) -> None:
    target = tmp_path / "data" / "ade20k" / "ADEChallengeData2016"
    (target / "images" / "training").mkdir(parents=True)
    with pytest.raises(BadInput, match="exists but fails verification"):
        prepare(_ade_recipe("http://127.0.0.1:9/", b""), tmp_path / "data", progress=False)
    assert target.is_dir()


# --------------------------------------------------------------------------- revisited Paris: tarballs + gnd

def _tgz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_rparis6k_flattens_tarballs_drops_known_corrupt_images_and_checks_the_gnd(tmp_path: Path) -> None:
    jpeg = io.BytesIO()
    Image.new("RGB", (16, 12), (10, 20, 30)).save(jpeg, format="JPEG")
    corrupt = sorted(PARIS_CORRUPT)[0]
    payloads = {
        "paris_1-v1.tgz": _tgz({"paris/louvre/paris_louvre_000001.jpg": jpeg.getvalue(),
                                f"paris/louvre/{corrupt}": b"<html>302 Found</html>"}),
        "paris_2-v1.tgz": _tgz({"paris/defense/paris_defense_000002.jpg": jpeg.getvalue(),
                                "paris/defense/paris_defense_000003.jpg": jpeg.getvalue()}),
        "gnd_rparis6k.pkl": pickle.dumps({"imlist": ["paris_louvre_000001", "paris_defense_000002"],
                                          "qimlist": ["paris_defense_000003"],
                                          "gnd": [{"bbx": [0.0, 0.0, 16.0, 12.0], "easy": [1], "hard": [0],
                                                   "junk": []}]}, protocol=3),
    }
    with FileServer() as server:
        server.files.update({f"/{k}": v for k, v in payloads.items()})
        rec = _with_checksums(recipe("rparis6k", mirror=server.url), "md5", payloads, {"database": 2, "queries": 1})
        assert [f.checksum is None for f in rec.files] == [True, True, False]  # no published md5 for the images
        assert prepare(rec, tmp_path / "data", progress=False) == 0
    target = tmp_path / "data" / "revisitop" / "rparis6k"
    assert sorted(p.name for p in (target / "jpg").iterdir()) == [
        "paris_defense_000002.jpg", "paris_defense_000003.jpg", "paris_louvre_000001.jpg"]
    assert (target / "gnd_rparis6k.pkl").read_bytes() == payloads["gnd_rparis6k.pkl"]


def test_real_recipes_name_official_sources_and_checksums() -> None:
    cifar = recipe("cifar10").files[0]
    assert cifar.url == "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    assert cifar.checksum == Checksum("md5", "c58f30108f718f92721af3b95e74349a", cifar.checksum.source)
    assert recipe("cifar100").files[0].checksum.hexdigest == "eb9058c3a382ffc7106e4002c42a8d85"
    assert recipe("roxford5k").kept_checksums()["gnd_roxford5k.pkl"].hexdigest == "f2b67579f625a587b5b0828dbf2e8eb0"
    assert [f.filename for f in recipe("coco2017").files] == ["train2017.zip", "val2017.zip",
                                                               "annotations_trainval2017.zip"]
    assert recipe("davis2017").files[0].checksum is None  # none published: counts are verified instead
    assert recipe("ade20k").expect == {"images": {"training": 20210, "validation": 2000}}
    assert recipe("cifar10", mirror="file:///m/").files[0].url == "file:///m/cifar-10-python.tar.gz"
    assert sha1(b"") == "da39a3ee5e6b4b0d3255bfef95601890afd80709" and md5(b"")  # helpers sane


def test_the_official_gnd_copies_match_the_recipe_checksums(data_root: Path) -> None:
    for name in ("roxford5k", "rparis6k"):
        known = recipe(name).kept_checksums()[f"gnd_{name}.pkl"]
        data = (data_root / "revisitop-gnd" / f"gnd_{name}.pkl").read_bytes()
        assert hashlib.md5(data).hexdigest() == known.hexdigest


def test_imagenet_prints_the_manual_steps(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["data", "prepare", "imagenet", "--root", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 1 and "image-net.org" in out and "1d675b47d978889d74fa0da5fadfb00e" in out
    assert f"attmask-eval data verify imagenet --root {tmp_path}" in out
    assert list(tmp_path.iterdir()) == []


def test_mini_and_unknown_names_are_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "prepare", "cifar10-mini", "--root", str(tmp_path)]) == 2
    assert "no download recipe" in capsys.readouterr().err
    assert main(["data", "prepare", "cifar11", "--root", str(tmp_path)]) == 2
    assert "unknown dataset 'cifar11'" in capsys.readouterr().err


def test_a_corrupt_archive_without_published_checksum_is_deleted_for_the_next_run(tmp_path: Path) -> None:
    jpeg = io.BytesIO()
    Image.new("RGB", (16, 12)).save(jpeg, format="JPEG")
    good = _tgz({f"oxbuild/oxford_{i:06d}.jpg": jpeg.getvalue() for i in range(50)})
    gnd = pickle.dumps({"imlist": ["oxford_000000"], "qimlist": ["oxford_000001"],
                        "gnd": [{"bbx": [0, 0, 16, 12], "easy": [0], "hard": [], "junk": []}]}, protocol=3)
    payloads = {"oxbuild_images-v1.tgz": good[: len(good) // 2], "gnd_roxford5k.pkl": gnd}  # truncated tarball
    root = tmp_path / "data"
    with FileServer() as server:
        server.files.update({f"/{k}": v for k, v in payloads.items()})
        rec = _with_checksums(recipe("roxford5k", mirror=server.url), "md5", payloads, {"database": 1, "queries": 1})
        with pytest.raises(BadInput, match="corrupt tar archive.*the download was deleted"):
            prepare(rec, root, progress=False)
        assert not (root / DOWNLOADS / "oxbuild_images-v1.tgz").exists()
        assert (root / DOWNLOADS / "gnd_roxford5k.pkl").is_file()  # verified by its md5: kept
        assert not (root / "revisitop").exists() and _leftovers(root) == []
        server.files["/oxbuild_images-v1.tgz"] = good  # the next run fetches it again and succeeds
        assert prepare(rec, root, progress=False) == 0
    assert len(list((root / "revisitop" / "roxford5k" / "jpg").iterdir())) == 50
