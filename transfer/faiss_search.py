"""Exhaustive inner-product search with FAISS, returning rankings in the revisitop convention.

With L2-normalised descriptors the inner product is the cosine similarity, so the result equals
DINO's ``argsort(-database @ queries.T, dim=0)`` up to the order of exact ties. The ranking is
complete (every database image, also the distractors), as revisitop's mAP needs.

A GPU index is used when FAISS has GPU support and a device, and the ranking depth fits its
``k`` limit (FAISS GPU k-selection supports k <= 2048); otherwise the CPU ``IndexFlatIP``.
Both are exact, so the choice never changes a number.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from attmask.eval.errors import BadInput

log = logging.getLogger(__name__)

GPU_MAX_K = 2048


def _faiss() -> Any:
    try:
        import faiss
    except ImportError:
        raise BadInput(None, "retrieval needs FAISS: install attmask[faiss-cpu] (or faiss-gpu)") from None
    return faiss


def gpu_available() -> bool:
    faiss = _faiss()
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def rank_database(database: np.ndarray, queries: np.ndarray, use_gpu: bool | None = None) -> np.ndarray:
    """Rank ``database`` [n_db, D] for each of ``queries`` [n_q, D] by inner product.

    Returns ``ranks`` [n_db, n_q] int64: column q holds database indices, most similar first.
    ``use_gpu`` None = GPU when available and n_db <= ``GPU_MAX_K``.
    """
    faiss = _faiss()
    if database.ndim != 2 or queries.ndim != 2 or database.shape[1] != queries.shape[1]:
        raise ValueError(f"descriptor shapes differ: database {database.shape}, queries {queries.shape}")
    db = np.ascontiguousarray(database, dtype=np.float32)
    q = np.ascontiguousarray(queries, dtype=np.float32)
    n_db, dim = db.shape
    index = faiss.IndexFlatIP(dim)
    gpu = (gpu_available() and n_db <= GPU_MAX_K) if use_gpu is None else use_gpu
    if gpu:
        if n_db > GPU_MAX_K:
            raise ValueError(f"FAISS GPU search returns at most {GPU_MAX_K} neighbours; the database has {n_db}")
        resources = faiss.StandardGpuResources()
        index = faiss.index_cpu_to_gpu(resources, 0, index)
    log.info("FAISS %s flat inner-product search: %d database x %d queries, dim %d",
             "GPU" if gpu else "CPU", n_db, q.shape[0], dim)
    index.add(db)
    _scores, ids = index.search(q, n_db)
    if (ids < 0).any():
        raise RuntimeError("FAISS returned fewer results than database entries")
    return np.ascontiguousarray(ids.T.astype(np.int64))
