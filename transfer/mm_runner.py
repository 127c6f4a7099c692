"""What the ``coco`` and ``ade20k`` tasks share: mmengine presets, filling them, running them.

A preset is an mmengine config file in ``configs/mmdet/`` or ``configs/mmseg/`` (``_base_``
inheritance) with an ``attmask`` dict of protocol facts (``schedule``, ``reference``,
``total_batch_size``, ``source``...). The task loads it (:func:`load_preset`), applies
``--cfg-options``, fills what depends on the run (checkpoint, embed dim, classes, data,
runtime), and hands it to mmengine's ``Runner`` (:func:`run`): train, then test the final model
(or test only). The record's protocol carries the resolved config with machine-specific paths
replaced by placeholders (:func:`recipe`) and its sha256.

mmengine checkpoints (resume, ``--test-only``) load through a restricted unpickler
(:mod:`.mm_checkpoint`); a fine-tuned model for ``--test-only`` is loaded strictly (mmengine's
default is ``strict=False``).
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

from attmask.eval import distributed as dist
from attmask.eval.errors import BadInput
from attmask.eval.resources import config_root, find_config

from .mm_checkpoint import restricted_local_loader

log = logging.getLogger(__name__)


def load_preset(kind: str, name_or_path: str) -> tuple[str, Path, Any]:
    """``(preset name, file, Config)`` of a shipped preset name or a config file path."""
    from mmengine.config import Config

    path = find_config(kind, name_or_path, suffixes=(".py",))
    try:
        cfg = Config.fromfile(str(path))
    except Exception as exc:  # mmengine raises many types for a broken config: one line, naming the file
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise BadInput(path, f"not a loadable mmengine config ({type(exc).__name__}: {first})") from None
    if "attmask" not in cfg:
        cfg.attmask = {"schedule": "custom", "reference": False}
    name = path.stem if path.parent == config_root() / kind else str(path)
    return name, path, cfg


def preset_names(kind: str) -> list[str]:
    folder = config_root() / kind
    return sorted(p.stem for p in folder.glob("*.py") if not p.name.startswith("_"))


def add_mm_arguments(parser: argparse.ArgumentParser, kind: str, default_preset: str) -> None:
    """Options shared by the mm tasks (the preset, overrides, training control)."""
    from mmengine.config import DictAction

    g = parser.add_argument_group("mm training (reference defaults from the preset)")
    g.add_argument("--config", default=default_preset, metavar="PRESET|PATH",
                   help=f"mmengine config: a preset of configs/{kind}/ ({', '.join(preset_names(kind))}) "
                        f"or a file (default: {default_preset})")
    g.add_argument("--cfg-options", nargs="+", action=DictAction, default=None, metavar="KEY=VALUE",
                   help="override config entries (mmengine syntax, e.g. train_cfg.max_epochs=1); "
                        "makes protocol.reference false")
    g.add_argument("--images-per-gpu", type=int, default=None,
                   help="training images per process (default: the preset's; total = this x processes)")
    g.add_argument("--auto-scale-lr", action="store_true",
                   help="scale the lr by total batch / the preset's total batch (mmengine auto_scale_lr)")
    g.add_argument("--no-amp", dest="amp", action="store_false",
                   help="full precision on GPU (default: mixed precision on GPU, as the reference; CPU never)")
    g.add_argument("--resume", action="store_true",
                   help="continue from the last checkpoint in the run's work folder (RUN_DIR/<record stem>/)")
    g.add_argument("--test-only", action="store_true",
                   help="no training: test --finetuned, or else the last checkpoint of the work folder")
    g.add_argument("--finetuned", default=None, metavar="PTH",
                   help="with --test-only: an mmengine checkpoint of the whole fine-tuned model")
    g.add_argument("--train-split", default=None, help="training split (default: the registry's)")
    g.add_argument("--test-split", default=None, help="test split (default: the registry's)")


def set_key(node: Any, key: str, value: Any) -> int:
    """Set ``key`` to ``value`` in every dict of a nested config; returns how many were set."""
    count = 0
    if isinstance(node, dict):
        for k in list(node.keys()):
            if k == key:
                node[k] = value
                count += 1
            else:
                count += set_key(node[k], key, value)
    elif isinstance(node, list | tuple):
        for item in node:
            count += set_key(item, key, value)
    return count


def fill_backbone(cfg: Any, args: argparse.Namespace) -> None:
    bb = cfg.model.backbone
    if bb.get("type") != "AttMaskViT":
        raise BadInput(None, f"the config's backbone is {bb.get('type')!r}; these tasks need AttMaskViT")
    bb.ckpt = str(args.ckpt)
    bb.checkpoint_key = args.checkpoint_key
    bb.arch = args.arch
    bb.patch_size = args.patch_size
    bb.seed = int(args.seed)


def fill_widths(cfg: Any, embed_dim: int) -> None:
    """Set every width that equals the ViT's embed dim in the reference configs (384 for ViT-S).

    Neck / decode / auxiliary ``in_channels`` -> D (or [D] * 4); a ``resize_concat`` head without
    convs (the linear head) -> ``channels = 4 D``; with ``attmask.head_channels_from_embed_dim``
    UPerHead ``channels`` -> D (iBOT: 384 for ViT-S, 768 for ViT-B).
    """
    model = cfg.model
    for part in ("neck", "decode_head", "auxiliary_head"):
        head = model.get(part)
        if not head:
            continue
        ins = head.get("in_channels")
        if isinstance(ins, list | tuple):
            head.in_channels = [embed_dim] * len(ins)
        elif isinstance(ins, int) and part != "neck":
            head.in_channels = embed_dim
        if part == "decode_head":
            if head.get("input_transform") == "resize_concat" and head.get("num_convs", 2) == 0:
                head.channels = embed_dim * len(head.in_channels)
            elif head.get("type") == "UPerHead" and cfg.attmask.get("head_channels_from_embed_dim"):
                head.channels = embed_dim


def configure_runtime(cfg: Any, args: argparse.Namespace, work_dir: Path, device: torch.device,
                      num_workers: int) -> dict[str, Any]:
    """Work folder, launcher, AMP, seed, batch and workers. Returns the run facts for the protocol."""
    cfg.work_dir = str(work_dir)
    cfg.launcher = "pytorch" if dist.is_dist() else "none"
    cfg.randomness = dict(seed=int(args.seed), deterministic=False)
    amp = bool(args.amp) and device.type == "cuda"
    if amp:
        cfg.optim_wrapper.type = "AmpOptimWrapper"
        cfg.optim_wrapper.setdefault("loss_scale", "dynamic")
    if args.images_per_gpu is not None:
        if args.images_per_gpu < 1:
            raise BadInput(None, f"--images-per-gpu must be positive, got {args.images_per_gpu}")
        cfg.train_dataloader.batch_size = int(args.images_per_gpu)
    for loader in ("train_dataloader", "test_dataloader"):
        if cfg.get(loader):
            cfg[loader].num_workers = int(num_workers)
            cfg[loader].persistent_workers = num_workers > 0
    if dist.is_dist() and device.type != "cuda":
        # mmengine's default wrapper pins DDP to cuda:LOCAL_RANK; a CPU process group (gloo) needs none
        cfg.model_wrapper_cfg = dict(type="MMDistributedDataParallel", device_ids=None, broadcast_buffers=False,
                                     find_unused_parameters=bool(cfg.get("find_unused_parameters", False)))
    total = int(cfg.train_dataloader.batch_size) * dist.world_size()
    if args.auto_scale_lr:
        cfg.auto_scale_lr = dict(enable=True, base_batch_size=int(cfg.attmask.get("total_batch_size", total)))
    return {"amp": amp, "total_batch_size": total, "processes": dist.world_size()}


RUNTIME_KEYS = ("work_dir", "launcher", "resume", "load_from")


def recipe(cfg: Any, placeholders: dict[str, str]) -> dict[str, Any]:
    """The resolved config as JSON, without run-only keys, with machine paths as placeholders.

    ``placeholders`` maps a path to its placeholder (``${DATA}``, ``${CKPT}``, ``${OUT}``): a string
    value equal to the path, or starting with it followed by ``/``, gets the placeholder in its place
    (the given and the resolved spelling of each path; longest first).
    """
    d = json.loads(json.dumps(copy.deepcopy(cfg.to_dict()), default=str))
    for key in RUNTIME_KEYS:
        d.pop(key, None)
    for loader in ("train_dataloader", "test_dataloader"):
        if isinstance(d.get(loader), dict):
            d[loader].pop("num_workers", None)
            d[loader].pop("persistent_workers", None)
    spellings: dict[str, str] = {}
    for path, tag in placeholders.items():
        spellings[str(path)] = tag
        if not str(path).startswith("random:"):
            spellings[str(Path(path).resolve())] = tag
    ordered = sorted(spellings.items(), key=lambda kv: len(kv[0]), reverse=True)

    def swap(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: swap(v) for k, v in value.items()}
        if isinstance(value, list):
            return [swap(v) for v in value]
        if isinstance(value, str):
            for path, tag in ordered:
                if value == path or value.startswith(path.rstrip("/") + "/"):
                    return tag + value[len(path.rstrip("/")):]
        return value

    return swap(d)


def last_checkpoint(work_dir: Path) -> Path | None:
    """The checkpoint mmengine's ``last_checkpoint`` file names in ``work_dir`` (None when absent)."""
    marker = work_dir / "last_checkpoint"
    if not marker.is_file():
        return None
    path = Path(marker.read_text().strip())
    return path if path.is_file() else None


