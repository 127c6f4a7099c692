"""``attmask-eval fewshot``: classification from ν labelled images per class (AttMask protocol).

A per-class sampler feeding the shared cores (it copies neither):

- ``--method knn`` (AttMask ``eval_knn_few.py`` runs, the reference): for each ν ∈ {1, 5, 10, 20},
  five subsets taking images [offset, offset + ν) of every class in sorted order, offsets
  0, 5, 10, 15, 20 for ν <= 5, 0, 10, ..., 40 for ν = 10 and 0, 20, ..., 80 for ν = 20; each subset
  is the bank of the weighted k-NN of ``knn.py`` (k = 1 for ν = 1, else 20; T = 0.07) and the
  whole test split is classified; mean and std of top-1 over the five subsets.
- ``--method logreg`` (the DINO / iBOT alternative, ``logreg.py``): the same subsets train a
  multinomial logistic regression on L2-normalised features with λ scaled by 1/N; λ is chosen
  on held-out training images (the ``--heldout-per-class`` images of every class right after the
  few-shot windows, so never one of the subsets' images).

Only the images the subsets (and the held-out set) use are read: the first ``window`` images of
each class (100 for the default ν and offsets). Metrics ``top1@n<ν>`` (mean over subsets) and
``top1@n<ν>_std`` (population std), percent; the per-subset values go to ``<record>.subsets.json``.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from . import distributed as dist
from . import records
from .atomic import atomic_write_json
from .classification_options import add_classification_arguments, check_same_classes, plan_classification
from .context import RunContext
from .datasets import index_image_folder
from .errors import BadInput
from .knn import BACKENDS, DEFAULT_TEMPERATURE, knn_accuracy, search_device
from .logreg import DEFAULT_LAMBDAS, MAX_ITER, logreg_top1, select_and_fit
from .tasks import Plan, Task, TaskResult

log = logging.getLogger(__name__)

DEFAULT_SHOTS = (1, 5, 10, 20)
SUBSETS = 5
HELDOUT_PER_CLASS = 20


# -- the sampler ---------------------------------------------------------------------------------

def attmask_offsets(shots: int, count: int = SUBSETS) -> list[int]:
    """AttMask's subset starts: multiples of 5 for ν <= 5, of ν above (0, 10, ..., 40 for ν = 10)."""
    step = max(shots, 5)
    return [i * step for i in range(count)]


def knn_k(shots: int) -> int:
    """AttMask's neighbours: k = 1 for one shot, else 20."""
    return 1 if shots == 1 else 20


def window_size(shots: Sequence[int]) -> int:
    """Images per class that the subsets of every ν reach into."""
    return max(attmask_offsets(s)[-1] + s for s in shots)


def per_class_positions(labels: np.ndarray, start: int, count: int) -> np.ndarray:
    """Positions (sorted) of images [start, start + count) of every class, in index order.

    ``labels`` [N] of an ImageFolder index (classes contiguous, files sorted); raises ValueError
    when a class has fewer than ``start + count`` images.
    """
    out = []
    for c in np.unique(labels):
        pos = np.flatnonzero(labels == c)
        if len(pos) < start + count:
            raise ValueError(f"class {int(c)} has {len(pos)} images, the sampler needs {start + count}")
        out.append(pos[start:start + count])
    return np.concatenate(out)


# -- the protocol, pure over arrays ---------------------------------------------------------------

def few_shot_knn(pool_x: np.ndarray, pool_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, *,
                 shots: int, offsets: Sequence[int], num_classes: int, temperature: float = DEFAULT_TEMPERATURE,
                 backend: str = "torch", device: torch.device | str = "cpu") -> list[float]:
    """Top-1 (percent) of the k-NN classifier for each subset [offset, offset + ν) of ``pool``."""
    k = knn_k(shots)
    queries = torch.from_numpy(test_x).to(device)
    out = []
    for offset in offsets:
        pos = per_class_positions(pool_y, offset, shots)
        bank = torch.from_numpy(pool_x[pos]).to(device)
        metrics = knn_accuracy(bank, pool_y[pos], queries, test_y, ks=(k,), temperature=temperature,
                               num_classes=num_classes, backend=backend)
        out.append(metrics[f"top1@k{k}"])
    return out


