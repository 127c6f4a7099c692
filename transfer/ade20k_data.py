"""ADE20K (SceneParse150) in the official ADEChallengeData2016 layout, resolved and checked up front.

Layout (DESIGN.md datasets table; ``ade20k`` -> ``$ATTMASK_DATA/ade20k/ADEChallengeData2016``,
``ade20k-mini`` -> ``$ATTMASK_DATA/ade20k-mini/ADEChallengeData2016``, validation only)::

    <root>/images/<split>/<name>.jpg          split: training | validation
    <root>/annotations/<split>/<name>.png     mode L: 0 = other (ignored), 1..150 = classes

Every image of a split must have its annotation (and the reverse), checked before training.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from attmask.eval.datasets import dataset_or_folder
from attmask.eval.errors import BadInput

DEFAULT_TRAIN = "training"
DEFAULT_TEST = "validation"
NUM_CLASSES = 150


@dataclass(frozen=True)
class AdeSplit:
    name: str
    img_dir: Path  # <root>/images/<name>
    ann_dir: Path  # <root>/annotations/<name>
    count: int


@dataclass(frozen=True)
class AdeLayout:
    root: Path
    train: AdeSplit | None
    test: AdeSplit


def check_split(root: Path, name: str) -> AdeSplit:
    """The split's folders exist and pair every ``<name>.jpg`` with a ``<name>.png``."""
    img_dir, ann_dir = root / "images" / name, root / "annotations" / name
    for folder in (img_dir, ann_dir):
        if not folder.is_dir():
            raise BadInput(folder, f"no such folder for split {name!r} (expected images/<split>/ and "
                                   "annotations/<split>/ of ADEChallengeData2016)")
    images = {p.stem for p in img_dir.glob("*.jpg")}
    labels = {p.stem for p in ann_dir.glob("*.png")}
    if not images:
        raise BadInput(img_dir, "no .jpg images")
    if images != labels:
        odd = sorted(images ^ labels)
        raise BadInput(ann_dir, f"images and annotations do not pair up ({len(odd)} unmatched, e.g. {odd[0]})")
    return AdeSplit(name=name, img_dir=img_dir, ann_dir=ann_dir, count=len(images))


def resolve_layout(dataset: str | None, data: str | None, train_split: str | None = None,
                   test_split: str | None = None, need_train: bool = True) -> AdeLayout:
    """The ADEChallengeData2016 folder of ``--dataset NAME`` or ``--data DIR`` with its splits checked."""
    root, spec = dataset_or_folder(dataset, data, "ade20k",
                                   "give --dataset ade20k|ade20k-mini or --data DIR (ADEChallengeData2016 layout)")
    train_default = spec.train if spec else DEFAULT_TRAIN
    test_default = (spec.test if spec else None) or DEFAULT_TEST
    test = check_split(root, test_split or test_default)
    train = None
    if need_train:
        name = train_split or train_default
        if name is None:
            raise BadInput(root, f"dataset {dataset!r} has no training split; name one with --train-split "
                                 "(e.g. validation, for a smoke run)")
        train = check_split(root, name)
    return AdeLayout(root=root, train=train, test=test)
