"""Tasks ``retrieval`` and ``retrieval-score``: revisited Oxford / Paris (revisitop) image retrieval.

``attmask-eval retrieval --ckpt C --dataset roxford5k|rparis6k|roxford5k-mini|rparis6k-mini``
describes every database and query image (:mod:`.retrieval_features`), ranks the database by
exact inner product with FAISS (:mod:`.faiss_search`) and scores the ranking with revisitop's
``compute_map`` (:mod:`.revisitop_map`): ``mAP_{easy,medium,hard}`` and
``mP@{1,5,10}_{easy,medium,hard}``, in percent.

``attmask-eval retrieval-score --gnd PKL --ranks NPY --out RUN_DIR`` scores an existing ranking
([n_db, n_queries], column q = database indices best first; revisitop's convention) and writes the
same ``retrieval`` record with ``checkpoint: null`` and the inputs' sha256.

What ``protocol.reference: true`` means here. The evaluation half is revisitop's official
protocol, which crops every query to its ``bbx`` (Radenović et al. 2018; PROTOCOLS.md §4), so
``query_crop`` must be on. The descriptor half is the pipeline behind the iBOT / AttMask numbers
(iBOT's ``run.sh``: CLS of the last block, L2-normalised, thumbnail to 512 px, multi-scale
{1, 1/√2, 1/2}); revisitop prescribes no resolution, so the reference fixes the one the compared
papers use. Hence reference = query crop + 512 px + multi-scale + CLS + no distractors.
``--no-query-crop`` reproduces DINO / iBOT's own (non-faithful) setting; their reported numbers
are matched through their ``protocol`` constraints (``query_crop: false, imsize: 512,
multiscale: true``), not through ``reference``. Distractors (+R1M) make a different benchmark, so
they set ``reference: false`` and the protocol records their count.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from attmask.eval import distributed as dist
from attmask.eval.atomic import atomic_save
from attmask.eval.checkpoint import sha256_file
from attmask.eval.context import RunContext
from attmask.eval.datasets import index_images, registry_name_for
from attmask.eval.errors import BadInput
from attmask.eval.features import FeatureSet
from attmask.eval.records import record_stem
from attmask.eval.tasks import Plan, Task, TaskResult

from .faiss_search import rank_database
from .retrieval_features import (
    POOLINGS,
    DescriptorOptions,
    ImageItem,
    code_version,
    extract_descriptors,
)
from .revisitop_data import RevisitopDataset, load_gnd, open_folder, open_registered
from .revisitop_map import KAPPAS, revisitop_metrics

log = logging.getLogger(__name__)

REFERENCE_IMSIZE = 512
SEARCH = "exact inner product (FAISS flat)"


def _open_dataset(args: argparse.Namespace) -> RevisitopDataset:
    if args.dataset is not None:
        return open_registered(args.dataset)
    if args.data is None:
        raise BadInput(None, "give --dataset NAME (roxford5k, rparis6k, roxford5k-mini, rparis6k-mini) or --data DIR")
    return open_folder(args.data)


def _dataset_label(args: argparse.Namespace) -> str:
    if args.dataset is not None:
        return str(args.dataset)
    if args.dataset_name:
        return str(args.dataset_name)
    folder = Path(args.data)
    return registry_name_for(folder, "revisitop") or folder.resolve().name


def _distractor_items(folder: str | None) -> list[ImageItem]:
    if folder is None:
        return []
    index = index_images(folder)
    return [ImageItem(Path(index.root) / rel) for rel in index.paths]


def _items_fingerprint(items: list[ImageItem]) -> str:
    """sha256 over (path, size, mtime, crop box) of every item: any change misses the cache."""
    h = hashlib.sha256()
    for it in items:
        try:
            st = os.stat(it.path)
        except OSError:
            raise BadInput(it.path, "image is missing") from None
        h.update(f"{it.path}\t{st.st_size}\t{st.st_mtime_ns}\t{it.bbx}\n".encode())
    return h.hexdigest()


class RetrievalTask(Task):
    name = "retrieval"
    help = "revisited Oxford / Paris retrieval: revisitop mAP and mP@k (FAISS search)"
    description = __doc__

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        g = parser.add_argument_group("retrieval (reference: query crop, 512 px, multi-scale, CLS)")
        g.add_argument("--imsize", type=int, default=REFERENCE_IMSIZE,
                       help="thumbnail size: longer side at most this many pixels (default: 512)")
        g.add_argument("--no-multiscale", dest="multiscale", action="store_false",
                       help="single scale instead of averaging scales 1, 1/sqrt(2), 1/2 (default: multi-scale)")
        g.add_argument("--no-query-crop", dest="query_crop", action="store_false",
                       help="do not crop queries to their bbx (DINO/iBOT's setting; default: crop, the "
                            "official protocol)")
        g.add_argument("--pooling", choices=POOLINGS, default="cls",
                       help="descriptor: CLS token or GeM over patch tokens (default: cls)")
        g.add_argument("--gem-p", type=float, default=3.0, help="GeM exponent for --pooling gem (default: 3)")
        g.add_argument("--distractors", default=None, metavar="DIR",
                       help="folder of distractor images appended to the database (e.g. R1M)")
        g.add_argument("--save-ranks", action="store_true",
                       help="also write the ranking [n_db, n_queries] as RUN_DIR/<record>-ranks.npy")

    def _options(self, args: argparse.Namespace) -> DescriptorOptions:
        if args.imsize < 1:
            raise BadInput(None, f"--imsize must be positive, got {args.imsize}")
        if args.gem_p <= 0:
            raise BadInput(None, f"--gem-p must be positive, got {args.gem_p}")
        return DescriptorOptions(imsize=args.imsize, multiscale=args.multiscale, pooling=args.pooling,
                                 gem_p=args.gem_p)

    def plan(self, args: argparse.Namespace, ctx: RunContext) -> Plan:
        _open_dataset(args)  # fail before any work when the ground truth is unusable
        opts = self._options(args)
        n_distractors = len(_distractor_items(args.distractors))
        reference = (args.query_crop and opts.imsize == REFERENCE_IMSIZE and opts.multiscale
                     and opts.pooling == "cls" and n_distractors == 0)
        protocol: dict[str, Any] = {
            "query_crop": bool(args.query_crop),
            "imsize": opts.imsize,
            "multiscale": opts.multiscale,
            "scales": [round(s, 6) for s in opts.scales],
            "pooling": opts.pooling,
            "gem_p": opts.gem_p if opts.pooling == "gem" else None,
            "normalize": "l2",
            "search": SEARCH,
            "distractors": n_distractors,
            "kappas": list(KAPPAS),
            "reference": bool(reference),
        }
        return Plan(dataset=_dataset_label(args), split="test", protocol=protocol)

    def _descriptors(self, ctx: RunContext, items: list[ImageItem], opts: DescriptorOptions, role: str) -> np.ndarray:
        bb = ctx.backbone()

        def compute() -> FeatureSet:
            feats = extract_descriptors(bb.model, items, opts, ctx.device, num_workers=ctx.num_workers,
                                        desc=f"retrieval {role}")
            return FeatureSet(features=feats, labels=np.zeros(len(items), dtype=np.int64),
                              paths=np.asarray([str(it.path) for it in items], dtype=str))

        ctx.images_seen += len(items)
        if ctx.cache is None:
            return compute().features
        fields = {"checkpoint": bb.info.sha256, "key": bb.info.key, "arch": bb.info.arch.to_dict(),
                  "task": "retrieval", "role": role, "descriptor": opts.to_dict(),
                  "data": _items_fingerprint(items), "retrieval_code": code_version()}
        fs, _hit = ctx.cache.get_or_compute(fields, compute)
        return fs.features

    def run(self, args: argparse.Namespace, ctx: RunContext, plan: Plan) -> TaskResult:
        if dist.world_size() > 1:
            raise BadInput(None, "retrieval runs in one process: launch it without torchrun")
        ds = _open_dataset(args)
        ds.check_images()
        opts = self._options(args)
        gnd = ds.gnd
        db_items = [ImageItem(ds.image_path(n)) for n in gnd.imlist] + _distractor_items(args.distractors)
        q_items = [ImageItem(ds.image_path(n), g.bbx if args.query_crop else None)
                   for n, g in zip(gnd.qimlist, gnd.gnd)]
        if args.query_crop and any(g.bbx is None for g in gnd.gnd):
            raise BadInput(gnd.path, "a query has no bbx, so it cannot be cropped (use --no-query-crop)")
        database = self._descriptors(ctx, db_items, opts, "database")
        queries = self._descriptors(ctx, q_items, opts, "queries")
        ranks = rank_database(database, queries)
        metrics = revisitop_metrics(ranks, [g.as_mapping() for g in gnd.gnd])
        log.info("%s: mAP E/M/H %.2f / %.2f / %.2f", plan.dataset, metrics.get("mAP_easy", float("nan")),
                 metrics["mAP_medium"], metrics["mAP_hard"])
        artifacts: dict[str, str] = {}
        if args.save_ranks:
            stem = record_stem(self.name, plan.dataset, plan.protocol)
            path = ctx.file_in_out(f"{stem}-ranks.npy")
            atomic_save(path, lambda fh: np.save(fh, ranks))
            artifacts["ranks"] = path.name
        return TaskResult(metrics=metrics, images=len(db_items) + len(q_items), artifacts=artifacts)


def load_ranks(path: str | os.PathLike[str], n_db: int, n_queries: int) -> np.ndarray:
    """Read a ranking [n_db', n_queries] (n_db' >= n_db when distractors were appended), validated.

    Every column must be a permutation of 0..n_db'-1 (a complete ranking, as revisitop's mAP
    assumes); anything else is a one-line ``BadInput``.
    """
    p = Path(path)
    if not p.is_file():
        raise BadInput(p, "no such file")
    try:
        ranks = np.load(p, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise BadInput(p, f"not a readable .npy array ({type(exc).__name__}: {exc})") from None
    if not isinstance(ranks, np.ndarray):
        raise BadInput(p, "expected a .npy array, found an .npz archive")
    if ranks.dtype.kind not in "iu":
        raise BadInput(p, f"ranks must be integer database indices, found dtype {ranks.dtype}")
    if ranks.ndim != 2:
        raise BadInput(p, f"ranks must have shape [n_db, n_queries] = [{n_db}, {n_queries}], found {list(ranks.shape)}")
    if ranks.shape[1] != n_queries:
        hint = " (transposed? the revisitop convention is [n_db, n_queries])" if ranks.shape[0] == n_queries else ""
        raise BadInput(p, f"ranks has shape {list(ranks.shape)} but the ground truth has {n_queries} queries: "
                          f"expected [{n_db}, {n_queries}]{hint}")
    if ranks.shape[0] < n_db:
        raise BadInput(p, f"ranks has {ranks.shape[0]} rows but the database has {n_db} images: "
                          "a complete ranking is needed")
    n = ranks.shape[0]
    ok = (np.sort(ranks, axis=0) == np.arange(n)[:, None]).all(axis=0)
    if not ok.all():
        q = int(np.flatnonzero(~ok)[0])
        raise BadInput(p, f"column {q} is not a permutation of 0..{n - 1} (repeated or out-of-range indices)")
    return ranks.astype(np.int64, copy=False)


class RetrievalScoreTask(Task):
    name = "retrieval-score"
    record_task = "retrieval"
    uses_backbone = False
    help = "score an existing revisitop ranking (writes a retrieval record)"
    description = ("Score RANKS.npy ([n_db, n_queries], column q = database indices best first, revisitop's "
                   "convention) against the ground truth GND.pkl with revisitop's compute_map; writes a "
                   "`retrieval` record with checkpoint null and the inputs' sha256.")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--gnd", required=True, metavar="PKL", help="revisitop ground truth gnd_<name>.pkl")
        parser.add_argument("--ranks", required=True, metavar="NPY", help="ranking [n_db, n_queries] (.npy)")

    def plan(self, args: argparse.Namespace, ctx: RunContext) -> Plan:
        label = args.dataset_name or registry_name_for(Path(args.gnd).parent, "revisitop") or Path(args.gnd).stem
        protocol = {"scored": "existing", "kappas": list(KAPPAS), "reference": True}
        return Plan(dataset=label, split="test", protocol=protocol)

    def run(self, args: argparse.Namespace, ctx: RunContext, plan: Plan) -> TaskResult:
        gnd = load_gnd(args.gnd)
        ranks = load_ranks(args.ranks, gnd.n_db, gnd.n_queries)
        metrics = revisitop_metrics(ranks, [g.as_mapping() for g in gnd.gnd])
        inputs = [{"path": str(Path(p).resolve()), "sha256": sha256_file(p)} for p in (args.gnd, args.ranks)]
        return TaskResult(metrics=metrics, images=0, inputs=inputs)


TASK = RetrievalTask()
SCORE_TASK = RetrievalScoreTask()
