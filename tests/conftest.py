"""Shared fixtures. Real data comes from $ATTMASK_DATA; its absence is a failure, not a skip."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest
import torch


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """GPU-only tests skip only when no CUDA device exists; nothing else skips by default."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (none available)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def single_thread() -> Iterator[None]:
    """One intra-op torch thread for a test module of many small tensor operations (opt in with
    ``pytestmark = pytest.mark.usefixtures("single_thread")``).

    On a 2-core machine that other processes also load, every small parallel region waits for a
    descheduled sibling thread: the 104-head linear sweep measured 5-15 iterations/s with two threads
    and 180-210 with one; small forwards were tens of times slower. Results do not depend on the
    thread count beyond float rounding, and no test compares timings.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def data_root() -> Path:
    env = os.environ.get("ATTMASK_DATA")
    if not env:
        pytest.fail("$ATTMASK_DATA is not set: point it at the shared data folder (../shared/data)")
    root = Path(env)
    if not root.is_dir():
        pytest.fail(f"$ATTMASK_DATA={env} is not a folder")
    return root


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Feature caches of tests live in a per-session temporary folder, never in the user's cache."""
    monkeypatch.setenv("ATTMASK_CACHE", str(tmp_path_factory.getbasetemp() / "feature-cache"))
    monkeypatch.setenv("ATTMASK_BUILTIN", str(tmp_path_factory.getbasetemp() / "builtin-datasets"))


# -- trained_backbone: a small ViT whose features mean something --------------------------------

@dataclass(frozen=True)
class SupervisedViTConfig:
    """Changing a field or the training function below changes the cache key (a new file is trained)."""

    dataset: str = "cifar10-mini"
    split: str = "train"
    embed_dim: int = 128
    depth: int = 4
    num_heads: int = 2
    patch_size: int = 4
    img_size: int = 32
    steps: int = 400
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup: float = 0.1
    pad: int = 4
    seed: int = 0


def train_supervised_vit(data_root: Path, c: SupervisedViTConfig) -> dict[str, torch.Tensor]:
    """Train ``build_vit(spec)`` + a linear head on the CLS token with labels; return the backbone state dict.

    Data: every image of ``$ATTMASK_DATA/<dataset>/<split>`` decoded once into memory, normalised
    with the ImageNet mean / std of the evaluation transform; augmentation: reflect-pad + random
    crop (one offset per batch) and horizontal flip. AdamW with a one-cycle schedule, bf16 autocast
    and explicit attention on CPUs with bf16 support (2-3x faster than fused attention there).
    """
    import numpy as np
    from PIL import Image

    from attmask.eval.arch import ArchSpec, build_vit
    from attmask.eval.datasets import index_image_folder
    from attmask.eval.transforms import IMAGENET_MEAN, IMAGENET_STD

    index = index_image_folder(data_root / c.dataset / c.split)
    pixels = np.stack([np.asarray(Image.open(index.root / p).convert("RGB")) for p in index.paths])
    images = torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous()  # [N, 3, H, W] uint8
    labels = torch.tensor(index.labels)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    size, pad = c.img_size, c.pad
    spec = ArchSpec(embed_dim=c.embed_dim, depth=c.depth, num_heads=c.num_heads, patch_size=c.patch_size,
                    img_size=size)
    gen = torch.Generator().manual_seed(c.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(c.seed)
        model = build_vit(spec)
        head = torch.nn.Linear(spec.embed_dim, len(index.classes))
    bf16 = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    for blk in model.blocks:
        blk.attn.fused_attn = not bf16
    params = [*model.parameters(), *head.parameters()]
    opt = torch.optim.AdamW(params, lr=c.lr, weight_decay=c.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=c.lr, total_steps=c.steps, pct_start=c.warmup)
    # One thread: the result does not depend on the core count, and on shared 2-core machines it
    # runs 3-4x faster than two threads that wait on each other (measured: 30 steps 11 s vs 41-53 s).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    flushed = (torch.tensor([5e-324], dtype=torch.float64) * 1.0).item() == 0.0  # torch has no getter
    torch.set_flush_denormal(True)
    model.train()
    try:
        for _ in range(c.steps):
            idx = torch.randint(0, len(images), (c.batch_size,), generator=gen)
            x = torch.nn.functional.pad(images[idx].float(), (pad, pad, pad, pad), mode="reflect")
            dx, dy = torch.randint(0, 2 * pad + 1, (2,), generator=gen).tolist()
            x = x[:, :, dy:dy + size, dx:dx + size]
            if torch.rand(1, generator=gen).item() < 0.5:
                x = x.flip(3)
            x = (x / 255.0 - mean) / std
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                logits = head(model.forward_features(x)[:, 0])
            loss = torch.nn.functional.cross_entropy(logits.float(), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    finally:
        torch.set_flush_denormal(flushed)
        torch.set_num_threads(threads)
    for blk in model.blocks:
        blk.attn.fused_attn = True
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _fixture_cache_dir() -> Path:
    env = os.environ.get("ATTMASK_FIXTURES")
    return Path(env) if env else Path.home() / ".cache" / "attmask" / "fixtures"


def _first_checkpoint(folder: Path) -> Path | None:
    found = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in (".pth", ".pt", ".safetensors"))
    return found[0] if found else None


@pytest.fixture(scope="session")
def trained_backbone(data_root: Path) -> Path:
    """Path of a backbone checkpoint whose features beat random init clearly (``{'state_dict': ...}``).

    The first checkpoint under ``$ATTMASK_DATA/checkpoints/`` when that folder holds one; otherwise a
    ViT (128-d, 4 blocks, 2 heads, patch 4, 32 px) trained WITH LABELS on cifar10-mini (400 steps of
    128 images, about 5 epochs, one thread; about 2-3 minutes), once per machine, cached under
    ``~/.cache/attmask/fixtures`` (``$ATTMASK_FIXTURES``) keyed by the training code and config.
    A file lock makes concurrent sessions train it once. Evaluate it with ``--resize 32 --crop 32``.

    Measured on cifar10-mini at 32 px (2,000 test images): k-NN top1@k20 with the full train bank
    44.0 vs 28.4 for random init (``random:vit_d128_l4_h2_patch4_32``, seed 0), +15.6; bank of 100
    per class 40.2 vs 23.1; fast linear probe 43.6 vs 29.8; few-shot k-NN (nu = 1 / 5 / 10 / 20)
    22.4 / 30.8 / 33.1 / 36.6 vs 14.1 / 18.0 / 18.6 / 20.4. Test thresholds sit at about half the
    measured margins (see each test).
    """
    import fcntl
    import hashlib
    import inspect
    import json

    from attmask.eval.atomic import atomic_save

    shipped = data_root / "checkpoints"
    if shipped.is_dir():
        first = _first_checkpoint(shipped)
        if first is not None:
            return first
    config = SupervisedViTConfig()
    key_src = inspect.getsource(train_supervised_vit) + json.dumps(asdict(config), sort_keys=True)
    key_src += f"|torch {torch.__version__.split('+')[0]}|bf16 {torch.ops.mkldnn._is_mkldnn_bf16_supported()}"
    key = hashlib.sha256(key_src.encode()).hexdigest()[:16]
    folder = _fixture_cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"supervised-vit-cifar10mini-{key}.pth"
    with open(folder / f".{path.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.exists():
            state = train_supervised_vit(data_root, config)
            atomic_save(path, lambda fh: torch.save({"state_dict": state}, fh))
    return path