def few_shot_logreg(pool_x: np.ndarray, pool_y: np.ndarray, held_x: np.ndarray, held_y: np.ndarray,
                    test_x: np.ndarray, test_y: np.ndarray, *, shots: int, offsets: Sequence[int],
                    lambdas: Sequence[float] = DEFAULT_LAMBDAS,
                    max_iter: int = MAX_ITER) -> tuple[list[float], list[float]]:
    """Top-1 (percent) of logistic regression per subset, and the λ chosen on the held-out images."""
    accs, chosen = [], []
    for offset in offsets:
        pos = per_class_positions(pool_y, offset, shots)
        fit = select_and_fit(pool_x[pos], pool_y[pos], held_x, held_y, lambdas, max_iter)
        accs.append(logreg_top1(fit.model, test_x, test_y))
        chosen.append(fit.lam)
    return accs, chosen


def summarise(per_subset: dict[int, list[float]]) -> dict[str, float]:
    """``top1@n<ν>`` (mean) and ``top1@n<ν>_std`` (population std) for every ν."""
    metrics: dict[str, float] = {}
    for shots, accs in per_subset.items():
        metrics[f"top1@n{shots}"] = float(np.mean(accs))
        metrics[f"top1@n{shots}_std"] = float(np.std(accs))
    return metrics


# -- task ----------------------------------------------------------------------------------------

