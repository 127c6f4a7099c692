"""Dataset registry and the built-in sklearn digits."""

from __future__ import annotations

from pathlib import Path

import pytest

from attmask.eval.datasets import (
    classification_split,
    dataset_dir,
    dataset_or_folder,
    index_image_folder,
    registry,
)
from attmask.eval.errors import BadInput


def test_registry_has_the_design_table() -> None:
    reg = registry()
    expected = {"imagenet": "imagenet", "cifar10": "cifar10", "cifar100": "cifar100", "cifar10-mini": "cifar10-mini",
                "hymenoptera": "hymenoptera", "roxford5k": "revisitop", "rparis6k": "revisitop",
                "roxford5k-mini": "revisitop-mini", "rparis6k-mini": "revisitop-mini", "davis2017": "davis/DAVIS",
                "davis-mini": "davis-mini/DAVIS", "coco2017": "coco", "ade20k": "ade20k/ADEChallengeData2016",
                "ade20k-mini": "ade20k-mini/ADEChallengeData2016"}
    for name, folder in expected.items():
        assert reg[name].folder == folder, name
    assert reg["imagenet"].test == "val" and reg["cifar10"].test == "test" and reg["ade20k"].test == "validation"
    assert reg["coco2017"].test == "val2017" and reg["sklearn-digits"].builtin == "sklearn-digits"


def test_registered_mini_datasets_resolve(data_root: Path) -> None:
    assert dataset_dir("cifar10-mini") == data_root / "cifar10-mini"
    folder, split = classification_split("hymenoptera", None, None, "test")
    assert split == "val" and folder == data_root / "hymenoptera" / "val"
    assert len(index_image_folder(folder)) == 153
    folder, split = classification_split(None, data_root / "cifar10-mini", None, "test")
    assert split == "test"  # --data without val/ falls back to test/


def test_dataset_or_folder_checks_kind_and_folder(data_root: Path, tmp_path: Path) -> None:
    root, spec = dataset_or_folder("davis-mini", None, "davis", "usage")
    assert root == data_root / "davis-mini" / "DAVIS" and spec is not None and spec.kind == "davis"
    assert dataset_or_folder(None, tmp_path, "coco", "usage") == (tmp_path, None)
    with pytest.raises(BadInput, match="dataset 'davis-mini' is a davis dataset, not a coco one"):
        dataset_or_folder("davis-mini", None, "coco", "usage")
    with pytest.raises(BadInput, match="no such dataset folder") as err:
        dataset_or_folder(None, tmp_path / "nope", "coco", "usage")
    assert err.value.path == str(tmp_path / "nope")
    with pytest.raises(BadInput, match="give --dataset"):
        dataset_or_folder(None, None, "coco", "give --dataset coco2017 or --data DIR")


def test_sklearn_digits_needs_no_data_folder(monkeypatch) -> None:
    monkeypatch.delenv("ATTMASK_DATA", raising=False)
    train, _ = classification_split("sklearn-digits", None, None, "train")
    test, _ = classification_split("sklearn-digits", None, None, "test")
    a, b = index_image_folder(train), index_image_folder(test)
    assert (len(a), len(b)) == (1438, 359)
    assert a.classes == tuple(str(d) for d in range(10))
    assert not set(a.paths) & set(b.paths)
    # idempotent: a second call reuses the folder
    assert classification_split("sklearn-digits", None, None, "train")[0] == train
