"""COCO instance-segmentation data in the official 2017 layout, resolved and checked up front.

Layout (DESIGN.md datasets table, ``coco2017`` -> ``$ATTMASK_DATA/coco``)::

    <root>/annotations/instances_<split>.json     e.g. instances_train2017.json, instances_val2017.json
    <root>/<split>/<file_name>                    the images named by the annotation file

Any folder in this layout works with ``--data DIR`` (``--train-split`` / ``--test-split`` pick
other split names). Class names and their order come from the ``categories`` of the test
annotation file, in file order: that is the order mmdet's ``CocoDataset`` gives the labels
(``COCO.getCatIds`` keeps file order), so a non-COCO category set (e.g. one class) works as well.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from attmask.eval.atomic import read_json
from attmask.eval.datasets import dataset_or_folder, registry_name_for
from attmask.eval.errors import BadInput

DEFAULT_TRAIN = "train2017"
DEFAULT_TEST = "val2017"


@dataclass(frozen=True)
class CocoSplit:
    name: str  # e.g. "val2017"
    ann_file: Path  # <root>/annotations/instances_<name>.json
    img_dir: Path  # <root>/<name>/

    def check(self) -> None:
        if not self.ann_file.is_file():
            raise BadInput(self.ann_file, f"no annotation file for split {self.name!r} "
                                          "(expected annotations/instances_<split>.json)")
        if not self.img_dir.is_dir():
            raise BadInput(self.img_dir, f"no image folder for split {self.name!r} (expected <root>/<split>/)")


@dataclass(frozen=True)
class CocoLayout:
    root: Path
    train: CocoSplit
    test: CocoSplit
    classes: tuple[str, ...]  # category names, in the test annotation file's order
    test_images: int  # images listed by the test annotation file


def split_paths(root: Path, name: str) -> CocoSplit:
    return CocoSplit(name=name, ann_file=root / "annotations" / f"instances_{name}.json", img_dir=root / name)


def read_categories(ann_file: Path) -> tuple[tuple[str, ...], int]:
    """Category names of a COCO instances file, in file order (each unique), and its image count."""
    data = read_json(ann_file)
    cats = data.get("categories") if isinstance(data, dict) else None
    if not cats:
        raise BadInput(ann_file, "no categories: not a COCO instances file")
    names = tuple(str(c["name"]) for c in cats)
    if len(set(names)) != len(names):
        raise BadInput(ann_file, "category names are not unique")
    return names, len(data.get("images") or [])


def resolve_layout(dataset: str | None, data: str | None, train_split: str | None = None,
                   test_split: str | None = None, need_train: bool = True) -> CocoLayout:
    """The COCO folder of ``--dataset NAME`` (registry) or ``--data DIR``, with its splits checked."""
    root, spec = dataset_or_folder(dataset, data, "coco", "give --dataset coco2017 or --data DIR (COCO 2017 layout)")
    train_default = (spec.train if spec else None) or DEFAULT_TRAIN
    test_default = (spec.test if spec else None) or DEFAULT_TEST
    train = split_paths(root, train_split or train_default)
    test = split_paths(root, test_split or test_default)
    test.check()
    if need_train:
        train.check()
    classes, n_images = read_categories(test.ann_file)
    return CocoLayout(root=root, train=train, test=test, classes=classes, test_images=n_images)


def registry_name_for_annotations(ann_file: Path) -> str | None:
    """The registered COCO dataset whose folder holds ``ann_file`` (None when none does)."""
    return registry_name_for(ann_file, "coco")


def split_of_annotations(ann_file: Path) -> str:
    """``instances_val2017.json`` -> ``val2017``; any other name -> its stem."""
    stem = ann_file.stem
    return stem[len("instances_"):] if stem.startswith("instances_") and len(stem) > len("instances_") else stem