class FewShotTask(Task):
    name = "fewshot"
    help = "few-shot classification: nu images per class, k-NN (AttMask) or logistic regression"
    description = ("Few-shot classification (AttMask): nu in {1, 5, 10, 20} images per class, five subsets per nu "
                   "([offset, offset+nu) per class in sorted order), the whole test split classified; --method "
                   "knn (reference: k = 1 for nu = 1, else 20, T = 0.07) or logreg (L2-normalised features, "
                   "lambda / N, lambda chosen on held-out training images). Metrics top1@nN and top1@nN_std.")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_classification_arguments(parser, subset=False)
        g = parser.add_argument_group("few-shot")
        g.add_argument("--method", choices=("knn", "logreg"), default="knn",
                       help="classifier fed by each subset (default: knn, the AttMask protocol)")
        g.add_argument("--shots", type=int, nargs="+", default=list(DEFAULT_SHOTS), metavar="NU",
                       help="images per class (default: 1 5 10 20)")
        g.add_argument("--temperature", type=float, default=DEFAULT_TEMPERATURE,
                       help="k-NN vote temperature (default: 0.07)")
        g.add_argument("--backend", choices=BACKENDS, default="faiss", help="k-NN search backend (default: faiss)")
        g.add_argument("--lambdas", type=float, nargs="+", default=list(DEFAULT_LAMBDAS), metavar="L",
                       help="logreg: penalty grid, lambda / N per image (default: 1e-4 ... 10)")
        g.add_argument("--heldout-per-class", type=int, default=HELDOUT_PER_CLASS, metavar="N",
                       help="logreg: training images per class, after the few-shot windows, that choose "
                            "lambda (default: 20)")

    def plan(self, args: argparse.Namespace, ctx: RunContext) -> Plan:
        base = plan_classification(args, ctx)
        shots = sorted(set(args.shots))
        if min(shots) < 1:
            raise BadInput(None, f"--shots must be at least 1 (got {min(shots)})")
        protocol: dict[str, Any] = {
            **base.protocol, "layers": "cls", "method": args.method, "shots": shots,
            "offsets": {str(s): attmask_offsets(s) for s in shots}, "window": window_size(shots)}
        if args.method == "knn":
            protocol.update(k={str(s): knn_k(s) for s in shots}, temperature=args.temperature)
            protocol["reference"] = (base.reference and shots == list(DEFAULT_SHOTS)
                                     and args.temperature == DEFAULT_TEMPERATURE)
        else:
            if args.heldout_per_class < 1 or min(args.lambdas) <= 0:
                raise BadInput(None, "--heldout-per-class must be at least 1 and every --lambdas value positive")
            protocol.update(lambdas=sorted(set(args.lambdas)), lambda_scaling="1/N", fit_intercept=False,
                            max_iter=MAX_ITER, heldout_per_class=args.heldout_per_class, selection="heldout",
                            reference=False)
        return Plan(dataset=base.dataset, split=base.test_split, protocol=protocol)

    def run(self, args: argparse.Namespace, ctx: RunContext, plan: Plan) -> TaskResult:
        p = plan.protocol
        base = plan_classification(args, ctx)
        held = p.get("heldout_per_class", 0)
        pool_index = index_image_folder(base.train_folder, subset=p["window"] + held)
        test_index = index_image_folder(base.test_folder, subset=base.test_subset)
        check_same_classes(pool_index, test_index)
        num_classes = len(pool_index.classes)
        labels = np.asarray(pool_index.labels)
        need = p["window"] + held  # every class must fill the windows (and the held-out images)
        counts = np.bincount(labels, minlength=num_classes)
        present = np.unique(labels)  # the sampler's classes (an empty class folder has no images to draw)
        worst = int(present[np.argmin(counts[present])])
        if counts[worst] < need:
            raise BadInput(base.train_folder / pool_index.classes[worst],
                           f"{counts[worst]} images, but {need} per class are needed "
                           f"(shots {p['shots']}{f', {held} held out' if held else ''})")
        if p["method"] == "knn":
            for shots in p["shots"]:
                if knn_k(shots) > shots * num_classes:
                    raise BadInput(base.train_folder, f"{shots} image(s) per class x {num_classes} classes is a bank of "
                                                      f"{shots * num_classes}, fewer than the k = {knn_k(shots)} "
                                                      "neighbours of the protocol (choose other --shots)")
        pool = ctx.features(pool_index, base.transform, "cls")
        test = ctx.features(test_index, base.transform, "cls")
        window_pos = per_class_positions(labels, 0, p["window"])
        pool_x, pool_y = pool.features[window_pos], pool.labels[window_pos]
        if p["method"] == "knn":
            device = search_device(args.backend, ctx.device)
        else:
            held_pos = per_class_positions(labels, p["window"], held)
            held_x, held_y = pool.features[held_pos], pool.labels[held_pos]
        per_subset: dict[int, list[float]] = {}
        details: dict[str, Any] = {}
        for shots in p["shots"]:
            offsets = p["offsets"][str(shots)]
            if p["method"] == "knn":
                per_subset[shots] = few_shot_knn(pool_x, pool_y, test.features, test.labels, shots=shots,
                                                 offsets=offsets, num_classes=num_classes,
                                                 temperature=p["temperature"], backend=args.backend,
                                                 device=device)
            else:
                accs, lams = few_shot_logreg(pool_x, pool_y, held_x, held_y, test.features, test.labels, shots=shots, offsets=offsets,
                                             lambdas=p["lambdas"], max_iter=p["max_iter"])
                per_subset[shots] = accs
                details[str(shots)] = {"lambda": lams}
            log.info("few-shot %s, nu = %d: %s", p["method"], shots, ", ".join(f"{a:.2f}" for a in per_subset[shots]))
        metrics = summarise(per_subset)
        name = records.record_stem(self.name, plan.dataset, p)
        subsets_name = f"{name}.subsets.json"
        if dist.is_main():
            atomic_write_json(ctx.file_in_out(subsets_name), {
                "top1": {str(s): a for s, a in per_subset.items()},
                "offsets": p["offsets"], **({"chosen": details} if details else {})})
        return TaskResult(metrics=metrics, images=len(pool_index) + len(test_index),
                          artifacts={"subsets": subsets_name})


TASK = FewShotTask()
