"""Weighted k-NN classification (DINO's protocol) with exact FAISS or chunked torch search.

Protocol (DINO ``eval_knn.py``, used unchanged by iBOT and AttMask): CLS features of the last
block after the final norm, L2-normalised; cosine similarity against the whole training bank;
each of the k nearest neighbours adds ``exp(sim / T)`` to its class (T = 0.07); the class with
the largest sum is the prediction. k ∈ {10, 20, 100, 200}; the headline is top-1 at k = 20.

Layers, from pure to I/O:

- ``search_torch`` / ``search_faiss``: the ``K`` most similar bank rows of every query, with the
  memory of each step bounded (query chunks; FAISS blocks internally);
- ``rescore`` / ``nearest_neighbours``: the canonical k nearest (similarity recomputed in float64,
  ties broken by bank index; near-ties at the k-th neighbour re-checked against the bank), so both
  backends feed *identical* neighbours to the vote;
- ``weighted_vote`` / ``rank_classes``: the vote and the class ranking (ties: lower class index);
- ``knn_classify``: ranked classes for several k from one search; ``knn_accuracy``: the metrics
  ``top1@k<K>`` / ``top5@k<K>`` in percent (a contract other components call, e.g. online k-NN
  during pre-training);
- ``TASK``: the ``attmask-eval knn`` command.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .classification_options import add_classification_arguments, plan_classification, resolve_classification
from .context import RunContext
from .errors import BadInput
from .tasks import Plan, Task, TaskResult

log = logging.getLogger(__name__)

DEFAULT_KS = (10, 20, 100, 200)
DEFAULT_TEMPERATURE = 0.07
BACKENDS = ("faiss", "torch")
# Elements of one similarity block of the torch backend (256 MiB of float32).
DEFAULT_BLOCK_ELEMENTS = 1 << 26
# Elements of one gathered neighbour block of the float64 re-scoring (64 MiB, twice with the product).
RESCORE_BLOCK_ELEMENTS = 1 << 21
# Class scores of one vote block (float64; 32 MiB).
VOTE_BLOCK_ELEMENTS = 1 << 22
# Extra neighbours searched beyond k, and the similarity gap under which the order at the k-th
# neighbour is re-checked exactly (float32 dot products of unit vectors err by well under 1e-5).
TIE_MARGIN = 16
TIE_TOLERANCE = 1e-4

ArrayLike = torch.Tensor | np.ndarray


def as_tensor(x: ArrayLike, dtype: torch.dtype | None = None) -> torch.Tensor:
    """A torch view of a numpy array or tensor (no copy when the dtype already matches)."""
    t = torch.from_numpy(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else x
    return t if dtype is None else t.to(dtype)


def l2_normalise(x: torch.Tensor) -> torch.Tensor:
    """Rows of ``x`` [N, D] scaled to unit L2 norm (float32; zero rows stay zero)."""
    return torch.nn.functional.normalize(x.float(), dim=1, p=2)


# -- search ------------------------------------------------------------------------------------

def search_torch(bank: torch.Tensor, queries: torch.Tensor, k: int,
                 block_elements: int = DEFAULT_BLOCK_ELEMENTS) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact inner-product search by chunked matrix products.

    ``bank`` [N, D] and ``queries`` [Q, D] on the same device; returns ``(similarities [Q, k]
    float32, indices [Q, k] int64)``, most similar first. Each step holds one [q, N] similarity
    block with ``q * N <= block_elements`` (at least one query row).
    """
    n = bank.shape[0]
    if not 0 < k <= n:
        raise ValueError(f"k = {k} needs 1 <= k <= bank size ({n})")
    rows = max(1, block_elements // max(n, 1))
    q_count = queries.shape[0]
    # outputs allocated once: per-block results appended to lists would interleave long-lived small
    # allocations with the large temporaries and fragment the heap (RSS grew by GBs in benchmarks)
    sims_out = torch.empty(q_count, k, dtype=torch.float32, device=bank.device)
    idx_out = torch.empty(q_count, k, dtype=torch.long, device=bank.device)
    bank_t = bank.t()
    for start in range(0, q_count, rows):
        block = queries[start:start + rows] @ bank_t
        torch.topk(block, k, dim=1, largest=True, sorted=True, out=(sims_out[start:start + rows],
                                                                     idx_out[start:start + rows]))
        del block
    return sims_out, idx_out


def faiss_has_gpu() -> bool:
    import faiss

    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def search_faiss(bank: torch.Tensor, queries: torch.Tensor, k: int, use_gpu: bool = False,
                 query_chunk: int = 65536) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact inner-product search with FAISS (``faiss.knn``; ``GpuIndexFlatIP`` with faiss-gpu).

    Same contract as ``search_torch``; results come back on ``queries.device``. On the CPU,
    ``faiss.knn`` searches the bank in place (no index copy) in fixed-size BLAS blocks, so memory
    beyond the inputs is one output chunk of ``query_chunk`` × k rows.
    """
    import faiss

    n, d = bank.shape
    if not 0 < k <= n:
        raise ValueError(f"k = {k} needs 1 <= k <= bank size ({n})")
    bank_np = np.ascontiguousarray(bank.detach().float().cpu().numpy())
    index: Any = None
    if use_gpu:
        res = faiss.StandardGpuResources()
        cfg = faiss.GpuIndexFlatConfig()
        cfg.device = (queries.device.index or 0) if queries.device.type == "cuda" else 0
        index = faiss.GpuIndexFlatIP(res, d, cfg)
        index.add(bank_np)
    q_count = queries.shape[0]
    sims_out = torch.empty(q_count, k, dtype=torch.float32)
    idx_out = torch.empty(q_count, k, dtype=torch.long)
    for start in range(0, q_count, query_chunk):
        q = np.ascontiguousarray(queries[start:start + query_chunk].detach().float().cpu().numpy())
        if index is not None:
            sims, idx = index.search(q, k)
        else:
            sims, idx = faiss.knn(q, bank_np, k, metric=faiss.METRIC_INNER_PRODUCT)
        sims_out[start:start + len(q)] = torch.from_numpy(sims)
        idx_out[start:start + len(q)] = torch.from_numpy(idx)
    return sims_out.to(queries.device), idx_out.to(queries.device)


def rescore(bank: torch.Tensor, queries: torch.Tensor, indices: torch.Tensor,
            block_elements: int = RESCORE_BLOCK_ELEMENTS) -> tuple[torch.Tensor, torch.Tensor]:
    """Canonical neighbour order: recompute similarities in float64 and sort them.

    ``bank`` [N, D], ``queries`` [Q, D], ``indices`` [Q, K] from any search. Returns
    ``(similarities [Q, K] float64, indices [Q, K])`` sorted by decreasing similarity, ties by
    increasing bank index. Two searches that found the same neighbour sets give identical output,
    whatever their float32 rounding or tie order.
    """
    q_count, k = indices.shape
    rows = max(1, block_elements // max(k * bank.shape[1], 1))
    sims_out = torch.empty(q_count, k, dtype=torch.float64, device=bank.device)
    idx_out = torch.empty_like(indices)
    for start in range(0, q_count, rows):
        idx = indices[start:start + rows]
        neigh = bank[idx].double()  # [q, K, D]
        # an element-wise product and a row sum: each (query, neighbour) value is computed the same
        # way wherever it sits in the block (a batched matmul's kernels may round by position)
        sims = (neigh * queries[start:start + rows, None, :].double()).sum(-1)  # [q, K]
        del neigh
        # stable sort by index first, then by similarity: equal similarities stay in index order
        by_index = idx.argsort(dim=1, stable=True)
        idx = idx.gather(1, by_index)
        sims = sims.gather(1, by_index)
        order = sims.argsort(dim=1, descending=True, stable=True)
        sims_out[start:start + rows] = sims.gather(1, order)
        idx_out[start:start + rows] = idx.gather(1, order)
    return sims_out, idx_out


def nearest_neighbours(bank: torch.Tensor, queries: torch.Tensor, k: int, backend: str = "torch",
                       use_gpu: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact ``k`` nearest bank rows of each query, in canonical order.

    ``bank`` [N, D] and ``queries`` [Q, D], both already L2-normalised, on one device. Returns
    ``(similarities [Q, k] float64, indices [Q, k] int64)``: the first k rows by (float64
    similarity descending, bank index ascending), whatever the backend. The backend searches
    ``TIE_MARGIN`` extra neighbours; a query whose extra neighbours come within ``TIE_TOLERANCE``
    of its k-th (duplicates, ties that float32 rounding may order either way) is resolved against
    every bank row close enough to matter.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown k-NN backend {backend!r} (choose from {', '.join(BACKENDS)})")
    n = bank.shape[0]
    k_search = min(n, k + TIE_MARGIN)
    if backend == "torch":
        _, idx = search_torch(bank, queries, k_search)
    else:
        _, idx = search_faiss(bank, queries, k_search, use_gpu=use_gpu)
    sims, idx = rescore(bank, queries, idx.to(bank.device))
    if k_search > k:
        unsure = (sims[:, -1] >= sims[:, k - 1] - TIE_TOLERANCE).nonzero().flatten().tolist()
        for q in unsure:
            row = bank @ queries[q]  # [N] float32, exact up to rounding
            cand = (row >= sims[q, k - 1] - 2 * TIE_TOLERANCE).nonzero().flatten()
            sims[q, :k], idx[q, :k] = _exact_top(bank, queries[q], cand, k)
    return sims[:, :k], idx[:, :k]


def _exact_top(bank: torch.Tensor, query: torch.Tensor, candidates: torch.Tensor, k: int,
               chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """The canonical first ``k`` of ``candidates`` [M] (bank rows) for one ``query`` [D], in chunks of
    rows so that even a query tied with the whole bank (e.g. all-zero features) stays in memory."""
    best_s = torch.empty(0, dtype=torch.float64, device=bank.device)
    best_i = torch.empty(0, dtype=torch.long, device=bank.device)
    for start in range(0, len(candidates), chunk):
        part = torch.cat([best_i, candidates[start:start + chunk]])
        s, i = rescore(bank, query[None], part[None])
        best_s, best_i = s[0, :k], i[0, :k]
    return best_s, best_i


# -- vote ----------------------------------------------------------------------------------------

def weighted_vote(neighbour_labels: torch.Tensor, neighbour_sims: torch.Tensor, num_classes: int,
                  temperature: float = DEFAULT_TEMPERATURE) -> torch.Tensor:
    """Class scores [Q, C]: each neighbour adds ``exp(sim / T)`` to its class (DINO's vote).

    ``neighbour_labels`` [Q, k] int64 and ``neighbour_sims`` [Q, k]; computed in float64.
    """
    weights = (neighbour_sims.double() / temperature).exp()
    scores = torch.zeros(neighbour_labels.shape[0], num_classes, dtype=torch.float64,
                         device=neighbour_labels.device)
    return scores.scatter_add_(1, neighbour_labels, weights)


def rank_classes(scores: torch.Tensor, top: int = 5) -> torch.Tensor:
    """The ``min(top, C)`` best classes of each row of ``scores`` [Q, C], best first.

    Ties (e.g. classes no neighbour voted for) go to the lower class index.
    """
    order = scores.argsort(dim=1, descending=True, stable=True)
    return order[:, :min(top, scores.shape[1])]


def knn_classify(train_features: ArrayLike, train_labels: ArrayLike, test_features: ArrayLike, *,
                 ks: Sequence[int] = DEFAULT_KS, temperature: float = DEFAULT_TEMPERATURE,
                 num_classes: int | None = None, backend: str = "torch", use_gpu: bool = False,
                 top: int = 5) -> dict[int, torch.Tensor]:
    """Ranked class predictions of the weighted k-NN classifier, for every k in ``ks``.

    ``train_features`` [N, D], ``train_labels`` [N] (0..C-1), ``test_features`` [Q, D]: torch
    tensors (any device; the search runs there) or numpy arrays. Features are L2-normalised here.
    One search for ``max(ks)`` neighbours serves every k. Returns ``{k: classes [Q, min(top, C)]}``
    (int64, on the features' device), best first.
    """
    bank = l2_normalise(as_tensor(train_features))
    queries = l2_normalise(as_tensor(test_features).to(bank.device))
    labels = as_tensor(train_labels).long().to(bank.device)
    if bank.ndim != 2 or queries.ndim != 2 or bank.shape[1] != queries.shape[1]:
        raise ValueError(f"features must be [N, D] and [Q, D]; got {list(bank.shape)} and {list(queries.shape)}")
    if labels.shape != (bank.shape[0],):
        raise ValueError(f"train_labels must be [N] = [{bank.shape[0]}]; got {list(labels.shape)}")
    if not ks:
        raise ValueError("ks is empty")
    if num_classes is None:
        num_classes = int(labels.max().item()) + 1 if labels.numel() else 0
    k_max = max(ks)
    if min(ks) < 1 or k_max > bank.shape[0]:
        raise ValueError(f"every k must be in 1..{bank.shape[0]} (the bank size); got {sorted(ks)}")
    sims, idx = nearest_neighbours(bank, queries, k_max, backend=backend, use_gpu=use_gpu)
    neighbour_labels = labels[idx]
    q_count = queries.shape[0]
    out = {k: torch.empty(q_count, min(top, num_classes), dtype=torch.long, device=bank.device) for k in ks}
    rows = max(1, VOTE_BLOCK_ELEMENTS // max(num_classes, 1))  # scores [rows, C] per step
    for start in range(0, q_count, rows):
        stop = start + rows
        for k in ks:
            scores = weighted_vote(neighbour_labels[start:stop, :k], sims[start:stop, :k], num_classes, temperature)
            out[k][start:stop] = rank_classes(scores, top)
    return out


def topk_hits(ranked: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """Bool [Q]: the true label is among the first ``k`` ranked classes."""
    return (ranked[:, :k] == labels.view(-1, 1).to(ranked.device)).any(dim=1)


def knn_accuracy(train_features: ArrayLike, train_labels: ArrayLike, test_features: ArrayLike,
                 test_labels: ArrayLike, *, ks: Sequence[int] = DEFAULT_KS,
                 temperature: float = DEFAULT_TEMPERATURE, num_classes: int | None = None,
                 backend: str = "torch") -> dict[str, float]:
    """k-NN accuracy in percent: ``top1@k<K>`` for every k, ``top5@k<K>`` when there are >= 5 classes.

    Inputs as ``knn_classify`` plus ``test_labels`` [Q]. ``num_classes`` defaults to one more
    than the largest label of either split. With ``backend="faiss"`` the search runs on FAISS
    (GPU FAISS when installed and the features are on a CUDA device).
    """
    test_y = as_tensor(test_labels).long()
    train_y = as_tensor(train_labels).long()
    if num_classes is None:
        num_classes = int(max(train_y.max().item(), test_y.max().item())) + 1
    use_gpu = backend == "faiss" and isinstance(train_features, torch.Tensor) \
        and train_features.device.type == "cuda" and faiss_has_gpu()
    ranked = knn_classify(train_features, train_y, test_features, ks=ks, temperature=temperature,
                          num_classes=num_classes, backend=backend, use_gpu=use_gpu)
    metrics: dict[str, float] = {}
    for k in ks:
        metrics[f"top1@k{k}"] = 100.0 * topk_hits(ranked[k], test_y, 1).double().mean().item()
        if num_classes >= 5:
            metrics[f"top5@k{k}"] = 100.0 * topk_hits(ranked[k], test_y, 5).double().mean().item()
    return metrics


# -- task ----------------------------------------------------------------------------------------

class KnnTask(Task):
    name = "knn"
    help = "weighted k-NN classification on frozen CLS features (DINO protocol)"
    description = ("Weighted k-NN (DINO / iBOT / AttMask): CLS of the last block after the final norm, "
                   "L2-normalised; cosine similarity; exp(sim/T) vote, T = 0.07; k in {10, 20, 100, 200}. "
                   "Metrics top1@kK and top5@kK (percent); headline top1@k20. The train split is the bank "
                   "(--subset 260 for the 20% ImageNet protocol).")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_classification_arguments(parser)
        g = parser.add_argument_group("k-NN")
        g.add_argument("--ks", type=int, nargs="+", default=list(DEFAULT_KS), metavar="K",
                       help="numbers of neighbours (default: 10 20 100 200)")
        g.add_argument("--temperature", type=float, default=DEFAULT_TEMPERATURE,
                       help="vote temperature T (default: 0.07)")
        g.add_argument("--backend", choices=BACKENDS, default="faiss",
                       help="exact search backend: faiss (GPU FAISS when installed and --device is cuda) or "
                            "chunked torch matrix products; both give identical predictions (default: faiss)")

    def plan(self, args: argparse.Namespace, ctx: RunContext) -> Plan:
        base = plan_classification(args, ctx)
        ks = sorted(set(args.ks))
        reference = base.reference and ks == list(DEFAULT_KS) and args.temperature == DEFAULT_TEMPERATURE
        protocol = {**base.protocol, "layers": "cls", "ks": ks, "temperature": args.temperature,
                    "reference": reference}
        return Plan(dataset=base.dataset, split=base.test_split, protocol=protocol)

    def run(self, args: argparse.Namespace, ctx: RunContext, plan: Plan) -> TaskResult:
        data = resolve_classification(args, ctx)
        ks = plan.protocol["ks"]
        if max(ks) > len(data.train):
            raise BadInput(data.train.root, f"k = {max(ks)} exceeds the {len(data.train)} training images "
                                            "of the bank (lower --ks or raise --subset)")
        train = ctx.features(data.train, data.transform, "cls")
        test = ctx.features(data.test, data.transform, "cls")
        backend = args.backend
        device = search_device(backend, ctx.device)
        train_x = torch.from_numpy(train.features).to(device)
        test_x = torch.from_numpy(test.features).to(device)
        log.info("k-NN: bank %d x %d, %d queries, backend %s%s", *train_x.shape, len(test_x), backend,
                 " (GPU)" if train_x.is_cuda else "")
        metrics = knn_accuracy(train_x, train.labels, test_x, test.labels, ks=ks,
                               temperature=plan.protocol["temperature"], num_classes=data.num_classes,
                               backend=backend)
        return TaskResult(metrics=metrics, images=len(data.train) + len(data.test))


def search_device(backend: str, device: torch.device) -> torch.device:
    """Where the k-NN inputs go: ``device`` when the backend searches there (torch, or GPU FAISS on a
    CUDA device), else the CPU. ``--backend faiss`` without faiss installed is a one-line error."""
    if backend == "faiss":
        _require_faiss()
    if device.type == "cuda" and (backend == "torch" or faiss_has_gpu()):
        return device
    return torch.device("cpu")


def _require_faiss() -> None:
    try:
        import faiss  # noqa: F401
    except ImportError:
        raise BadInput(None, "--backend faiss needs the faiss package (pip install 'attmask[faiss-cpu]'), "
                             "or pass --backend torch") from None


TASK = KnnTask()
