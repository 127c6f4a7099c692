"""Training checkpoints in the iBOT / AttMask layout, written atomically, read safely.

A checkpoint is a dict of tensors, containers and plain values only (``torch.load(weights_only=True)``
reads it), with the reference's top-level entries:

- ``student``: the student's state dict with the DDP prefixes ``module.backbone.*`` / ``module.head.*``
  (the student holds ``masked_embed``); ``teacher``: ``backbone.*`` / ``head.*``;
- ``optimizer``, ``epoch`` (completed epochs), ``args`` (a plain dict: the full configuration plus
  ``embed_dim`` / ``depth`` / ``num_heads`` / ``patch_size`` / ``img_size`` so no loader guesses heads),
  ``ibot_loss`` or ``dino_loss`` (the centers), ``fp16_scaler`` when a grad scaler is used;
- ``attmask``: this project's marker, ``{"version", "step", "epoch", "iters_per_epoch", "world_size",
  "complete"}``; ``step`` is the global iteration count, so a run stopped mid-epoch resumes at
  the right batch.

``RUN_DIR/checkpoint.pth`` is the latest; ``RUN_DIR/checkpoint{epoch:04d}.pth`` is kept every
``saveckp_freq`` epochs (the reference's names). The backbone export is ``{"state_dict": ..., "args": ...}``
with prefixes stripped and without the mask token.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from attmask.eval.atomic import atomic_save
from attmask.eval.checkpoint import read_checkpoint_file, strip_to_backbone
from attmask.eval.errors import BadInput

FORMAT_VERSION = 1
LATEST = "checkpoint.pth"


def epoch_checkpoint_name(epoch: int) -> str:
    return f"checkpoint{epoch:04d}.pth"


def prefixed(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {f"{prefix}{k}": v for k, v in state.items()}


def unprefixed(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    if not all(k.startswith(prefix) for k in state):
        raise ValueError(f"not every key carries the prefix {prefix!r}")
    return {k[len(prefix):]: v for k, v in state.items()}


def cpu_state(state: Any) -> Any:
    """Detached CPU copies of every tensor in a nested state (so saving never aliases live tensors)."""
    if isinstance(state, torch.Tensor):
        return state.detach().to("cpu", copy=True)
    if isinstance(state, dict):
        return {k: cpu_state(v) for k, v in state.items()}
    if isinstance(state, list):
        return [cpu_state(v) for v in state]
    if isinstance(state, tuple):
        return tuple(cpu_state(v) for v in state)
    return state


def save_checkpoint(path: str | os.PathLike[str], payload: dict[str, Any]) -> Path:
    """Write ``payload`` atomically (a reader never sees a half-written file)."""
    path = Path(path)
    atomic_save(path, lambda fh: torch.save(payload, fh))
    return path


def read_training_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load one of our checkpoints for resuming; anything else is a one-line BadInput."""
    obj = read_checkpoint_file(path)
    if not isinstance(obj, dict) or "attmask" not in obj:
        raise BadInput(path, "not an attmask-pretrain checkpoint (no 'attmask' entry); cannot resume from it")
    version = obj["attmask"].get("version")
    if version != FORMAT_VERSION:
        raise BadInput(path, f"checkpoint format version {version} is not supported (expected {FORMAT_VERSION})")
    for key in ("student", "teacher", "optimizer", "epoch", "args"):
        if key not in obj:
            raise BadInput(path, f"checkpoint has no {key!r} entry; cannot resume from it")
    return obj


def export_backbone(ckpt: str | os.PathLike[str], out: str | os.PathLike[str], checkpoint_key: str = "teacher") -> Path:
    """Write ``{"state_dict": backbone, "args": args}`` (prefixes stripped, no head, no mask token)."""
    obj = read_checkpoint_file(ckpt)
    if not isinstance(obj, dict) or checkpoint_key not in obj:
        keys = ", ".join(k for k in obj if isinstance(obj.get(k), dict)) if isinstance(obj, dict) else "none"
        raise BadInput(ckpt, f"no {checkpoint_key!r} network in this checkpoint (entries: {keys})")
    state, _stripped, _ignored = strip_to_backbone(dict(obj[checkpoint_key]))
    if "patch_embed.proj.weight" not in state:
        raise BadInput(ckpt, f"entry {checkpoint_key!r} holds no ViT backbone")
    args = obj.get("args")
    payload: dict[str, Any] = {"state_dict": state}
    if isinstance(args, dict):
        payload["args"] = args
    return save_checkpoint(out, payload)
