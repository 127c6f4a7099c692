"""Options and data resolution shared by the classification tasks (knn, linear, fewshot, finetune).

Defined once, composed into each task's parser:

- ``--train-split`` (default ``train``) and ``--test-split`` (default: the registry's test split;
  for ``--data DIR``: ``val``, else ``test``);
- ``--subset N``: the first N training images per class in sorted ImageFolder order (the 20%
  ImageNet protocol evaluates with ``--subset 260``; the reference runs use all images or 260);
- ``--test-subset N``: the first N test images per class (a speed-up for smoke tests; never
  reference);
- the evaluation transform of ``attmask.eval.transforms`` (``--resize``, ``--crop``,
  ``--interpolation``; reference: resize 256 bicubic, center crop 224).

Every departure from the reference marks ``protocol.reference`` false.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .context import RunContext
from .datasets import ImageIndex, classification_split, index_image_folder
from .errors import BadInput
from .transforms import EvalTransform, add_transform_arguments, transform_from_args

# Training-set sizes that reference protocols use: every image, or the 20% ImageNet subset.
REFERENCE_SUBSETS = (None, 260)


def add_classification_arguments(parser: argparse.ArgumentParser, subset: bool = True) -> None:
    """Split, subset and transform options; ``subset=False`` for tasks that sample their own subsets."""
    g = parser.add_argument_group("classification data")
    g.add_argument("--train-split", default=None, metavar="SPLIT",
                   help="training split sub-folder (default: train)")
    g.add_argument("--test-split", default=None, metavar="SPLIT",
                   help="evaluation split sub-folder (default: the registry's test split; for --data: val, "
                        "else test)")
    if subset:
        g.add_argument("--subset", type=int, default=None, metavar="N",
                       help="use the first N training images per class in sorted order (20%% ImageNet "
                            "protocol: 260; default: all)")
    g.add_argument("--test-subset", type=int, default=None, metavar="N",
                   help="evaluate on the first N test images per class only (smoke tests; not reference; "
                        "default: all)")
    add_transform_arguments(parser)


@dataclass(frozen=True)
class ClassificationPlan:
    """What a classification run uses, fixed before any image is read."""

    dataset: str
    train_folder: Path
    test_folder: Path
    train_split: str
    test_split: str
    transform: EvalTransform
    subset: int | None
    test_subset: int | None

    @property
    def reference(self) -> bool:
        return self.transform.is_reference and self.subset in REFERENCE_SUBSETS and self.test_subset is None

    @property
    def protocol(self) -> dict[str, Any]:
        """The shared protocol fields (tasks add theirs and their own ``reference``)."""
        return {"train_split": self.train_split, "test_split": self.test_split, "subset": self.subset,
                "test_subset": self.test_subset, "transform": self.transform.to_dict()}


@dataclass(frozen=True)
class ClassificationData:
    """The indexed splits of a run: ``train`` after ``--subset``, ``test`` after ``--test-subset``."""

    plan: ClassificationPlan
    train: ImageIndex
    test: ImageIndex

    @property
    def num_classes(self) -> int:
        return len(self.train.classes)

    @property
    def transform(self) -> EvalTransform:
        return self.plan.transform


def _positive(value: int | None, flag: str) -> int | None:
    if value is not None and value < 1:
        raise BadInput(None, f"{flag} must be at least 1 (got {value})")
    return value


def plan_classification(args: argparse.Namespace, ctx: RunContext) -> ClassificationPlan:
    """Resolve the split folders and the transform (cheap: no image is listed)."""
    train_folder, train_split = classification_split(args.dataset, args.data, args.train_split, "train")
    test_folder, test_split = classification_split(args.dataset, args.data, args.test_split, "test")
    if train_folder.resolve() == test_folder.resolve():
        raise BadInput(test_folder, "the test split is the training split; pass another --test-split")
    return ClassificationPlan(
        dataset=ctx.dataset_label(), train_folder=train_folder, test_folder=test_folder,
        train_split=train_split, test_split=test_split, transform=transform_from_args(args),
        subset=_positive(getattr(args, "subset", None), "--subset"),
        test_subset=_positive(args.test_subset, "--test-subset"))


def check_same_classes(train: ImageIndex, test: ImageIndex) -> None:
    """Labels are class positions, so both splits must have the same class folders."""
    if train.classes != test.classes:
        only_train = sorted(set(train.classes) - set(test.classes))
        only_test = sorted(set(test.classes) - set(train.classes))
        detail = f"only in train: {only_train[:5]}" if only_train else f"only in test: {only_test[:5]}"
        if only_train and only_test:
            detail += f", only in test: {only_test[:5]}"
        raise BadInput(test.root, f"class folders differ from {train.root} ({detail})")


def resolve_classification(args: argparse.Namespace, ctx: RunContext,
                           plan: ClassificationPlan | None = None) -> ClassificationData:
    """Index both splits (ImageFolder order; ``--subset`` / ``--test-subset`` applied)."""
    plan = plan or plan_classification(args, ctx)
    train = index_image_folder(plan.train_folder, subset=plan.subset)
    test = index_image_folder(plan.test_folder, subset=plan.test_subset)
    check_same_classes(train, test)
    return ClassificationData(plan=plan, train=train, test=test)