def _check_device(device: torch.device) -> None:
    """mmengine places the model on CUDA whenever it exists; a CPU run must hide the GPUs."""
    if device.type == "cpu" and torch.cuda.is_available():
        raise BadInput(None, "--device cpu with a visible GPU: mmengine always trains on the GPU; "
                             "hide it with CUDA_VISIBLE_DEVICES= to run on the CPU")


def run(cfg: Any, device: torch.device, train: bool, finetuned: Path | None) -> tuple[dict[str, float], int]:
    """Build mmengine's Runner from ``cfg``; train (unless ``train`` is false), then test.

    ``finetuned``: an mmengine checkpoint loaded strictly before testing (test-only runs).
    Returns the test metrics (names as the evaluator gives them) and the training iterations done.
    """
    from mmengine.runner import Runner

    _check_device(device)
    with restricted_local_loader():
        runner = Runner.from_cfg(cfg)
        if finetuned is not None:
            load_finetuned(runner, finetuned)
        if train:
            runner.train()
        metrics = runner.test()
    return {str(k): float(v) for k, v in (metrics or {}).items()}, int(runner.iter) if train else 0


def load_finetuned(runner: Any, path: Path) -> None:
    """Load a whole-model mmengine checkpoint strictly; a key mismatch is a one-line BadInput."""
    if not path.is_file():
        raise BadInput(path, "no such file (expected an mmengine checkpoint of the fine-tuned model)")
    try:
        runner.load_checkpoint(str(path), map_location="cpu", strict=True)
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        detail = "; ".join(lines[:3])[:400]
        raise BadInput(path, f"does not match the model of this config ({detail})") from None
    except Exception as exc:  # unpickling failures: not an mmengine checkpoint or a disallowed type
        raise BadInput(path, f"cannot load ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None


def sha256_or_none(path: str | os.PathLike[str] | None) -> str | None:
    from attmask.eval.checkpoint import sha256_file

    return None if path is None else sha256_file(path)
